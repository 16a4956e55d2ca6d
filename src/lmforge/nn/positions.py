"""Position information: learned tables, fixed sinusoids, and T5's relative-position buckets."""

from __future__ import annotations

import math

import torch
from torch import nn


def position_ids_from_mask(key_mask: torch.Tensor) -> torch.Tensor:
    """(B, S) 1/0 mask -> (B, S) positions counting real tokens only (0, 1, 2, ...).

    Left- or right-padded sequences get the positions they would have alone; pad slots get
    the position of the last real token before them (0 before any), which nothing reads.
    """
    return (key_mask.long().cumsum(-1) - 1).clamp(min=0)


def new_position_ids(key_mask: torch.Tensor | None, past: int, length: int, device: torch.device) -> torch.Tensor:
    """Positions of `length` new tokens after `past` cached ones: (B, T) counted per row from the
    (B, past+T) key mask (rows of a padded batch may sit at different positions), or (1, T) without one."""
    if key_mask is not None:
        return position_ids_from_mask(key_mask)[:, past:]  # (B, T)
    return torch.arange(past, past + length, device=device)[None]  # (1, T)


class LearnedPositions(nn.Module):
    """A learned table of `max_positions + offset` rows; position p reads row p + offset
    (BART and RoBERTa keep 2 unused rows first)."""

    def __init__(self, max_positions: int, dim: int, offset: int = 0):
        super().__init__()
        self.offset = offset
        self.weight = nn.Parameter(torch.empty(max_positions + offset, dim))

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, dim)
        return nn.functional.embedding(position_ids + self.offset, self.weight)


class SinusoidalPositions(nn.Module):
    """Fixed sin/cos positions of "Attention Is All You Need" (no parameters)."""

    def __init__(self, max_positions: int, dim: int):
        super().__init__()
        position = torch.arange(max_positions, dtype=torch.float32)[:, None]  # (P, 1)
        frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
        table = torch.zeros(max_positions, dim)
        table[:, 0::2] = torch.sin(position * frequency)
        table[:, 1::2] = torch.cos(position * frequency[: dim // 2])
        self.register_buffer("table", table, persistent=False)

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, dim)
        return self.table[position_ids]


def relative_position_bucket(relative_position: torch.Tensor, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> torch.Tensor:
    """T5's bucketing of key_pos - query_pos: exact buckets for small distances, logarithmically
    wider ones up to `max_distance`, and one shared bucket beyond. Bidirectional stacks give half
    of the buckets to keys after the query."""
    bucket = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (relative_position > 0).long() * num_buckets
        distance = relative_position.abs()
    else:
        distance = (-relative_position).clamp(min=0)  # only keys before the query count
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    log_ratio = torch.log(distance.float().clamp(min=1) / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (log_ratio * (num_buckets - max_exact)).long()
    large = large.clamp(max=num_buckets - 1)
    return bucket + torch.where(is_small, distance, large)


class RelativePositionBias(nn.Module):
    """One learned scalar per (bucket, head), added to every layer's attention scores (T5).
    Owned by the stack and shared by all of its layers."""

    def __init__(self, n_heads: int, num_buckets: int, max_distance: int, bidirectional: bool):
        super().__init__()
        self.num_buckets, self.max_distance, self.bidirectional = num_buckets, max_distance, bidirectional
        self.weight = nn.Parameter(torch.empty(num_buckets, n_heads))

    def forward(self, query_len: int, key_len: int, past_len: int = 0) -> torch.Tensor:
        """Bias (1, H, T, S) for queries at positions past_len .. past_len+T-1 over keys 0 .. S-1."""
        device = self.weight.device
        query_pos = torch.arange(past_len, past_len + query_len, device=device)[:, None]  # (T, 1)
        key_pos = torch.arange(key_len, device=device)[None, :]  # (1, S)
        buckets = relative_position_bucket(key_pos - query_pos, self.bidirectional, self.num_buckets,
                                           self.max_distance)  # (T, S)
        bias = nn.functional.embedding(buckets, self.weight)  # (T, S, H)
        return bias.permute(2, 0, 1)[None]  # (1, H, T, S)
