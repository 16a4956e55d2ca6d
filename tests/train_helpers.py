"""Small batch sources for trainer tests: deterministic, resumable, sharded by rank like a real sampler."""

from __future__ import annotations

import torch

from lmforge import ModelConfig, build_model


def tiny_gpt(seed: int = 0, dropout: float = 0.0, vocab: int = 97, bias: bool = True):
    """A 2-layer, 32-wide GPT. Equivalence tests use bias=False: the key bias has a gradient that is
    zero in exact arithmetic (softmax ignores a shift shared by all keys), so its float rounding noise
    is what Adam normalises, and two equal computations summed in different orders drift apart there."""
    torch.manual_seed(seed)
    config = ModelConfig(family="decoder", vocab_size=vocab, d_model=32, n_heads=4, n_layers=2, d_ff=64,
                         max_positions=64, dropout=dropout, attention_dropout=dropout, bias=bias)
    return build_model(config)


class TokenRows:
    """Rows of a fixed random (N, T) token matrix, shuffled per epoch with a seeded generator;
    each rank takes every world_size-th row of a global batch. Resumable through its position."""

    def __init__(self, rows: torch.Tensor, micro_batch: int, rank: int = 0, world_size: int = 1, seed: int = 0):
        self.rows, self.micro, self.rank, self.world, self.seed = rows, micro_batch, rank, world_size, seed
        self.epoch, self.position = 0, 0  # position: global batches consumed this epoch

    def state_dict(self):
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state):
        self.epoch, self.position = state["epoch"], state["position"]

    def __iter__(self):
        global_batch = self.micro * self.world
        order = torch.randperm(len(self.rows), generator=torch.Generator().manual_seed(self.seed + self.epoch))
        while (self.position + 1) * global_batch <= len(order):
            chunk = order[self.position * global_batch:(self.position + 1) * global_batch]
            mine = chunk[self.rank::self.world]
            self.position += 1
            ids = self.rows[mine]
            yield {"input_ids": ids, "labels": ids.clone()}
        self.epoch, self.position = self.epoch + 1, 0


def token_factory(rows: torch.Tensor, seed: int = 0):
    return lambda micro, rank, world: TokenRows(rows, micro, rank, world, seed)


def patterned_rows(n: int = 64, length: int = 16, vocab: int = 97, seed: int = 0) -> torch.Tensor:
    """Learnable sequences: arithmetic progressions mod vocab with random starts and strides 1..3."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(0, vocab, (n, 1), generator=g)
    stride = torch.randint(1, 4, (n, 1), generator=g)
    return (start + stride * torch.arange(length)) % vocab
