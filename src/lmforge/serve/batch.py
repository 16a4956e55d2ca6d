"""The running batch of continuous batching: rows at different lengths decoding over one KV cache.

Every row's tokens are right-aligned in the cache and the columns before them are masked, so a row
keeps the positions it would have alone (positions are counted from the mask) and one decoding step
feeds one token to every row. A row joins with the cache of its own prefill and leaves at any step;
both re-align the others by copying their cache once, never by recomputing them. After a row leaves,
columns no row uses any more are dropped, so the cache is only as long as the longest row.
"""

from __future__ import annotations

import torch

from ..nn.cache import KVCache
from ..nn.decoding_linear import decoding_products

HEADROOM = 32  # tokens of free cache columns allocated at each (re)alignment


def right_align(tensor: torch.Tensor, dim: int, used: int, end: int, capacity: int) -> torch.Tensor:
    """A zero tensor of `capacity` along `dim` holding `tensor`'s first `used` entries so that they end at `end`."""
    shape = list(tensor.shape)
    shape[dim] = capacity
    out = tensor.new_zeros(shape)
    out.narrow(dim, end - used, used).copy_(tensor.narrow(dim, 0, used))
    return out


def pad_end(tensor: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """`tensor` zero-padded after its end along `dim` to `size` entries."""
    extra = size - tensor.shape[dim]
    if extra == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = extra
    return torch.cat([tensor, tensor.new_zeros(shape)], dim=dim)


class RunningBatch:
    """The rows decoding together (their owners are opaque objects) and their shared KV cache.

    cache.keys/values: (L, B, Hkv, capacity, D); mask: (B, capacity) 1 where a row holds a real token;
    for encoder-decoders also cross-attention keys/values per layer (B, Hkv, S, D) with the
    source mask (B, S), right-padded to the longest source.
    """

    def __init__(self, model):
        self.model = model
        self.rows: list = []
        self.cache: KVCache | None = None
        self.mask: torch.Tensor | None = None  # (B, capacity) long
        self.source_mask: torch.Tensor | None = None  # (B, S) long, encoder-decoders only

    @property
    def length(self) -> int:
        return self.cache.length if self.cache is not None else 0

    def __len__(self) -> int:
        return len(self.rows)

    def _new_cache(self, batch: int, keys: torch.Tensor, values: torch.Tensor, length: int) -> KVCache:
        cache = self.model.new_cache(batch, 0)  # empty storage, but the head's decoding state for `batch` rows
        cache.keys, cache.values = keys, values
        cache.max_len, cache.length = keys.shape[3], length
        return cache

    def add(self, row, cache: KVCache) -> None:
        """Let `row` join with `cache`, the one-row cache of its prefill (cross keys/values included)."""
        self.join([row], cache)

    def join(self, rows: list, cache: KVCache, mask: torch.Tensor | None = None) -> None:
        """Let `rows` join with `cache`, the cache of their prefill (one row each, cross keys/values
        included); `mask` (len(rows), cache.length) marks their real tokens (left padding), None: all real."""
        own = cache.length
        end = max(self.length, own)
        capacity = end + HEADROOM
        if mask is None:
            mask = torch.ones(len(rows), own, dtype=torch.long, device=cache.keys.device)
        new_keys = right_align(cache.keys, 3, own, end, capacity)  # (L, n, Hkv, capacity, D)
        new_values = right_align(cache.values, 3, own, end, capacity)
        new_mask = right_align(mask.long(), 1, own, end, capacity)  # (n, capacity)
        if self.rows:
            old = self.length
            new_keys = torch.cat([right_align(self.cache.keys, 3, old, end, capacity), new_keys], dim=1)
            new_values = torch.cat([right_align(self.cache.values, 3, old, end, capacity), new_values], dim=1)
            new_mask = torch.cat([right_align(self.mask, 1, old, end, capacity), new_mask], dim=0)
        cross = self._joined_cross(cache)
        self.rows.extend(rows)
        self.cache = self._new_cache(len(self.rows), new_keys, new_values, end)
        self.cache.cross = cross
        self.mask = new_mask

    def _joined_cross(self, cache: KVCache) -> list:
        """Cross-attention keys/values of the rows plus the new one, right-padded to the longest source."""
        if cache.cross[0] is None:
            return cache.cross
        source = cache.cross[0][0].shape[2]
        ones = torch.ones(1, source, dtype=torch.long, device=cache.keys.device)
        if not self.rows:
            self.source_mask = ones
            return list(cache.cross)
        width = max(source, self.source_mask.shape[1])
        self.source_mask = torch.cat([pad_end(self.source_mask, 1, width), pad_end(ones, 1, width)])
        return [tuple(torch.cat([pad_end(mine, 2, width), pad_end(new, 2, width)]) for mine, new in zip(kv, kv_new))
                for kv, kv_new in zip(self.cache.cross, cache.cross)]

    def keep(self, keep: list[int]) -> None:
        """Keep only rows `keep` (indices, in order); drop the cache columns no remaining row uses."""
        if not keep:
            self.rows, self.cache, self.mask, self.source_mask = [], None, None, None
            return
        index = torch.tensor(keep, device=self.mask.device)
        old = self.length
        mask = self.mask.index_select(0, index)
        lead = int((mask[:, :old].cumsum(1) == 0).sum(1).min())  # columns before every row's first token
        end, capacity = old - lead, old - lead + HEADROOM

        def select(tensor: torch.Tensor) -> torch.Tensor:  # (L, B, Hkv, capacity, D)
            kept = tensor.index_select(1, index).narrow(3, lead, end)
            return right_align(kept, 3, end, end, capacity)

        cross = self.cache.cross
        if cross[0] is not None:
            self.source_mask = self.source_mask.index_select(0, index)
            width = int(self.source_mask.sum(1).max())  # sources are left-aligned: drop unused columns
            self.source_mask = self.source_mask[:, :width]
            cross = [tuple(t.index_select(0, index)[:, :, :width] for t in kv) for kv in cross]
        self.rows = [self.rows[i] for i in keep]
        self.cache = self._new_cache(len(keep), select(self.cache.keys), select(self.cache.values), end)
        self.cache.cross = cross
        self.mask = right_align(mask.narrow(1, lead, end), 1, end, end, capacity)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row (B,); return next-token logits (B, V) in float32."""
        if self.length + 1 > self.cache.max_len:  # grow: copy into a larger cache
            end, capacity = self.length, self.length + 1 + HEADROOM
            keys = right_align(self.cache.keys, 3, end, end, capacity)
            values = right_align(self.cache.values, 3, end, end, capacity)
            cross = self.cache.cross
            self.cache = self._new_cache(len(self.rows), keys, values, end)
            self.cache.cross = cross
            self.mask = right_align(self.mask, 1, end, end, capacity)
        self.mask[:, self.length] = 1
        mask = self.mask[:, :self.length + 1]  # (B, past + 1)
        ids = tokens[:, None]  # (B, 1)
        with decoding_products():  # the blocks' projections take their decoding layout (nn.decoding_linear)
            if self.source_mask is not None:
                context = self.cache.keys.new_zeros(len(self.rows), 1, 1)  # unused: cross keys/values are cached
                out = self.model(attention_mask=self.source_mask, encoder_hidden_states=context,
                                 decoder_input_ids=ids, decoder_attention_mask=mask, cache=self.cache, last_only=True)
            else:
                out = self.model(ids, attention_mask=mask, cache=self.cache, last_only=True)
        return out.logits[:, -1].float()  # (B, V)

    def cache_bytes(self) -> int:
        """Bytes the self- and cross-attention caches hold now."""
        if self.cache is None:
            return 0
        cross = sum(t.numel() * t.element_size() for kv in self.cache.cross if kv is not None for t in kv)
        return 2 * self.cache.keys.numel() * self.cache.keys.element_size() + cross
