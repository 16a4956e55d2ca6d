"""Batch sources for distillation: labelled examples or prepared token shards, resumable like a sampler."""

from __future__ import annotations

from typing import Iterator, Sequence

from ..data import ResumableSampler, labelled_batches


class ExampleBatches:
    """Padded batches of labelled examples (from lmforge.data.labelled readers) for one rank; each
    iteration is the rest of the current epoch. `state_dict()` is the sampler's, so a checkpoint
    resumes mid-epoch. Evaluation sources (shuffle=False) keep the last, shorter batch."""

    def __init__(self, examples: Sequence[dict], micro_batch: int, pad_id: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0, shuffle: bool = True):
        self.examples, self.pad_id = examples, pad_id
        self.sampler = ResumableSampler(len(examples), min(micro_batch, len(examples)), seed=seed, rank=rank,
                                        world_size=world_size, shuffle=shuffle, drop_last=shuffle)

    def __iter__(self) -> Iterator[dict]:
        return labelled_batches(self.examples, self.sampler.batch_size, self.pad_id, self.sampler)

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)
