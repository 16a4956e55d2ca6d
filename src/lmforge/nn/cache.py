"""A preallocated key/value cache for decoding, off during training."""

from __future__ import annotations

import torch

from ..errors import InputError


class KVCache:
    """Keys and values of every decoder layer, preallocated for `max_len` tokens and sized by the
    key/value heads (and, optionally, the output matrix in decoding layout, see
    `lmforge.models.cpu_decoding`: the state one generation keeps between steps).

    Self-attention appends the new tokens' keys/values at `length`; the stack advances `length`
    once per forward pass. Cross-attention keys/values are computed from the encoder output on
    the first step and kept in `cross` for every later step.
    """

    def __init__(self, n_layers: int, batch: int, n_kv_heads: int, d_head: int, max_len: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        shape = (n_layers, batch, n_kv_heads, max_len, d_head)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)  # (L, B, Hkv, max_len, D)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.max_len = max_len
        self.length = 0
        self.cross: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n_layers
        self.output_weight: torch.Tensor | None = None  # the LM head's matrix in its decoding layout

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store (B, Hkv, T, D) keys/values after the cached ones; return all of them (B, Hkv, length+T, D)."""
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise InputError(f"KV cache holds {self.max_len} tokens but {end} were needed; "
                             "create the cache with a larger max_len")
        keys, values = self.keys[layer], self.values[layer]  # (B, Hkv, max_len, D)
        keys.narrow(2, self.length, k.shape[2]).copy_(k)
        values.narrow(2, self.length, v.shape[2]).copy_(v)
        return keys.narrow(2, 0, end), values.narrow(2, 0, end)

    def advance(self, n_tokens: int) -> None:
        self.length += n_tokens

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows `index` (beam search): every cached tensor is gathered along batch. Only the
        filled part of the self-attention cache is copied; a change of batch size reallocates it."""
        if index.numel() != self.keys.shape[1]:  # e.g. B -> B * num_beams
            self.keys, self.values = self.keys.index_select(1, index), self.values.index_select(1, index)
        else:
            filled = (slice(None), slice(None), slice(None), slice(0, self.length))  # (L, B, Hkv, length, D)
            self.keys[filled] = self.keys[filled].index_select(1, index)
            self.values[filled] = self.values[filled].index_select(1, index)
        self.cross = [None if kv is None else (kv[0].index_select(0, index), kv[1].index_select(0, index))
                      for kv in self.cross]
