"""The position-wise feed-forward network, plain or gated."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .decoding_linear import DecodingLinear
from .dropout import Dropout

ACTIVATION_FUNCTIONS = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "tanh": torch.tanh,
}


class MLP(nn.Module):
    """down(act(up(x))), or down(act(gate(x)) * up(x)) when gated (T5 v1.1)."""

    def __init__(self, d_model: int, d_ff: int, activation: str, gated: bool, bias: bool, dropout: float):
        super().__init__()
        self.up = DecodingLinear(d_model, d_ff, bias=bias)
        self.gate = DecodingLinear(d_model, d_ff, bias=bias) if gated else None
        self.down = DecodingLinear(d_ff, d_model, bias=bias)
        self.act = ACTIVATION_FUNCTIONS[activation]
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d_model) -> (B, T, d_model)
        if self.gate is None:
            hidden = self.act(self.up(x))
        else:
            hidden = self.act(self.gate(x)) * self.up(x)  # (B, T, d_ff)
        return self.down(self.dropout(hidden) if self.training else hidden)
