"""Counters, gauges and latency summaries, written in Prometheus' text format for GET /metrics."""

from __future__ import annotations

import threading

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """Thread-safe: the engine threads and the event loop both write here."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counters: dict[tuple[str, str], float] = {}  # (name, labels) -> value
        self.gauges: dict[tuple[str, str], float] = {}
        self.histograms: dict[str, list[float]] = {}  # name -> bucket counts + [sum, count]

    def count(self, name: str, amount: float = 1, labels: str = "") -> None:
        with self.lock:
            self.counters[(name, labels)] = self.counters.get((name, labels), 0) + amount

    def observe(self, name: str, seconds: float) -> None:
        with self.lock:
            values = self.histograms.setdefault(name, [0.0] * (len(BUCKETS) + 2))
            for index, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    values[index] += 1
            values[-2] += seconds
            values[-1] += 1

    def set_engine(self, model: str, queue_depth: int, running: int, cache_bytes: int) -> None:
        labels = f'model="{model}"'
        with self.lock:
            self.gauges[("queue_depth", labels)] = queue_depth
            self.gauges[("running_requests", labels)] = running
            self.gauges[("kv_cache_bytes", labels)] = cache_bytes

    def render(self) -> str:
        """The Prometheus exposition text (every name prefixed `lmforge_`)."""
        lines = []
        with self.lock:
            for kind, table in (("gauge", self.gauges), ("counter", self.counters)):
                for name in sorted({n for n, _ in table}):
                    suffix = "_total" if kind == "counter" else ""
                    lines.append(f"# TYPE lmforge_{name}{suffix} {kind}")
                    for (n, labels), value in sorted(table.items()):
                        if n == name:
                            lines.append(f"lmforge_{name}{suffix}{{{labels}}} {value:g}" if labels
                                         else f"lmforge_{name}{suffix} {value:g}")
            for name, values in sorted(self.histograms.items()):
                lines.append(f"# TYPE lmforge_{name} histogram")
                for bound, count in zip(BUCKETS, values):
                    lines.append(f'lmforge_{name}_bucket{{le="{bound}"}} {count:g}')
                lines.append(f'lmforge_{name}_bucket{{le="+Inf"}} {values[-1]:g}')
                lines.append(f"lmforge_{name}_sum {values[-2]:.6f}")
                lines.append(f"lmforge_{name}_count {values[-1]:g}")
        return "\n".join(lines) + "\n"
