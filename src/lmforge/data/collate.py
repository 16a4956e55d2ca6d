"""Padding lists of token ids into the tensors a model takes."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..errors import InputError
from ..labels import IGNORE_INDEX


def pad(sequences: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    """Right-pad sequences of ids to one length: a (B, T) int64 tensor."""
    if value is None:
        raise InputError("the padding id is None (a vocabulary without a pad token); pad with "
                         "tokenizer.padding_id (the one padding policy: pad, else end-of-sequence, else separator)")
    length = max((len(s) for s in sequences), default=0)
    out = np.full((len(sequences), length), value, dtype=np.int64)  # (B, T)
    for row, sequence in enumerate(sequences):
        out[row, : len(sequence)] = sequence
    return torch.from_numpy(out)


def attention_mask_for(sequences: Sequence[Sequence[int]]) -> torch.Tensor:
    """1 for real tokens, 0 for padding: a (B, T) int64 tensor matching `pad(sequences, ...)`."""
    return pad([[1] * len(s) for s in sequences], 0)


def collate(examples: Sequence[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Batch labelled examples ({"input_ids": [...], "labels": int | [...], optional "token_type_ids"}) into
    tensors for `model(**batch)`: ids padded with `pad_id`, an attention mask, and labels as a (B,) tensor
    (classification) or padded with -100 (token classification, sequence-to-sequence)."""
    ids = [e["input_ids"] for e in examples]
    batch = {"input_ids": pad(ids, pad_id), "attention_mask": attention_mask_for(ids)}
    if "token_type_ids" in examples[0]:
        batch["token_type_ids"] = pad([e["token_type_ids"] for e in examples], 0)
    if "labels" in examples[0]:
        labels = [e["labels"] for e in examples]
        batch["labels"] = (torch.tensor(labels, dtype=torch.long) if isinstance(labels[0], (int, np.integer))
                           else pad(labels, IGNORE_INDEX))
    return batch
