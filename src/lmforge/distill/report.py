"""DistilBERT's three ratios, measured here: parameters, inference throughput and quality, student / teacher.

    report = distillation_report(teacher, student, validation_batches)
    print(format_report(report))

Quality is the head's score on the validation labels: accuracy (sequence classification) and
entity F1 (token classification) as `lmforge evaluate` computes them, masked-token accuracy (masked
LM) and teacher-forced next-token accuracy (causal LM, sequence-to-sequence). Throughput is
sequences per second of `model(**batch)` in eval mode without gradients, over the same batches for
both models, timed in alternation so that other load on the machine hits both alike.
"""

from __future__ import annotations

import math
import time
from typing import Iterable

import torch
from torch import nn

from ..errors import ConfigError
from ..finetune.scoring import batch_metrics
from ..finetune.tasks import task_of_head, task_spec
from ..labels import IGNORE_INDEX
from .losses import _unwrapped as unwrap
from .sources import OBJECTIVES, objective_for



class Quality:
    """Running accuracy and mean loss of one model over labelled batches (labels -100 are skipped)."""

    def __init__(self):
        self.correct, self.count, self.loss_sum = 0, 0, 0.0

    def update(self, model: nn.Module, logits: torch.Tensor, labels: torch.Tensor) -> None:
        logits, labels = model.head.aligned(logits, labels)  # a causal LM's position t predicts token t+1
        counted = labels != IGNORE_INDEX  # (B,) or (B, T)
        count = int(counted.sum())
        if count == 0:
            return
        predictions = logits.argmax(-1)
        self.correct += int((predictions == labels)[counted].sum())
        loss = nn.functional.cross_entropy(logits[counted].float(), labels[counted].long())
        self.loss_sum += float(loss) * count
        self.count += count

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            raise ConfigError("the validation data holds no labelled positions, so quality cannot be measured; "
                              "give labelled validation data")
        return {"accuracy": self.correct / self.count, "loss": self.loss_sum / self.count}


@torch.no_grad()
def score(model: nn.Module, batches: Iterable[dict]) -> dict[str, float]:
    """{"accuracy": the quality score (see the module docstring), "loss": mean loss} of `model` over
    labelled `batches`, in eval mode. Classifiers are scored by lmforge.finetune.scoring.batch_metrics."""
    inner = _unwrapped(model)
    if OBJECTIVES[objective_for(inner.task)].quality is None:  # scored as `lmforge evaluate` scores its task
        spec = task_spec(task_of_head(inner.task, "the model"))
        metrics = batch_metrics(inner, spec.name, batches)
        return {"accuracy": metrics[spec.metric], "loss": metrics["eval_loss"]}
    was_training = inner.training
    inner.eval()
    quality = Quality()
    try:
        for batch in batches:
            quality.update(inner, inner(**batch).logits, batch["labels"])
    finally:
        inner.train(was_training)
    return quality.compute()


def quality_name(model: nn.Module) -> str:
    """The name of the quality score `score` gives for `model`'s head."""
    quality = OBJECTIVES[objective_for(model.task)].quality
    return quality or task_spec(task_of_head(model.task, "the model")).metric_title


def quality_eval_fn():
    """An evaluation hook for the Trainer: eval_accuracy (the quality score) and eval_loss."""

    def evaluate(model: nn.Module, batches: Iterable[dict], trainer=None) -> dict[str, float]:
        return {f"eval_{k}": v for k, v in score(model, batches).items()}

    return evaluate


def _unwrapped(model: nn.Module) -> nn.Module:
    return unwrap(model)


def compare_quality(teacher: nn.Module, student: nn.Module, batches: list[dict]) -> tuple[dict, dict]:
    """Quality score and loss of teacher and student on the same validation batches."""
    return score(teacher, batches), score(student, batches)


