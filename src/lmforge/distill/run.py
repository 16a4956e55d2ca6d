"""`distill()`: train a student against a frozen teacher with the Trainer, then measure and record the ratios."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from ..checkpoint.atomic import write_text
from ..train import Callback, Trainer, TrainSettings
from ..train.result import RunCard, TrainResult
from .losses import DistillationLoss, LossWeights
from .report import card_metrics, distillation_report, format_report, quality_eval_fn
from .sources import Sources


class ReportAtEnd(Callback):
    """At the final evaluation, measure the three ratios on the whole validation set; they join the
    result's metrics and the final card's description through the `final_metrics`/`card_facts` hooks."""

    def __init__(self, teacher: nn.Module, valid, batch_size: int, speed_batches: int, card_line):
        self.teacher, self.valid, self.batch_size, self.speed_batches = teacher, valid, batch_size, speed_batches
        self.card_line = card_line
        self.report: dict | None = None

    def on_evaluate(self, trainer, metrics: dict) -> None:
        if trainer.step < trainer.settings.max_steps and trainer.stop_reason is None:
            return
        self.report = distillation_report(self.teacher, trainer.model, self.valid(self.batch_size),
                                          self.speed_batches)

    def final_metrics(self, trainer) -> dict:
        return card_metrics(self.report) if self.report is not None else {}

    def card_facts(self, trainer) -> dict:
        return {"description": self.card_line(self.report)} if self.report is not None else {}


def distill(teacher: nn.Module, student: nn.Module, sources: Sources, settings: TrainSettings, weights: LossWeights,
            out: str | Path, *, objective: str, init: dict, speed_batches: int = 20, dist=None, energy=None,
            progress: bool = True) -> tuple[TrainResult, dict]:
    """Train `student` to imitate `teacher` (frozen) on `sources`; the run folder `out` gets metrics.jsonl,
    checkpoints/, summary.json, distill.json (run + report) and final/ (the student, its card holding
    the ratios). Returns (training result, report)."""

    out = Path(out)
    device = dist.device if dist is not None else next(student.parameters()).device
    teacher = teacher.to(device)
    batch = settings.micro_batch_size(dist.world_size if dist is not None else 1)

    def card_line(report: dict) -> str:
        return (f"A {student.config.n_layers}-layer student distilled by `lmforge distill` ({objective}) from a "
                f"{teacher.config.n_layers}-layer {teacher.task} teacher (layers {init['layers']}): "
                f"{report['parameter_ratio']:.1%} of its parameters, {report['speedup']:.2f}x its throughput, "
                f"{report['quality_ratio']:.1%} of its {report['quality_metric']} on the validation data "
                f"(measured on {report['device']}).")

    reporter = ReportAtEnd(teacher, sources.valid, batch, speed_batches, card_line)
    card = RunCard(training_type="distillation",
                   objective=f"distillation ({objective}; alpha_ce {weights.alpha_ce}, alpha_hard {weights.alpha_hard}, "
                             f"alpha_cos {weights.alpha_cos}, T {weights.temperature})",
                   data=sources.description, description=f"A student distilled by `lmforge distill` ({objective}).")
    trainer = Trainer(student, settings, sources.train, lambda: sources.valid(batch),
                      loss_fn=DistillationLoss(teacher, weights), eval_fn=quality_eval_fn(), out_dir=out,
                      callbacks=[reporter], card=card, dist=dist, energy=energy, progress=progress)
    summary = trainer.fit()
    if trainer.dist.is_main:
        record = {"objective": objective, "init": init, "weights": vars(weights), "settings": settings.to_dict(),
                  "report": reporter.report, "summary": summary.summary()}
        write_text(out / "distill.json", json.dumps(record, indent=2, default=str) + "\n")
    return summary, reporter.report


__all__ = ["distill", "format_report", "ReportAtEnd"]
