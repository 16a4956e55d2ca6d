"""AdamW without weight decay on biases, norms and embeddings, and the learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..nn.positions import LearnedPositions, RelativePositionBias
from .settings import TrainSettings

EMBEDDING_TYPES = (nn.Embedding, LearnedPositions, RelativePositionBias)


def no_decay_names(model: nn.Module) -> set[str]:
    """Names of parameters that get no weight decay: every bias and norm weight (1-d tensors)
    and every token, token-type and position embedding table."""
    names = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if param.dim() < 2 or isinstance(module, EMBEDDING_TYPES):
                names.add(f"{module_name}.{param_name}" if module_name else param_name)
    return names


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups, decay and no-decay, each parameter once (tied weights are shared tensors)."""
    exempt = no_decay_names(model)
    decay, plain = [], []
    for name, param in model.named_parameters():  # named_parameters yields a shared tensor once
        if param.requires_grad:
            (plain if name in exempt else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


FUSED_DEVICES = ("cpu", "cuda")


def build_optimizer(model: nn.Module, settings: TrainSettings) -> torch.optim.AdamW:
    """AdamW over `parameter_groups`: the fused kernel (one pass over each tensor; on a CPU about 7x
    faster than the multi-tensor foreach kernels) where every parameter is a plain tensor on a device
    that has it, else foreach. Both are bitwise deterministic."""
    groups = parameter_groups(model, settings.weight_decay)
    params = [p for group in groups for p in group["params"]]
    fused = all(type(p.data) is torch.Tensor and p.device.type in FUSED_DEVICES for p in params)
    return torch.optim.AdamW(groups, lr=settings.lr, betas=(settings.beta1, settings.beta2), eps=settings.adam_eps,
                             **({"fused": True} if fused else {"foreach": True}))


def learning_rate(step: int, settings: TrainSettings) -> float:
    """The learning rate for optimizer step `step` (0-based): linear warmup from lr/warmup to lr over
    `warmup_steps`, then cosine or linear decay to lr*min_lr_ratio at `max_steps` (or constant).
    A pure function of the step, so resuming needs nothing but the step number."""
    peak, floor = settings.lr, settings.lr * settings.min_lr_ratio
    if step < settings.warmup_steps:
        return peak * (step + 1) / settings.warmup_steps
    if settings.schedule == "constant":
        return peak
    span = max(1, settings.max_steps - settings.warmup_steps)
    progress = min(1.0, (step - settings.warmup_steps) / span)
    if settings.schedule == "linear":
        return peak - (peak - floor) * progress
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
