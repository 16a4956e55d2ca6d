"""Rotary position embeddings in the half-split layout of Llama-family checkpoints, with the
linear, llama3 and YaRN frequency scalings.

A head vector's first `rotary_dim` dimensions are rotated in pairs (i, i + rotary_dim / 2) by the
angle position * inv_freq[i]; the rest pass through unchanged (partial rotary).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import ModelConfig


def inverse_frequencies(config: ModelConfig) -> tuple[torch.Tensor, float]:
    """(rotary_dim / 2,) float32 inverse frequencies after the config's scaling, and the factor that
    multiplies cos and sin (1.0 except for YaRN)."""
    c, dim = config, config.rotary_dim
    exponents = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim  # (dim/2,)
    inv_freq = 1.0 / (c.rotary_theta ** exponents)
    original = c.rope_original_max_positions or c.max_positions
    if c.rope_scaling == "linear":
        return inv_freq / c.rope_factor, 1.0
    if c.rope_scaling == "llama3":
        return _llama3(inv_freq, c.rope_factor, c.rope_low_freq_factor, c.rope_high_freq_factor, original), 1.0
    if c.rope_scaling == "yarn":
        return _yarn(c, dim, original)
    return inv_freq, 1.0


def _llama3(inv_freq: torch.Tensor, factor: float, low: float, high: float, original: int) -> torch.Tensor:
    """Long wavelengths (beyond original / low) are divided by `factor`, short ones (below original / high)
    kept, and the band between interpolated smoothly."""
    wavelength = 2 * math.pi / inv_freq
    scaled = torch.where(wavelength > original / low, inv_freq / factor, inv_freq)
    smooth = (original / wavelength - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelength >= original / high) & (wavelength <= original / low)
    return torch.where(medium, smoothed, scaled)


def _yarn(c: ModelConfig, dim: int, original: int) -> tuple[torch.Tensor, float]:
    """NTK-by-parts: dimensions that turn more than beta_fast times over the original length keep their
    frequency, those turning fewer than beta_slow times are interpolated (divided by the factor), with
    a linear ramp between; cos/sin are scaled by the attention factor."""
    factor = c.rope_factor
    attention = c.rope_attention_factor
    if attention is None:
        attention = 0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0

    def correction_dim(rotations: float) -> float:
        return dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(c.rotary_theta))

    low, high = correction_dim(c.rope_beta_fast), correction_dim(c.rope_beta_slow)
    if c.rope_truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # no empty ramp
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)  # (dim/2,)
    base = c.rotary_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim)
    keep = 1 - ramp  # 1: extrapolate (keep the frequency), 0: interpolate
    inv_freq = (1.0 / (factor * base)) * (1 - keep) + (1.0 / base) * keep
    return inv_freq, attention


class RotaryEmbedding(nn.Module):
    """Rotates queries and keys by their positions: the `rotary` module of `Attention`. Owned by the stack
    and shared by its layers; the cos/sin tables of one forward pass are computed once, by the first layer."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        inv_freq, self.attention_scaling = inverse_frequencies(config)
        self.register_buffer("inv_freq", inv_freq, persistent=False)  # (rotary_dim / 2,)
        self._last: tuple[torch.Tensor, torch.dtype, tuple[torch.Tensor, torch.Tensor]] | None = None

    def forward(self, q: torch.Tensor, k: torch.Tensor, position_ids: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """q (B, H, T, D), k (B, Hkv, T, D), position_ids (B|1, T) -> rotated q and k."""
        if torch.compiler.is_compiling():  # no state kept across layers in traced code (the compiler shares the work)
            cos, sin = self.tables(position_ids, q.dtype)
        elif self._last is not None and self._last[0] is position_ids and self._last[1] == q.dtype:
            cos, sin = self._last[2]  # the same positions as the previous layer's
        else:
            cos, sin = self.tables(position_ids, q.dtype)
            self._last = (position_ids, q.dtype, (cos, sin))
        return rotate(q, cos, sin), rotate(k, cos, sin)

    def tables(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """position_ids (B|1, T) -> cos, sin (B|1, 1, T, rotary_dim), computed in float32 then cast."""
        angles = position_ids[..., None].float() * self.inv_freq.float()  # (B, T, rotary_dim / 2)
        angles = torch.cat((angles, angles), dim=-1)[:, None]  # (B, 1, T, rotary_dim)
        cos, sin = angles.cos(), angles.sin()
        if self.attention_scaling != 1.0:
            cos, sin = cos * self.attention_scaling, sin * self.attention_scaling
        return cos.to(dtype), sin.to(dtype)

    def _apply(self, fn, *args, **kwargs):  # keep the frequencies in float32 under .half() / .to(bf16)
        self._last = None
        inv_freq = self.inv_freq
        result = super()._apply(fn, *args, **kwargs)
        self.inv_freq = inv_freq.to(self.inv_freq.device)
        return result


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first cos.shape[-1] dimensions of x (B, H, T, D) in half-split pairs; keep the rest."""
    dim = cos.shape[-1]
    rotating, passing = (x, None) if dim == x.shape[-1] else (x[..., :dim], x[..., dim:])
    first, second = rotating.chunk(2, dim=-1)
    rotated = rotating * cos + torch.cat((-second, first), dim=-1) * sin  # (B, H, T, dim)
    return rotated if passing is None else torch.cat((rotated, passing), dim=-1)
