"""Length-grouped batches of labelled examples: little padding, still a random order of batches."""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from ..data import collate

GROUP_BATCHES = 50  # examples are sorted by length within windows of this many batches


class LengthGroupedBatches:
    """Training batches (an iterable of `collate`d dicts) for the `Trainer`: each epoch shuffles the
    examples (seeded by seed and epoch), sorts windows of GROUP_BATCHES batches by length, cuts them into
    batches and shuffles the batches. Iterating gives the rest of the current epoch; `state_dict` /
    `load_state_dict` resume mid-epoch. With world_size > 1, rank r takes every world_size-th batch."""

    def __init__(self, examples: Sequence[dict], batch_size: int, pad_id: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1):
        self.examples, self.batch_size, self.pad_id, self.seed = examples, batch_size, pad_id, seed
        self.rank, self.world_size = rank, world_size
        self.lengths = np.array([len(e["input_ids"]) for e in examples])
        self.epoch, self.position = 0, 0

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """This rank's batches (arrays of example indices) of `epoch`, in visiting order."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.examples))
        window = self.batch_size * GROUP_BATCHES
        batches = []
        for start in range(0, len(order), window):
            chunk = order[start:start + window]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches.extend(chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        batches = [batches[i] for i in rng.permutation(len(batches))]
        usable = len(batches) - len(batches) % self.world_size
        return batches[self.rank:usable:self.world_size]

    def __iter__(self) -> Iterator[dict]:
        batches = self.epoch_batches(self.epoch)
        while self.position < len(batches):
            indices = batches[self.position]
            self.position += 1
            yield collate([self.examples[i] for i in indices], self.pad_id)
        self.epoch, self.position = self.epoch + 1, 0

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.seed, self.epoch, self.position = state["seed"], state["epoch"], state["position"]


def sorted_batches(examples: Sequence[dict], batch_size: int, pad_id: int, keep_order: bool = False) -> Iterator[dict]:
    """Evaluation batches in order of length (least padding), or in the examples' order with
    `keep_order`; every example once."""
    lengths = [len(e["input_ids"]) for e in examples]
    order = np.arange(len(examples)) if keep_order else np.argsort(lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        yield collate([examples[i] for i in order[start:start + batch_size]], pad_id)
