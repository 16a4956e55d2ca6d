"""A deterministic, resumable batch sampler, shardable across distributed ranks."""

from __future__ import annotations

import numpy as np

from ..errors import DataError


class ResumableSampler:
    """Iterates lists of item indices, one epoch per `iter()`, and can stop and resume anywhere.

    Epoch e visits a permutation of range(num_items) drawn from (seed, e) (or the identity order with
    shuffle=False). With world_size > 1, rank r takes every world_size-th index of that order, so ranks see
    disjoint items and the same number of batches (drop_last=True drops the tail that does not divide
    evenly; drop_last=False pads it by repeating the first indices, as torch's DistributedSampler does).

    `state_dict()` is {seed, epoch, position, ...}: `position` counts the batches of the epoch already
    handed out (counted when a batch is yielded), so a sampler restored with `load_state_dict` continues
    with exactly the batches an uninterrupted run would have seen next, without replaying earlier ones.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, drop_last: bool = True):
        if num_items < 1 or batch_size < 1:
            raise DataError(f"a sampler needs at least one item and batch size >= 1 (got {num_items} items, "
                            f"batch size {batch_size})")
        if not 0 <= rank < world_size:
            raise DataError(f"rank {rank} is outside world size {world_size}")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.rank, self.world_size, self.shuffle, self.drop_last = rank, world_size, shuffle, drop_last
        self.epoch, self.position = 0, 0
        if len(self) == 0:
            raise DataError(f"{num_items} items make no full batch of {batch_size} on each of {world_size} ranks; "
                            f"use --batch-size {max(num_items // world_size, 1)} or less, or more data")

    def epoch_order(self, epoch: int) -> np.ndarray:
        """This rank's indices for `epoch`, in visiting order."""
        order = (np.random.default_rng([self.seed, epoch]).permutation(self.num_items) if self.shuffle
                 else np.arange(self.num_items))
        if self.drop_last:
            order = order[: len(order) - len(order) % self.world_size]
        else:
            padding = -len(order) % self.world_size
            order = np.concatenate([order, np.resize(order, padding)])
        return order[self.rank::self.world_size]

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        per_rank = (self.num_items // self.world_size if self.drop_last
                    else -(-self.num_items // self.world_size))
        return per_rank // self.batch_size if self.drop_last else -(-per_rank // self.batch_size)

    def __iter__(self):
        """The remaining batches of the current epoch; when they run out the sampler moves to the next epoch."""
        order = self.epoch_order(self.epoch)
        while self.position < len(self):
            start = self.position * self.batch_size
            self.position += 1
            yield order[start:start + self.batch_size].tolist()
        self.epoch, self.position = self.epoch + 1, 0

    def state_dict(self) -> dict:
        """Everything needed to resume: seed, epoch and position, plus the shape it was built with."""
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position, "num_items": self.num_items,
                "batch_size": self.batch_size, "rank": self.rank, "world_size": self.world_size,
                "shuffle": self.shuffle, "drop_last": self.drop_last}

    def load_state_dict(self, state: dict) -> None:
        """Resume from `state_dict()`; the data, batch size and world size must be those it was saved with."""
        for key in ("num_items", "batch_size", "world_size", "shuffle", "drop_last"):
            if key in state and state[key] != getattr(self, key):
                raise DataError(f"cannot resume: the sampler was saved with {key}={state[key]}, now {getattr(self, key)}; "
                                "resume with the same data and settings")
        self.seed, self.epoch, self.position = int(state["seed"]), int(state["epoch"]), int(state["position"])
