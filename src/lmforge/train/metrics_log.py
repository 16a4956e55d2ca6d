"""metrics.jsonl: one JSON record per line, appended by rank 0; resuming cuts it back to the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..checkpoint.atomic import write_text


class MetricsLog:
    """Append-only JSON lines. A line cut short by a crash is ignored when reading."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled

    def append(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()

    def read(self) -> list[dict[str, Any]]:
        """All complete records."""
        if not self.path.is_file():
            return []
        records = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue  # a line half-written when the process was killed
        return records

    def truncate_after(self, step: int) -> None:
        """Keep only records of steps <= `step` (what the checkpoint being resumed had seen)."""
        if not self.enabled or not self.path.is_file():
            return
        kept = [r for r in self.read() if r.get("step", 0) <= step]
        write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
