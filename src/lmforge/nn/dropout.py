"""Dropout whose mask costs less on the CPU.

On a CPU, torch draws a dropout mask with `bernoulli_` at about 10 ns an element on one thread, and
`scaled_dot_product_attention` with `dropout_p > 0` leaves its fused kernel for a path that draws such a
mask over every (query, key) pair and makes extra passes for rows that see no key; for a GPT-2-shaped
model with dropout 0.1 that is a sixth of a training step. Here the mask comes from `random_` on 32-bit
integers, each word giving 15 random bits to each of two elements (a drop probability resolved to 1/32768),
and attention with dropout is written out in `nn.attention_dropout` with these masks.
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


def cheap_mask(device: torch.device, p: float) -> bool:
    """Whether `keep_mask` draws the dropout mask for this device and probability: on the CPU, 0 < p < 1, in
    eager mode (a compiled graph keeps torch's dropout and SDPA, which the compiler fuses with its own RNG)."""
    return device.type == "cpu" and 0.0 < p <= CHEAP_MAX_P and not torch.compiler.is_compiling()


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, dtype: torch.dtype = torch.bool,
              scaled: bool = False) -> torch.Tensor:
    """A CPU tensor of `shape`, each element 1 (kept) with probability 1 - p and 0 otherwise, independently
    (0 < p <= CHEAP_MAX_P); `dtype` float gives the mask ready to multiply (no conversion in the product),
    `scaled` makes the kept elements 1 / (1 - p) in `dtype` (dropout's whole factor, one product forward and
    back; rounded to `dtype` as torch rounds a scalar factor of a tensor of that dtype)."""
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
