"""Multi-head attention, self or cross, through one scaled_dot_product_attention call."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cache import KVCache


class Attention(nn.Module):
    """q, fused kv and output projections around `F.scaled_dot_product_attention`.

    Self-attention reads keys/values from `x` (and appends them to the cache when one is given);
    cross-attention reads them from `context`, computing them once per encoded input when cached.
    """

    def __init__(self, d_model: int, n_heads: int, d_head: int, bias: bool, dropout: float,
                 scale: bool, cross: bool = False):
        super().__init__()
        self.n_heads, self.d_head, self.cross = n_heads, d_head, cross
        inner = n_heads * d_head
        self.q = nn.Linear(d_model, inner, bias=bias)
        self.kv = nn.Linear(d_model, 2 * inner, bias=bias)
        self.o = nn.Linear(inner, d_model, bias=bias)
        self.dropout = dropout
        self.scale = None if scale else 1.0  # None: SDPA's default 1/sqrt(d_head)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, H*D) -> (B, H, T, D)
        return x.unflatten(-1, (self.n_heads, self.d_head)).transpose(1, 2)

    def _keys_values(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.kv(source).chunk(2, dim=-1)  # 2 x (B, S, H*D)
        return self._heads(k), self._heads(v)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, is_causal: bool = False,
                context: torch.Tensor | None = None, cache: KVCache | None = None,
                layer: int = 0) -> torch.Tensor:
        """x: (B, T, d_model); context: (B, S, d_model) for cross-attention; mask: bool or additive
        float, broadcastable to (B, H, T, S). Returns (B, T, d_model)."""
        q = self._heads(self.q(x))  # (B, H, T, D)
        if self.cross:
            if cache is not None and cache.cross[layer] is not None:
                k, v = cache.cross[layer]
            else:
                k, v = self._keys_values(context)  # (B, H, S, D)
                if cache is not None:
                    cache.cross[layer] = (k, v)
        else:
            k, v = self._keys_values(x)  # (B, H, T, D)
            if cache is not None:
                k, v = cache.append(layer, k, v)  # (B, H, past+T, D)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal, scale=self.scale,
        )  # (B, H, T, D)
        return self.o(out.transpose(1, 2).flatten(2))  # (B, T, d_model)
