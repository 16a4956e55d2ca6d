"""Hooks into the training loop. `BestCheckpoint` keeps the checkpoint with the best value of any metric."""

from __future__ import annotations

import math
from typing import Any


class Callback:
    """Override any hook. State that must survive a resume goes through state_dict/load_state_dict."""

    def on_log(self, trainer, record: dict[str, Any]) -> None:
        """After a training record (step, loss, lr, ...) is written."""

    def on_evaluate(self, trainer, metrics: dict[str, float]) -> None:
        """After an evaluation; `metrics` holds `step` and the evaluation hook's values."""

    def on_train_end(self, trainer, result) -> None:
        """After the final checkpoint and summary are written (`result`: the TrainResult)."""

    def final_metrics(self, trainer) -> dict[str, float]:
        """Metrics this callback adds to the result, summary.json and the final model card."""
        return {}

    def card_facts(self, trainer) -> dict[str, Any]:
        """`RunCard` fields this callback sets on the final model card (e.g. a description)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class BestCheckpoint(Callback):
    """Save `checkpoints/best` whenever `metric` (any key the evaluation hook returns, e.g.
    eval_loss, accuracy, f1) improves: lower is better for mode "min", higher for "max"."""

    def __init__(self, metric: str = "eval_loss", mode: str = "min"):
        self.metric, self.mode = metric, mode
        self.best: float | None = None
        self.best_step: int | None = None
        self.best_metrics: dict[str, float] = {}  # the evaluation that set `best` (without `step`)

    def improves(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        return value < self.best if self.mode == "min" else value > self.best

    def on_evaluate(self, trainer, metrics: dict[str, float]) -> None:
        value = metrics.get(self.metric)
        if value is not None and self.improves(float(value)):
            self.best, self.best_step = float(value), int(metrics["step"])
            self.best_metrics = {k: v for k, v in metrics.items() if k != "step"}
            trainer.save_checkpoint("best", metrics=self.best_metrics)

    def state_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "best": self.best, "best_step": self.best_step,
                "best_metrics": self.best_metrics}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("metric") == self.metric:
            self.best, self.best_step = state.get("best"), state.get("best_step")
            self.best_metrics = state.get("best_metrics", {})
