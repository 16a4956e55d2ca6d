"""Attention masks, built once per stack. Boolean, True = may attend."""

from __future__ import annotations

import torch


def key_padding_mask(key_mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, S) 1/0 key mask -> (B, 1, 1, S) bool, or None when there is nothing to mask."""
    if key_mask is None:
        return None
    return key_mask[:, None, None, :].bool()


def self_attention_mask(query_len: int, key_mask: torch.Tensor | None, causal: bool, past_len: int,
                        device: torch.device, window: int | None = None,
                        explicit: bool = False) -> tuple[torch.Tensor | None, bool]:
    """Mask for self-attention of `query_len` new tokens after `past_len` cached ones.

    key_mask: (B, past_len + query_len) with 1 for real tokens, or None (all real).
    window: a causal query sees only the `window` latest slots (itself included), or all when None.
    explicit: always build the causal mask (a position bias will be folded into it).
    Returns (mask, is_causal): mask is None or bool (B|1, 1, T, past+T); is_causal asks
    scaled_dot_product_attention for its own causal kernel (only when no explicit mask is needed).
    """
    key_len = past_len + query_len
    if key_mask is not None and bool(key_mask.all()):
        key_mask = None  # nothing is padded: no mask at all, or scaled_dot_product_attention's causal kernel
    if not causal:
        return _never_empty(key_padding_mask(key_mask)), False
    if window is not None and window >= key_len:
        window = None  # no key is old enough to fall out of the window
    if key_mask is None and window is None and not explicit:
        if past_len == 0:
            return None, True
        if query_len == 1:
            return None, False  # one new token may see everything cached
    query_pos = torch.arange(past_len, key_len, device=device)[:, None]  # (T, 1)
    key_pos = torch.arange(key_len, device=device)[None, :]  # (1, S)
    mask = key_pos <= query_pos  # (T, S)
    if window is not None:
        mask = mask & (query_pos - key_pos < window)
    mask = mask[None, None]  # (1, 1, T, S)
    if key_mask is not None:
        mask = mask & key_padding_mask(key_mask)  # (B, 1, T, S)
    return _never_empty(mask), False


def _never_empty(mask: torch.Tensor | None) -> torch.Tensor | None:
    """Let rows that may attend to nothing (a pad query in a left-padded batch, an all-pad sequence)
    attend everywhere instead: their outputs are never used, and an empty row would give NaN."""
    if mask is None:
        return None
    return mask | ~mask.any(dim=-1, keepdim=True)


def with_bias(mask: torch.Tensor | None, bias: torch.Tensor) -> torch.Tensor:
    """Fold a bool mask into an additive float bias (B|1, H, T, S): masked scores get the dtype's minimum."""
    if mask is None:
        return bias
    return torch.where(mask, bias, torch.finfo(bias.dtype).min)
