"""Distillation losses: one code for every family and head.

A teacher and a student see the same batch; the loss mixes three terms (DistilBERT's recipe):

    loss = alpha_ce  * T^2 * KL(softmax(teacher / T) || softmax(student / T))   soft targets
         + alpha_hard * the student's own loss on the batch's labels             hard labels
         + alpha_cos * mean(1 - cos(student hidden, teacher hidden))             last hidden states

The logits compared are whatever the shared head produces, at the positions the head names
(`Head.soft_positions`, `Head.hidden_positions`): masked-LM logits for encoders (at the masked
positions), next-token logits for decoders (every real position) and decoder logits for
encoder-decoders (the target positions), class logits for sequence classification (one row per
sequence) and tag logits for token classification (every real token). Multiplying by T^2 keeps the soft-target gradients on the
scale of the hard-label ones when T changes (Hinton et al., 2015).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..labels import IGNORE_INDEX


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
                     positions: torch.Tensor | None = None) -> torch.Tensor:
    """T^2 * KL(p_teacher || p_student) with p = softmax(logits / T), summed over the last dimension
    and averaged over the rows selected by `positions` (a bool mask over the leading dimensions;
    None: every row). Logits: (..., C); returns a scalar (0 when no row is selected)."""
    student, teacher = _rows(student_logits, positions), _rows(teacher_logits, positions)  # (N, C)
    if student.shape[0] == 0:
        return student_logits.sum() * 0.0
    log_student = F.log_softmax(student.float() / temperature, dim=-1)  # (N, C)
    log_teacher = F.log_softmax(teacher.float() / temperature, dim=-1)  # (N, C)
    kl = (log_teacher.exp() * (log_teacher - log_student)).sum(-1)  # (N,)
    return kl.mean() * temperature ** 2


def cosine_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
                positions: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of 1 - cos(student, teacher) over the vectors selected by `positions` (bool (B, T); None:
    all). Hidden states: (B, T, d). Returns a scalar (0 when nothing is selected)."""
    student, teacher = _rows(student_hidden, positions), _rows(teacher_hidden, positions)  # (N, d)
    if student.shape[0] == 0:
        return student_hidden.sum() * 0.0
    return (1.0 - F.cosine_similarity(student.float(), teacher.float(), dim=-1)).mean()


def hard_label_loss(model: nn.Module, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The model's own loss (cross-entropy; causal LMs shifted) on `labels`; 0 when every label is -100
    (a batch of unlabelled text teaches through the soft targets only)."""
    if not bool((labels != IGNORE_INDEX).any()):
        return logits.sum() * 0.0
    return model.loss(logits, labels)


def _rows(values: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
    """(..., C) -> (N, C): the rows where `positions` is True, or all rows."""
    if positions is None:
        return values.reshape(-1, values.shape[-1])
    return values[positions.bool()]


@dataclass
class LossWeights:
    """The mix of the three terms; defaults are DistilBERT's (alpha_ce 5, alpha_mlm 2, alpha_cos 1, T 2)."""

    alpha_ce: float = 5.0
    alpha_hard: float = 2.0
    alpha_cos: float = 1.0
    temperature: float = 2.0

    def validate(self) -> "LossWeights":
        for name in ("alpha_ce", "alpha_hard", "alpha_cos"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.alpha_ce + self.alpha_hard + self.alpha_cos <= 0:
            raise ConfigError("all loss weights are 0, so nothing would be learned; give --alpha-ce, --alpha-mlm "
                              "or --alpha-cos a positive value")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be positive, got {self.temperature}")
        return self


class DistillationLoss:
    """The Trainer's loss hook: `loss_fn(student, batch)` runs the frozen teacher (no gradients) and
    the student on the batch and returns (loss, {"soft": ..., "hard": ..., "cos": ...})."""

    def __init__(self, teacher: nn.Module, weights: LossWeights):
        self.teacher, self.weights = teacher.eval(), weights.validate()
        for parameter in teacher.parameters():
            parameter.requires_grad_(False)

    def __call__(self, student: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        w = self.weights
        head = self.teacher.head  # where its logits and hidden states are compared
        with torch.no_grad():
            teacher_out = self.teacher(**batch)
        student_out = student(**batch)
        labels = batch.get("labels")
        zero = student_out.logits.sum() * 0.0
        soft = soft_target_loss(student_out.logits, teacher_out.logits, w.temperature, head.soft_positions(batch)) \
            if w.alpha_ce else zero
        hard = hard_label_loss(_unwrapped(student), student_out.logits, labels) \
            if (w.alpha_hard and labels is not None) else zero
        cos = cosine_loss(student_out.hidden_states, teacher_out.hidden_states, head.hidden_positions(batch)) \
            if w.alpha_cos else zero
        loss = w.alpha_ce * soft + w.alpha_hard * hard + w.alpha_cos * cos
        return loss, {"soft": float(soft.detach()), "hard": float(hard.detach()), "cos": float(cos.detach())}


def _unwrapped(model: nn.Module) -> nn.Module:
    """The lmforge model inside a DDP / compiled wrapper."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model
