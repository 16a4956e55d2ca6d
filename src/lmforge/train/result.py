"""What a training run produced (`TrainResult`) and the one builder of training model cards."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator


@dataclass
class TrainResult:
    """The Trainer's result. `summary()` is summary.json; the result also reads like that mapping
    (`result["steps"]`), so code written against the summary keeps working."""

    steps: int
    tokens: int
    wall_s: float
    tokens_per_s: float
    flops_per_s: float
    parameters: int
    world_size: int
    energy_kwh: float
    co2_kg: float
    energy_source: str
    country: str
    skipped_nonfinite: int
    metrics: dict[str, float] = field(default_factory=dict)  # the last evaluation (and callbacks' final metrics)
    stopped_early: str | None = None
    energy_note: str | None = None
    hardware: str = ""

    def summary(self) -> dict[str, Any]:
        """The summary.json record."""
        record = {"steps": self.steps, "tokens": self.tokens, "wall_s": round(self.wall_s, 3),
                  "tokens_per_s": self.tokens_per_s, "flops_per_s": self.flops_per_s, "parameters": self.parameters,
                  "world_size": self.world_size, "energy_kwh": self.energy_kwh, "co2_kg": self.co2_kg,
                  "energy_source": self.energy_source, "country": self.country,
                  "skipped_nonfinite": self.skipped_nonfinite, **self.metrics}
        if self.stopped_early is not None:
            record["stopped_early"] = self.stopped_early
        if self.energy_note:
            record["energy_note"] = self.energy_note
        return record

    # ---- read like the summary mapping ------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        return self.summary()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.summary().get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.summary()

    def __iter__(self) -> Iterator[str]:
        return iter(self.summary())

    def keys(self):
        return self.summary().keys()

    def items(self):
        return self.summary().items()


@dataclass
class RunCard:
    """What a model card says about how a model was trained, besides the numbers of its `TrainResult`."""

    training_type: str = "pre-training"  # pre-training | fine-tuning | distillation
    objective: str | None = None
    data: str | None = None
    description: str | None = None

    @classmethod
    def of(cls, card: "RunCard | dict | None") -> "RunCard":
        if isinstance(card, RunCard):
            return card
        return cls(**(card or {}))

    def facts(self) -> dict[str, Any]:
        return {k: v for k, v in (("objective", self.objective), ("data", self.data),
                                  ("description", self.description)) if v is not None}


def checkpoint_card(run: RunCard, steps: int, tokens: int, metrics: dict | None) -> dict[str, Any]:
    """The card of an intermediate training checkpoint (checkpoints/last, checkpoints/best)."""
    return {**run.facts(), "steps": steps, "tokens": tokens, "metrics": metrics or None}


def training_card(run: RunCard, result: TrainResult, metrics: dict | None = None) -> dict[str, Any]:
    """The card of a trained model: how it was trained, its metrics (default: the result's) and its cost."""
    return {**run.facts(), "steps": result.steps, "tokens": f"{result.tokens:,}",
            "compute": {"wall time": f"{result.wall_s:.1f} s", "tokens/s": f"{result.tokens_per_s:,.0f}",
                        "achieved FLOP/s (6ND)": f"{result.flops_per_s:.3g}",
                        "energy": f"{result.energy_kwh:.6f} kWh ({result.energy_source})",
                        "CO2": f"{result.co2_kg:.6f} kg CO2eq ({result.country})"},
            "metrics": (result.metrics if metrics is None else metrics) or None,
            "co2_eq_emissions": {"emissions": result.co2_kg * 1000.0, "source": result.energy_source,
                                 "training_type": run.training_type, "geographical_location": result.country,
                                 "hardware_used": result.hardware}}
