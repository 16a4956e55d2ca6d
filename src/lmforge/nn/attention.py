"""Multi-head attention, self or cross, through one scaled_dot_product_attention call.

Grouped-query attention: `n_kv_heads` key/value heads each serve n_heads / n_kv_heads query heads
(1 = multi-query); the cache stores key/value heads only. Queries and keys may be normalised per head
(Qwen3) and then rotated by their positions (rotary) before keys are cached.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cache import KVCache
from .decoding_linear import DecodingLinear
from .attention_dropout import attention_with_dropout
from .dropout import cheap_mask
from .norms import RMSNorm


class Attention(nn.Module):
    """q, fused kv and output projections (`nn.Linear`s, so adapters can wrap them, with a fast path for
    batched decoding: `DecodingLinear`) around `F.scaled_dot_product_attention`.

    Self-attention reads keys/values from `x` (and appends them to the cache when one is given);
    cross-attention reads them from `context`, computing them once per encoded input when cached.
    Keys/values have `n_kv_heads` heads (default `n_heads`); the cache is sized by them.
    `rotary`, when set, is a module `(q, k, position_ids) -> (q, k)` that rotates queries and new keys
    by their positions before keys are cached; models whose positions are added to the embeddings
    (learned, sinusoidal) or to the scores (T5's relative bias) leave it None.
    `qk_norm_eps`: an RMSNorm over each query and key head (with this epsilon) before the rotation.
    `out_bias` (default `bias`): whether the output projection has a bias (Qwen2: q/k/v do, o does not).
    """

    def __init__(self, d_model: int, n_heads: int, d_head: int, bias: bool, dropout: float,
                 scale: bool, cross: bool = False, n_kv_heads: int | None = None,
                 rotary: nn.Module | None = None, out_bias: bool | None = None, qk_norm_eps: float | None = None):
        super().__init__()
        self.n_heads, self.d_head, self.cross = n_heads, d_head, cross
        self.n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        self.q = DecodingLinear(d_model, n_heads * d_head, bias=bias)
        self.kv = DecodingLinear(d_model, 2 * self.n_kv_heads * d_head, bias=bias)
        self.o = DecodingLinear(n_heads * d_head, d_model, bias=bias if out_bias is None else out_bias)
        self.q_norm = RMSNorm(d_head, qk_norm_eps) if qk_norm_eps is not None else None
        self.k_norm = RMSNorm(d_head, qk_norm_eps) if qk_norm_eps is not None else None
        self.qkv: nn.Module | None = None  # q and kv as one layer, for inference formats: `fuse_projections`
        self.rotary = rotary
        self.dropout = dropout
        self.scale = None if scale else 1.0  # None: SDPA's default 1/sqrt(d_head)

    def fuse_projections(self) -> None:
        """Self-attention: replace `q` and `kv` by one layer `qkv` (rows: queries, then keys/values), so that
        decoding makes one product of x per layer instead of two. For inference formats (the int8 ones
        quantize it per output row, exactly as they would the two layers); the model then cannot be trained
        or saved in its usual state-dict names."""
        if self.cross or self.qkv is not None:
            return
        weight = torch.cat([self.q.weight, self.kv.weight]).detach()  # (H*D + 2*Hkv*D, d_model)
        fused = DecodingLinear(weight.shape[1], weight.shape[0], bias=self.q.bias is not None,
                               device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            fused.weight.copy_(weight)
            if fused.bias is not None:
                fused.bias.copy_(torch.cat([self.q.bias, self.kv.bias]))
        self.qkv, self.q, self.kv = fused, None, None

    def _heads(self, x: torch.Tensor, n_heads: int) -> torch.Tensor:  # (B, T, H*D) -> (B, H, T, D)
        return x.unflatten(-1, (n_heads, self.d_head)).transpose(1, 2)

    def _keys_values(self, kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # (B, S, 2*Hkv*D) projected
        k, v = kv.chunk(2, dim=-1)  # 2 x (B, S, Hkv*D)
        k = self._heads(k, self.n_kv_heads)  # (B, Hkv, S, D)
        return (k if self.k_norm is None else self.k_norm(k)), self._heads(v, self.n_kv_heads)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, is_causal: bool = False,
                context: torch.Tensor | None = None, cache: KVCache | None = None,
                layer: int = 0, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, T, d_model); context: (B, S, d_model) for cross-attention; mask: bool or additive
        float, broadcastable to (B, H, T, S); position_ids: (B|1, T) positions of the new tokens (per
        row, so rows of one batch may sit at different positions), read by `rotary`.
        Returns (B, T, d_model)."""
        if self.qkv is not None:
            q, kv = self.qkv(x).split_with_sizes([self.n_heads * self.d_head, 2 * self.n_kv_heads * self.d_head], -1)
        else:
            q, kv = self.q(x), None  # (B, T, H*D)
        q = self._heads(q, self.n_heads)  # (B, H, T, D)
        if self.q_norm is not None:
            q = self.q_norm(q)
        if self.cross:
            if cache is not None and cache.cross[layer] is not None:
                k, v = cache.cross[layer]
            else:
                k, v = self._keys_values(self.kv(context))  # (B, Hkv, S, D)
                if cache is not None:
                    cache.cross[layer] = (k, v)
        else:
            k, v = self._keys_values(self.kv(x) if kv is None else kv)  # (B, Hkv, T, D)
            if self.rotary is not None:
                q, k = self.rotary(q, k, position_ids)
            if cache is not None:
                k, v = cache.append(layer, k, v)  # (B, Hkv, past+T, D)
        dropout = self.dropout if self.training else 0.0
        if cheap_mask(q.device, dropout):  # SDPA's CPU kernels have no dropout (see nn.attention_dropout)
            out = attention_with_dropout(q, k, v, dropout, mask, is_causal, self.scale)  # (B, H, T, D)
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout,
                is_causal=is_causal, scale=self.scale, enable_gqa=self.n_kv_heads != self.n_heads,
            )  # (B, H, T, D)
        return self.o(out.transpose(1, 2).flatten(2))  # (B, T, d_model)