@torch.no_grad()
def compare_throughput(teacher: nn.Module, student: nn.Module, batches: list[dict], rounds: int = 3) -> tuple[float, float]:
    """Sequences per second of teacher and student over `batches`: one warm-up pass each, then
    `rounds` timed passes, alternating models; each model's fastest pass counts (the least disturbed
    by other work on the machine)."""
    sequences = sum(int(b["input_ids"].shape[0]) for b in batches)
    best = {"teacher": math.inf, "student": math.inf}
    models = {"teacher": teacher, "student": student}
    modes = {name: model.training for name, model in models.items()}
    for model in models.values():
        model.eval()
    try:
        for round_index in range(rounds + 1):
            for name, model in models.items():
                started = time.perf_counter()
                for batch in batches:
                    model(**batch)
                elapsed = time.perf_counter() - started
                if round_index > 0:  # round 0 warms caches and allocators
                    best[name] = min(best[name], elapsed)
    finally:
        for name, model in models.items():
            model.train(modes[name])
    return sequences / best["teacher"], sequences / best["student"]


def distillation_report(teacher: nn.Module, student: nn.Module, batches: Iterable[dict], speed_batches: int = 20,
                        rounds: int = 3) -> dict:
    """The three ratios (student / teacher) with the numbers behind them. `batches`: the validation set,
    labelled as for training; quality uses all of it, throughput its first `speed_batches` batches."""
    device = next(student.parameters()).device
    batches = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()} for b in batches]
    if not batches:
        raise ConfigError("the validation data yields no batches; give validation data for the report")
    teacher_quality, student_quality = compare_quality(teacher, student, batches)
    timed = [{k: v for k, v in b.items() if k != "labels" or teacher.inputs_from_labels}
             for b in batches[:speed_batches]]  # seq2seq needs labels to build the decoder inputs
    teacher_speed, student_speed = compare_throughput(teacher, student, timed, rounds)
    teacher_params, student_params = teacher.num_parameters(), student.num_parameters()
    return {
        "quality_metric": quality_name(teacher),
        "teacher_parameters": teacher_params, "student_parameters": student_params,
        "parameter_ratio": student_params / teacher_params,
        "teacher_sequences_per_s": teacher_speed, "student_sequences_per_s": student_speed,
        "speedup": student_speed / teacher_speed,
        "teacher_quality": teacher_quality["accuracy"], "student_quality": student_quality["accuracy"],
        "quality_ratio": student_quality["accuracy"] / max(teacher_quality["accuracy"], 1e-12),
        "teacher_loss": teacher_quality["loss"], "student_loss": student_quality["loss"],
        "speed_sequences": sum(int(b["input_ids"].shape[0]) for b in timed),
        "device": str(device), "threads": torch.get_num_threads(),
    }


def format_report(report: dict) -> str:
    """The report as a small table: one row per ratio."""
    r = report
    metric = r["quality_metric"]
    rows = [
        ("", "teacher", "student", "student / teacher"),
        ("parameters", f"{r['teacher_parameters']:,}", f"{r['student_parameters']:,}", f"{r['parameter_ratio']:.1%}"),
        ("sequences / s", f"{r['teacher_sequences_per_s']:,.1f}", f"{r['student_sequences_per_s']:,.1f}",
         f"{r['speedup']:.2f}x"),
        (metric, f"{r['teacher_quality']:.4f}", f"{r['student_quality']:.4f}", f"{r['quality_ratio']:.1%}"),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row))
             for row in rows]
    lines.append(f"(throughput over {r['speed_sequences']} validation sequences on {r['device']}, "
                 f"{r['threads']} threads; fastest of the timed passes)")
    return "\n".join(lines)


def card_metrics(report: dict) -> dict[str, float]:
    """The report's numbers as model-card metrics (rounded for reading)."""
    keys = ("parameter_ratio", "speedup", "quality_ratio", "teacher_quality", "student_quality",
            "teacher_sequences_per_s", "student_sequences_per_s")
    return {key: round(float(report[key]), 4) for key in keys}
