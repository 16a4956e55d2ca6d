"""Normalisation layers: LayerNorm (torch's) and RMSNorm as T5 defines it."""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    """Scale by the root mean square, no mean subtraction and no bias (T5's "LayerNorm").

    The mean square is taken in float32 whatever the input dtype, as T5 does.
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.float().pow(2).mean(-1, keepdim=True)  # (..., 1)
        x = x * torch.rsqrt(variance + self.eps)
        return self.weight * x.to(self.weight.dtype)


def make_norm(kind: str, dim: int, eps: float) -> nn.Module:
    """`kind` is "layer" (LayerNorm with bias) or "rms" (RMSNorm)."""
    return nn.LayerNorm(dim, eps=eps) if kind == "layer" else RMSNorm(dim, eps=eps)
