"""Dropout whose mask costs less on the CPU, and causal attention with dropout on the attention weights.

On a CPU, torch draws a dropout mask with `bernoulli_` at about 10 ns an element on one thread, and
`scaled_dot_product_attention` with `dropout_p > 0` leaves its fused kernel for a path that draws such a
mask over every (query, key) pair and makes extra passes for rows that see no key; for a GPT-2-shaped
model with dropout 0.1 that is a sixth of a training step. Here the mask comes from `random_` on 32-bit
integers, each word giving 15 random bits to each of two elements (a drop probability resolved to 1/32768),
and attention with dropout is written out in matrix products (the causal mask added inside the first), one
softmax and that mask. Causal attention goes by blocks of CAUSAL_BLOCK queries, each scoring only the keys
up to its own last query: at T = 256 that is 10/16 of the T x T products and softmax work, the same values.
The masks are as random as `bernoulli_`'s (independent, keep probability 1 - p, kept values scaled by
1/(1 - p)) and come from torch's generator, so a seeded run is reproducible and a resumed one exact;
they are different draws from `F.dropout`'s. Other devices keep torch's own fused kernels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LEVELS = 1 << 15  # the lower 15 bits of each 16-bit half of a random word (random_ fills int32 in [0, 2**31))
CHEAP_MAX_P = 1.0 - 1.0 / LEVELS  # above this, torch's own dropout (the threshold would not fit in 15 bits)
CAUSAL_BLOCK = 64  # queries a block of causal attention (measured: 64 beats 32 and 128 at T=256, D=64)


def cheap_mask(device: torch.device, p: float) -> bool:
    """Whether `keep_mask` draws the dropout mask for this device and probability: on the CPU, 0 < p < 1, in
    eager mode (a compiled graph keeps torch's dropout and SDPA, which the compiler fuses with its own RNG)."""
    return device.type == "cpu" and 0.0 < p <= CHEAP_MAX_P and not torch.compiler.is_compiling()


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, dtype: torch.dtype = torch.bool,
              scaled: bool = False) -> torch.Tensor:
    """A CPU tensor of `shape`, each element 1 (kept) with probability 1 - p and 0 otherwise, independently
    (0 < p <= CHEAP_MAX_P); `dtype` float gives the mask ready to multiply (no conversion in the product),
    `scaled` makes the kept elements 1 / (1 - p) (dropout's whole factor, one product forward and back)."""
    count = int(torch.Size(shape).numel())
    halves = torch.empty((count + 1) // 2, dtype=torch.int32).random_().view(torch.int16)  # two elements a word
    bits = halves.bitwise_and_(LEVELS - 1)  # each uniform on [0, 2**15)
    keep = torch.ge(bits, round(p * LEVELS), out=torch.empty(bits.shape, dtype=dtype))
    if scaled:
        keep.mul_(1.0 / (1.0 - p))
    return keep[:count].view(shape)


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """`F.dropout(x, p, training)`, with the cheaper mask on the CPU."""
    if not training or p == 0.0:
        return x
    if not cheap_mask(x.device, p):
        return F.dropout(x, p, training)
    return x.mul(keep_mask(x.shape, p, x.dtype, scaled=True))  # autograd keeps the mask for backward


def dropout_add(x: torch.Tensor, residual: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """residual + dropout(x, p, training): on the CPU one pass forward (addcmul with the scaled mask) and one
    back (the gradient of x is the incoming gradient times the mask), instead of three and two."""
    if not training or p == 0.0:
        return residual + x
    if not cheap_mask(x.device, p):
        return residual + F.dropout(x, p, training)
    return torch.addcmul(residual, x, keep_mask(x.shape, p, x.dtype, scaled=True))


class Dropout(nn.Dropout):
    """`nn.Dropout` drawing its mask with `keep_mask` on the CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


def attention_with_dropout(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: float,
                           mask: torch.Tensor | None = None, is_causal: bool = False,
                           scale: float | None = None) -> torch.Tensor:
    """softmax(q k^T * scale + mask) with dropout `p` on the weights, times v: what
    `F.scaled_dot_product_attention(q, k, v, mask, p, is_causal, scale, enable_gqa=True)` computes, in
    distribution, written out for the CPU (see the module docstring). q: (B, H, T, D); k, v: (B, Hkv, S, D)
    with H a multiple of Hkv; mask: bool (True: may attend) or additive float, broadcastable to (B, H, T, S).
    Returns (B, H, T, D)."""
    if k.shape[1] != q.shape[1]:  # grouped-query attention: each key/value head serves H / Hkv query heads
        k, v = (t.repeat_interleave(q.shape[1] // k.shape[1], dim=1) for t in (k, v))  # (B, H, S, D)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    (batch, heads, length, width), keys = q.shape, k.shape[-2]
    if is_causal and mask is None:
        return _causal_by_blocks(q, k, v, p, scale)
    if is_causal:  # query t sees keys 0..t (T == S: no cache): -inf above the diagonal, added in the product
        future = torch.full((length, keys), float("-inf"), dtype=q.dtype, device=q.device).triu_(1)  # (T, S)
        scores = torch.baddbmm(future.expand(batch * heads, length, keys), q.reshape(-1, length, width),
                               k.reshape(-1, keys, width).transpose(1, 2), alpha=scale).view(batch, heads, length, keys)
    else:
        scores = torch.matmul(q * scale, k.transpose(-2, -1))  # (B, H, T, S)
    if mask is not None and mask.dtype == torch.bool:
        scores.masked_fill_(~mask, float("-inf"))
    elif mask is not None:
        scores = scores + mask  # may broadcast to more rows than the scores have
    weights = torch.softmax(scores, dim=-1)  # (B, H, T, S)
    if mask is not None:  # a query that may see no key gets zeros, as from SDPA (not NaN)
        weights = torch.nan_to_num(weights, nan=0.0)
    return _dropped_times(weights, v, p)


def _dropped_times(weights: torch.Tensor, v: torch.Tensor, p: float) -> torch.Tensor:
    """dropout(weights, p) @ v: weights (..., T, S), v (..., S, D) -> (..., T, D)."""
    if not cheap_mask(v.device, p):
        return torch.matmul(F.dropout(weights, p), v)
    kept = weights.mul(keep_mask(weights.shape, p, weights.dtype))  # unscaled: the scale goes on the smaller output
    return torch.matmul(kept, v).mul_(1.0 / (1.0 - p))


def _causal_by_blocks(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: float, scale: float) -> torch.Tensor:
    """Causal attention with dropout, CAUSAL_BLOCK queries at a time: the block of queries start..end-1 scores
    keys 0..end-1 only, with -inf above the diagonal of its last square. q, k, v: (B, H, T, D), T == S.
    Returns (B, H, T, D)."""
    (batch, heads, length, width) = q.shape
    queries, keys, values = (t.reshape(batch * heads, length, width) for t in (q, k, v))  # (BH, T, D) each
    outputs = []
    for start in range(0, length, CAUSAL_BLOCK):
        end = min(start + CAUSAL_BLOCK, length)
        future = torch.full((end - start, end), float("-inf"), dtype=q.dtype, device=q.device).triu_(start + 1)
        scores = torch.baddbmm(future.expand(batch * heads, -1, -1), queries[:, start:end],
                               keys[:, :end].transpose(1, 2), alpha=scale)  # (BH, rows, end)
        outputs.append(_dropped_times(torch.softmax(scores, dim=-1), values[:, :end], p))  # (BH, rows, D)
    return torch.cat(outputs, dim=1).view(batch, heads, length, width)
