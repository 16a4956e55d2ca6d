"""A preallocated key/value cache for decoding, off during training.

Two ways to fill it: by `length` (a Python int: each forward pass appends its tokens after the cached ones and
attends over the filled part), or, after `start_static`, one token per row per step at a slot held in a tensor,
attending over all `max_len` slots through a mask (`StaticSlots`): every step then has the same shapes and
reads no Python number that changes, which is what a compiled decoding step (`lmforge.infer.compiled`) needs.
"""

from __future__ import annotations

import torch

from ..errors import InputError


class StaticSlots:
    """The state of static decoding, as tensors updated in place: `slot` (1,) the cache slot the next token
    is written to (the same for every row), `positions` (B, 1) that token's position in each row (rows of a
    left-padded batch differ), `real` (B, max_len) bool, False at the prompt's padding slots."""

    def __init__(self, slot: torch.Tensor, positions: torch.Tensor, real: torch.Tensor):
        self.slot, self.positions, self.real = slot, positions, real
        self.slots = torch.arange(real.shape[1], device=real.device)  # (max_len,)

    def mask(self, window: int | None) -> torch.Tensor:
        """(B, 1, 1, max_len) bool: the slots the new token may attend to (written, real, inside `window`)."""
        mask = self.real & (self.slots <= self.slot)  # (B, max_len)
        if window is not None:
            mask = mask & (self.slot - self.slots < window)
        return mask[:, None, None, :]

    def advance(self) -> None:
        self.slot.add_(1)
        self.positions.add_(1)


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
        self.keys = torch.zeros(shape, dtype=dtype, device=device)  # (L, B, Hkv, max_len, D); static: a list, see start_static
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.max_len = max_len
        self.length = 0
        self.cross: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n_layers
        self.output_weight: torch.Tensor | None = None  # the LM head's matrix in its decoding layout
        self.static: StaticSlots | None = None  # set by `start_static`

    def start_static(self, key_mask: torch.Tensor | None = None) -> None:
        """From now on, one token per row per forward pass, at the slot `self.static.slot` (see the module
        docstring); `length` stops counting. key_mask: (B, length) 1 for the real tokens cached so far (None: all)."""
        batch, device = self.keys.shape[1], self.keys.device
        real = torch.ones(batch, self.max_len, dtype=torch.bool, device=device)  # (B, max_len)
        if key_mask is None:
            positions = torch.full((batch, 1), self.length, dtype=torch.long, device=device)
        else:
            real[:, :self.length] = key_mask.bool()
            positions = key_mask.long().sum(-1, keepdim=True)  # (B, 1): real tokens so far
        self.static = StaticSlots(torch.tensor([self.length], device=device), positions, real)
        # one tensor per layer: a compiled step then writes each in place (into views of one tensor, it would
        # copy the whole layer's keys and values every step)
        self.keys = [keys.clone() for keys in self.keys.unbind(0)]  # L x (B, Hkv, max_len, D)
        self.values = [values.clone() for values in self.values.unbind(0)]

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store (B, Hkv, T, D) keys/values after the cached ones; return all of them (B, Hkv, length+T, D).
        Static: store (B, Hkv, 1, D) at the slot; return every slot (B, Hkv, max_len, D)."""
        if self.static is not None:
            self.keys[layer].index_copy_(2, self.static.slot, k)
            self.values[layer].index_copy_(2, self.static.slot, v)
            return self.keys[layer], self.values[layer]
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise InputError(f"KV cache holds {self.max_len} tokens but {end} were needed; "
                             "create the cache with a larger max_len")
        keys, values = self.keys[layer], self.values[layer]  # (B, Hkv, max_len, D)
        keys.narrow(2, self.length, k.shape[2]).copy_(k)
        values.narrow(2, self.length, v.shape[2]).copy_(v)
        return keys.narrow(2, 0, end), values.narrow(2, 0, end)

    def advance(self, n_tokens: int) -> None:
        if self.static is not None:
            self.static.advance()
        else:
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
