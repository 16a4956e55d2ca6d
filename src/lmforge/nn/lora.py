"""Low-rank adaptation (LoRA): a frozen linear layer plus scaled low-rank updates on blocks of its rows.

    y = x W^T + b + sum over adapted row blocks j:  scaling_j * (dropout(x) A_j^T) B_j^T   (in rows j)

A layer that computes several projections at once (attention's fused `kv`: keys in the first half of
the rows, values in the second) has one block per projection, so keys and values get separate adapter
pairs, as in models that keep them as two layers. A plain layer has one block named after itself.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .attention import Attention
from .decoding_linear import DecodingLinear

# Linear layers that fuse several projections: (owner class, attribute) -> block names, in row order.
FUSED_ROWS = {(Attention, "kv"): ("k", "v")}


def row_blocks(owner: nn.Module, attribute: str, linear: nn.Linear) -> dict[str, tuple[int, int]]:
    """The named row ranges [start, stop) of `owner.<attribute>`: equal parts for a fused layer, else one
    block named `attribute` covering every row."""
    names = next((names for (kind, attr), names in FUSED_ROWS.items()
                  if isinstance(owner, kind) and attr == attribute), (attribute,))
    size = linear.out_features // len(names)
    return {name: (i * size, (i + 1) * size) for i, name in enumerate(names)}


class LoRAPair(nn.Module):
    """One low-rank update: A (r, in) and B (rows, r), applied as scaling * B @ A."""

    def __init__(self, in_features: int, rows: int, r: int, scaling: float):
        super().__init__()
        self.A = nn.Parameter(torch.empty(r, in_features))
        self.B = nn.Parameter(torch.zeros(rows, r))  # zero: the adapted model starts equal to the base
        self.scaling = float(scaling)
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))

    @property
    def r(self) -> int:
        return self.A.shape[0]

    def delta(self) -> torch.Tensor:  # (rows, in)
        return (self.B @ self.A) * self.scaling


class LoRALinear(nn.Linear):
    """An `nn.Linear` whose weight and bias (the base's own tensors, frozen by the caller) keep their names,
    with adapter pairs under `lora.<block>` for some of its row blocks."""

    def __init__(self, base: nn.Linear, blocks: dict[str, tuple[int, int]], dropout: float = 0.0):
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        self.blocks = dict(blocks)
        self.lora = nn.ModuleDict()
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    def add(self, block: str, r: int, scaling: float) -> LoRAPair:
        """Attach a new pair of rank `r` to `block` (A random, B zero)."""
        start, stop = self.blocks[block]
        pair = LoRAPair(self.in_features, stop - start, r, scaling).to(self.weight.device)
        self.lora[block] = pair
        return pair

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        out = F.linear(x, self.weight, self.bias)
        if self.merged or not len(self.lora):
            return out
        h = self.lora_dropout(x) if self.training else x
        parts = []
        for name, (start, stop) in self.blocks.items():
            pair = self.lora[name] if name in self.lora else None
            if pair is None:
                parts.append(out.new_zeros(*out.shape[:-1], stop - start))
            else:
                a = pair.A.to(h.dtype)
                parts.append(F.linear(F.linear(h, a), pair.B.to(h.dtype)) * pair.scaling)  # (..., rows)
        return out + (parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)).to(out.dtype)

    @torch.no_grad()
    def merge(self) -> None:
        """Add every update into the weight (inference at the base's speed); `unmerge` takes them out."""
        if not self.merged:
            self._add_deltas(self.weight, +1.0)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self._add_deltas(self.weight, -1.0)
            self.merged = False

    def _add_deltas(self, weight: torch.Tensor, sign: float) -> None:
        for name, pair in self.lora.items():
            start, stop = self.blocks[name]
            weight[start:stop] += sign * pair.delta().to(weight.dtype)

    def plain(self) -> nn.Linear:
        """A plain `nn.Linear` (`DecodingLinear`) holding the merged weight (this layer stays as it was)."""
        linear = DecodingLinear(self.in_features, self.out_features, bias=self.bias is not None,
                           device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(self.weight)
            if not self.merged:
                self._add_deltas(linear.weight, +1.0)
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear

    def extra_repr(self) -> str:
        pairs = ", ".join(f"{n}: r={p.r} scaling={p.scaling:g}" for n, p in self.lora.items())
        return f"in_features={self.in_features}, out_features={self.out_features}, lora=({pairs})"
