"""Facts about a prepared corpus that say how much a pretrained model learned beyond counting."""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from .corpus import TokenShards


def unigram_entropy(shards: TokenShards, split: str = "train") -> float:
    """The entropy, in nats, of the token frequencies of `split`, special tokens left out.

    A masked LM that learned only how often each token occurs (and nothing of its context) reaches a
    loss near this number; a loss well below it (a nat or more) means the model uses the context."""
    tokens = np.asarray(shards.split(split))
    counts = np.bincount(tokens.astype(np.int64), minlength=shards.vocab_size).astype(np.float64)
    counts[sorted(i for i in shards.tokenizer.special_ids if i < counts.size)] = 0
    total = counts.sum()
    if total == 0:
        raise DataError(f"the {split} split of {shards.path} holds no ordinary tokens; prepare a corpus with text in it")
    p = counts[counts > 0] / total
    return float(-(p * np.log(p)).sum())
