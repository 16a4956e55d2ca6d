"""Texts -> padded id tensors for a model: its tokenizer, truncation to its length, left or right padding."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from tokenizers import Encoding
from tokenizers import Tokenizer as Backend

from ..errors import InputError


class TruncationWarning(UserWarning):
    """An input was longer than the model accepts and was cut."""


@dataclass
class Batch:
    """input_ids and attention_mask (B, T); the tokenizers Encodings (offsets, word ids) per text."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    encodings: list[Encoding]


def check_not_empty(texts: list[str]) -> None:
    """`InputError` for an empty (or blank) text, naming which one."""
    for index, text in enumerate(texts):
        if not text or not text.strip():
            raise InputError(f"input {index + 1} is empty; give some text to process")


class TextEncoder:
    """Encodes texts with a private copy of the model's tokenizer (so its truncation settings are ours)."""

    def __init__(self, model, truncation: bool = True):
        if model.tokenizer is None:
            raise InputError("this model has no tokenizer (no tokenizer.json in its checkpoint); save the model "
                             "with its tokenizer attached (model.attach_tokenizer(lmforge.Tokenizer.load(...)))")
        self.tokenizer = model.tokenizer
        self.backend = Backend.from_str(model.tokenizer.backend.to_str())
        self.backend.no_padding()
        self.backend.no_truncation()
        self.truncation = truncation
        self.pad_id = self.tokenizer.padding_id
        self.device = model.device

    def encode(self, texts: list[str], max_length: int, left_pad: bool = False,
               truncate_left: bool = False, add_special_tokens: bool = True) -> Batch:
        """Tokenize, cut inputs longer than `max_length` tokens (warning; `InputError` when truncation is
        off), pad on the left (decoder prompts) or the right. Empty texts are an `InputError`.
        `add_special_tokens=False` for text that already holds them (a rendered chat template)."""
        check_not_empty(texts)
        encodings = self.backend.encode_batch(texts, add_special_tokens=add_special_tokens)
        too_long = [i for i, e in enumerate(encodings) if len(e.ids) > max_length]
        if too_long:
            first = too_long[0]
            message = (f"input {first + 1} has {len(encodings[first].ids)} tokens but the model accepts at most "
                       f"{max_length}")
            if not self.truncation:
                raise InputError(f"{message}; shorten it, or allow truncation (drop --no-truncate)")
            more = f" (and {len(too_long) - 1} more)" if len(too_long) > 1 else ""
            warnings.warn(f"{message}{more}; truncated to {max_length} tokens", TruncationWarning, stacklevel=3)
            self.backend.enable_truncation(max_length, direction="left" if truncate_left else "right")
            try:
                for i in too_long:
                    encodings[i] = self.backend.encode(texts[i], add_special_tokens=add_special_tokens)
            finally:
                self.backend.no_truncation()
        return self._pad(encodings, left_pad)

    def _pad(self, encodings: list[Encoding], left: bool) -> Batch:
        width = max(len(e.ids) for e in encodings)
        ids = torch.full((len(encodings), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(encodings), width, dtype=torch.long)
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            span = slice(width - n, width) if left else slice(0, n)
            ids[row, span] = torch.tensor(encoding.ids, dtype=torch.long)
            mask[row, span] = 1
        return Batch(ids.to(self.device), mask.to(self.device), encodings)

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
