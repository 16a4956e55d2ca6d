"""Perplexity of a causal language model on held-out token ids: the quality measure of a weight format."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import InputError


@torch.inference_mode()
def perplexity(model, token_ids, window: int = 256, batch_size: int = 8, max_windows: int | None = None) -> float:
    """exp(mean next-token cross-entropy) of a causal-lm `model` over `token_ids` (a 1-D sequence), cut into
    consecutive, non-overlapping windows of `window` tokens (the last partial one dropped); each window's
    first token is context only. `max_windows`: score the first N windows. Computed in float32 from the
    model's logits whatever its weight format."""
    if not (model.head.language_model and model.config.family == "decoder"):  # next-token logits
        raise InputError(f"perplexity needs a decoder with a causal-lm head, not a {model.config.family} "
                         f"with a {model.task} head")
    ids = torch.as_tensor(token_ids, dtype=torch.long).flatten()
    window = min(window, model.config.max_positions)
    count = ids.numel() // window if max_windows is None else min(max_windows, ids.numel() // window)
    if count < 1:
        raise InputError(f"{ids.numel()} tokens are fewer than one window of {window}; give more text")
    windows = ids[: count * window].view(count, window).to(model.device)  # (N, W)
    was_training = model.training
    model.eval()
    total, scored = 0.0, 0
    for start in range(0, count, batch_size):
        batch = windows[start:start + batch_size]  # (B, W)
        logits = model(batch).logits[:, :-1].float()  # (B, W-1, V)
        losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum")
        total, scored = total + float(losses), scored + batch[:, 1:].numel()
    model.train(was_training)
    return math.exp(total / scored)
