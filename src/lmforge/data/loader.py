"""From prepared data to batches: token shards + objective + sampler, or labelled examples + sampler."""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from ..errors import DataError
from .collate import collate
from .corpus import TokenShards
from .sampler import ResumableSampler


def pretraining_windows(shards: TokenShards, window_length: int, split: str = "train") -> np.ndarray:
    """The split cut into consecutive windows of `window_length` tokens: a (N, window_length) memory-mapped view."""
    tokens = shards.split(split)
    count = len(tokens) // window_length
    if count == 0:
        raise DataError(f"the {split} split of {shards.path} has {len(tokens)} tokens, fewer than one window of "
                        f"{window_length}; use a shorter sequence length or more text")
    return tokens[: count * window_length].reshape(count, window_length)


def pretraining_batches(shards: TokenShards, objective, batch_size: int, seq_len: int,
                        sampler: ResumableSampler | None = None, split: str = "train", seed: int = 0) -> Iterator[dict]:
    """Batches of `objective` (see lmforge.data.objectives) over the windows of a prepared corpus.

    Yields the remaining batches of the sampler's current epoch (one `iter(sampler)`); loop again for
    the next epoch. Without a sampler, one is made over all windows with `seed`. Each batch draws its
    random choices (masks, spans) from a generator seeded by (sampler seed, epoch, position, rank), so a
    resumed run reproduces the batches of an uninterrupted one. Checks the objective's tokenizer (if it
    has one) against the tokenizer the corpus was prepared with."""
    if getattr(objective, "tokenizer", None) is not None:
        shards.check_tokenizer(objective.tokenizer)
    windows = pretraining_windows(shards, objective.window_length(seq_len), split)
    if sampler is None:
        sampler = ResumableSampler(len(windows), batch_size, seed=seed)
    elif sampler.num_items != len(windows):
        raise DataError(f"the sampler covers {sampler.num_items} items but {shards.path} ({split}) has "
                        f"{len(windows)} windows of {windows.shape[1]} tokens; build the sampler over len(windows)")
    for indices in sampler:
        rng = np.random.default_rng([sampler.seed, sampler.epoch, sampler.position, sampler.rank])
        yield objective([windows[i] for i in indices], rng)


def labelled_batches(examples: Sequence[dict], batch_size: int, pad_id: int,
                     sampler: ResumableSampler | None = None, seed: int = 0, shuffle: bool = True) -> Iterator[dict]:
    """Batches of labelled examples (from lmforge.data.labelled readers) padded with `pad_id` by `collate`.

    Yields the remaining batches of the sampler's current epoch; without a sampler one is made that
    keeps the last, shorter batch."""
    if sampler is None:
        sampler = ResumableSampler(len(examples), min(batch_size, len(examples)), seed=seed, shuffle=shuffle,
                                   drop_last=False)
    for indices in sampler:
        yield collate([examples[i] for i in indices], pad_id)
