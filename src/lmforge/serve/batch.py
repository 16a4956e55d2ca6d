"""The running batch of continuous batching: rows at different lengths decoding over one KV cache.

Every row's tokens are right-aligned in the cache and the columns before them are masked, so a row
keeps the positions it would have alone (positions are counted from the mask) and one decoding step
feeds one token to every row. A row joins with the cache of its own prefill (the rows are copied once
into a new cache) and leaves at any step (the others move inside the same cache); nobody is recomputed.
After a row leaves, columns no row uses any more are dropped, so the cache is only as long as the longest
row. Copies go row by row (see `realign`) and the cache grows by half its length when it is full.
"""

from __future__ import annotations

import torch

from ..nn.cache import KVCache
from ..nn.decoding_linear import decoding_products

HEADROOM = 32  # tokens of free cache columns allocated at least at each (re)alignment
MAX_RESERVE = 256  # at most this many free columns are set aside for the tokens joining rows will add


def realign(sources: list[tuple[torch.Tensor, list[int] | range, int, int]], batch_dim: int, seq_dim: int, end: int,
            capacity: int) -> torch.Tensor:
    """A zero tensor of `capacity` columns along `seq_dim` holding, one after another along `batch_dim`, the rows
    of each source (tensor, rows, start, used): row `rows[j]`'s `used` columns from `start`, moved so that they end
    at column `end`. Copied row by row: one strided copy of a whole 5-D cache (or an index_select along its batch
    dimension) runs many times slower on the CPU (a 16-row gpt2-size cache: ~10x)."""
    first = sources[0][0]
    shape = list(first.shape)
    shape[batch_dim] = sum(len(rows) for _, rows, _, _ in sources)
    shape[seq_dim] = capacity
    out = first.new_zeros(shape)
    row_seq_dim = seq_dim - (seq_dim > batch_dim)  # the sequence dimension of one row
    target = 0
    for tensor, rows, start, used in sources:
        for row in rows:
            out.select(batch_dim, target).narrow(row_seq_dim, end - used, used).copy_(
                tensor.select(batch_dim, row).narrow(row_seq_dim, start, used))
            target += 1
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
        # the storage the cache and mask are the first B rows of: rows that left free theirs for rows that join
        self.stores: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # keys, values, mask

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

    @staticmethod
    def _realigned(sources: list[tuple[KVCache, torch.Tensor, list[int] | range, int, int]], end: int,
                   capacity: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Keys, values (L, B, Hkv, capacity, D) and mask (B, capacity) holding the rows of each source
        (cache, its mask, rows, start, used): their `used` columns from `start`, ending at column `end`."""
        def of(pick, batch_dim: int, seq_dim: int) -> torch.Tensor:
            parts = [(pick(cache, mask), rows, start, used) for cache, mask, rows, start, used in sources]
            return realign(parts, batch_dim, seq_dim, end, capacity)

        return (of(lambda cache, mask: cache.keys, 1, 3), of(lambda cache, mask: cache.values, 1, 3),
                of(lambda cache, mask: mask, 0, 1))

    def add(self, row, cache: KVCache, reserve: int = 0) -> None:
        """Let `row` join with `cache`, the one-row cache of its prefill (cross keys/values included)."""
        self.join([row], cache, reserve=reserve)

    def join(self, rows: list, cache: KVCache, mask: torch.Tensor | None = None, reserve: int = 0) -> None:
        """Let `rows` join with `cache`, the cache of their prefill (one row each, cross keys/values
        included); `mask` (len(rows), cache.length) marks their real tokens (left padding), None: all real.
        `reserve`: the tokens they may still add (up to MAX_RESERVE), kept free so that the cache need not grow."""
        own = cache.length
        end = max(self.length, own)
        reserve = max(HEADROOM, min(reserve, MAX_RESERVE))
        capacity = end + reserve
        if mask is None:
            mask = torch.ones(len(rows), own, dtype=torch.long, device=cache.keys.device)
        first = len(self.rows)
        if (self.rows and own <= self.length and first + len(rows) <= self.stores[2].shape[0]
                and self.length + reserve <= self.stores[2].shape[1]):
            new_keys, new_values, new_mask = self._join_in_place(cache, mask.long(), own)
        else:
            sources = [(self.cache, self.mask, range(first), 0, self.length)] if self.rows else []
            sources.append((cache, mask.long(), range(len(rows)), 0, own))
            new_keys, new_values, new_mask = self.stores = self._realigned(sources, end, capacity)  # B + n rows
        cross = self._joined_cross(cache)
        self.rows.extend(rows)
        self.cache = self._new_cache(len(self.rows), new_keys, new_values, end)
        self.cache.cross = cross
        self.mask = new_mask

    def _join_in_place(self, cache: KVCache, mask: torch.Tensor, own: int) -> tuple[torch.Tensor, ...]:
        """Write the joining rows (no longer than the batch) into the free rows of the storage, right-aligned;
        the others stay where they are. Returns the views of keys, values and mask over every row."""
        first, joining, length = len(self.rows), mask.shape[0], self.length
        views = tuple(store.narrow(0 if store.dim() == 2 else 1, 0, first + joining) for store in self.stores)
        for store, theirs in zip(views[:2], (cache.keys, cache.values)):  # (L, B + n, Hkv, capacity, D)
            new_rows = store.narrow(1, first, joining)
            new_rows.narrow(3, 0, length - own).zero_()  # masked, but must hold finite numbers
            new_rows.narrow(3, length - own, own).copy_(theirs.narrow(3, 0, own))
        views[2][first:].zero_()  # (n, capacity)
        views[2][first:, length - own:length] = mask
        return views

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
        """Keep only rows `keep` (indices, in order); drop the cache columns no remaining row uses. In place:
        each kept row moves up and left inside the same storage (a fresh cache this size would cost page
        faults on every page, as much as a decoding step at gpt2 size); columns past the new length keep
        stale values that are never read (the next appends overwrite them)."""
        if not keep:
            self.rows, self.cache, self.mask, self.source_mask, self.stores = [], None, None, None, None
            return
        index = torch.tensor(keep, device=self.mask.device)
        old = self.length
        mask = self.mask.index_select(0, index)[:, :old]  # (n, old)
        lead = int((mask.cumsum(1) == 0).sum(1).min())  # columns before every row's first token
        end = old - lead
        for target, row in enumerate(keep):  # ascending: a row is read before anything is written over it
            for tensor in (self.cache.keys, self.cache.values):  # (L, B, Hkv, capacity, D)
                source = tensor[:, row, :, lead:old]
                if row == target and lead:
                    source = source.clone()  # the same row, shifted left: the ranges overlap
                if row != target or lead:
                    tensor[:, target, :, :end].copy_(source)
        cross = self.cache.cross
        if cross[0] is not None:
            self.source_mask = self.source_mask.index_select(0, index)
            width = int(self.source_mask.sum(1).max())  # sources are left-aligned: drop unused columns
            self.source_mask = self.source_mask[:, :width]
            cross = [tuple(t.index_select(0, index)[:, :, :width] for t in kv) for kv in cross]
        rows = len(keep)
        self.rows = [self.rows[i] for i in keep]
        self.cache = self._new_cache(rows, self.cache.keys[:, :rows], self.cache.values[:, :rows], end)
        self.cache.cross = cross
        self.mask = self.mask[:rows]
        self.mask[:, :end] = mask[:, lead:]
        self.mask[:, end:] = 0

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row (B,); return next-token logits (B, V) in float32."""
        if self.length + 1 > self.cache.max_len:  # grow by half: copy into a larger cache
            end, capacity = self.length, self.length + 1 + max(HEADROOM, self.length // 2)
            every = (self.cache, self.mask, range(len(self.rows)), 0, end)
            keys, values, self.mask = self.stores = self._realigned([every], end, capacity)
            cross = self.cache.cross
            self.cache = self._new_cache(len(self.rows), keys, values, end)
            self.cache.cross = cross
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
        return 2 * self.cache.keys.untyped_storage().nbytes() + cross  # rows that left free no memory until a join
