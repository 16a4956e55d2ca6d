"""Run a model one decoding step at a time, over a preallocated KV cache (or, for checking, without one).

A stepper hides the difference between the families: `prefill()` runs the prompt (decoder-only)
or encodes the source once and feeds the decoder start token (encoder-decoder); `step(tokens)`
feeds one new token per row. Both return next-token logits (B, V) in float32. Without a cache
(`use_cache=False`) every step recomputes the whole sequence: slow, but an independent check.
"""

from __future__ import annotations

import contextlib

import torch

from ..errors import InputError
from ..models.heads import LMHead
from ..nn.decoding_linear import decoding_products


class _Stepper:
    """What both families share: the growing decoder input (cached, or the whole sequence)."""

    model = None
    cache = None

    def _init_inputs(self, start: torch.Tensor, max_len: int, use_cache: bool) -> None:
        self.start = start  # (B, P): the tokens every sequence starts with
        self.seen = start  # (B, T) every token so far; only kept when there is no cache
        self.cache = self.model.new_cache(start.shape[0], max_len) if use_cache else None

    @staticmethod
    def _products(ids: torch.Tensor):
        """The products a decoder call over `ids` (B, T) uses: the blocks' decoding copies serve one new token a
        row; several tokens a row (a prompt, or the whole sequence without a cache) are multiplied once, by the
        plain matrices (packing every matrix for a short prompt took longer than it saved, and a copy of the
        weights stayed in memory that batch-1 decoding never reads again)."""
        return decoding_products() if ids.shape[1] == 1 else contextlib.nullcontext()

    def _next_input(self, tokens: torch.Tensor) -> torch.Tensor:  # (B,) -> (B, 1) or (B, T)
        if self.cache is not None:
            return tokens[:, None]
        self.seen = torch.cat([self.seen, tokens[:, None]], dim=1)
        return self.seen

    def _select(self, index: torch.Tensor) -> None:
        if self.cache is not None:
            resized = index.numel() != self.cache.keys.shape[1]
            self.cache.reorder(index)
            if resized:  # e.g. B -> B * num_beams rows: the output matrix layout for that many
                self.cache.output_weight = self.model.decoding_weight(index.numel())
        else:
            self.seen = self.seen.index_select(0, index)

    def reorder(self, index: torch.Tensor) -> None:
        """Beam search: rows move only among the beams of one input, whose prompts/sources are equal,
        so only the decoder state changes."""
        self._select(index)


class DecoderOnlyStepper(_Stepper):
    """Decoder-only: the prompt (left-padded in a batch) is the start of every sequence."""

    def __init__(self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, max_new_tokens: int,
                 use_cache: bool = True):
        batch, prompt_len = input_ids.shape
        self.model = model
        self._init_inputs(input_ids, prompt_len + max_new_tokens, use_cache)
        self.prompt_mask = attention_mask  # (B, P) or None
        self.mask = None  # (B, P + max_new) ones after the prompt; None when nothing is padded
        if attention_mask is not None and not bool(attention_mask.all()):
            self.mask = torch.ones(batch, prompt_len + max_new_tokens, dtype=torch.long, device=input_ids.device)
            self.mask[:, :prompt_len] = attention_mask
        self.length = 0  # tokens fed so far

    def _run(self, ids: torch.Tensor, new: int) -> torch.Tensor:
        self.length += new
        mask = None if self.mask is None else self.mask[:, :self.length]
        with self._products(ids):
            out = self.model(ids, attention_mask=mask, cache=self.cache, last_only=True)
        return out.logits[:, -1].float()  # (B, V)

    def prefill(self) -> torch.Tensor:
        return self._run(self.start, self.start.shape[1])

    def step(self, tokens: torch.Tensor) -> torch.Tensor:  # (B,) -> (B, V)
        return self._run(self._next_input(tokens), 1)

    def expand(self, index: torch.Tensor) -> None:
        """Keep (repeat) batch rows `index` of everything, e.g. B -> B * num_beams."""
        self._select(index)
        if self.mask is not None:
            self.mask = self.mask.index_select(0, index)


class EncoderDecoderStepper(_Stepper):
    """Encoder-decoder: the source is encoded once; every sequence starts with the decoder start token.
    Cross-attention keys/values are computed on the first step and kept in the cache."""

    def __init__(self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, max_new_tokens: int,
                 use_cache: bool = True):
        self.model, self.source = model, input_ids  # (B, S)
        self.source_mask = None if attention_mask is None or bool(attention_mask.all()) else attention_mask  # (B, S)
        self.encoded = None  # (B, S, d), computed by prefill()
        start = torch.full((input_ids.shape[0], 1), model.decoder_start_id, dtype=torch.long, device=input_ids.device)
        self._init_inputs(start, 1 + max_new_tokens, use_cache)
        self.prompt_mask = None

    def _decode(self, ids: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, V)
        with self._products(ids):
            out = self.model(attention_mask=self.source_mask, encoder_hidden_states=self.encoded,
                         decoder_input_ids=ids, cache=self.cache, last_only=True)
        return out.logits[:, -1].float()

    def prefill(self) -> torch.Tensor:
        self.encoded = self.model.encode(self.source, self.source_mask)  # the encoder runs once
        return self._decode(self.start)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._decode(self._next_input(tokens))

    def expand(self, index: torch.Tensor) -> None:
        self._select(index)
        self.encoded = self.encoded.index_select(0, index)
        if self.source_mask is not None:
            self.source_mask = self.source_mask.index_select(0, index)


def make_stepper(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, max_new_tokens: int,
                 use_cache: bool = True):
    """The stepper for the model's family; `InputError` when its head cannot generate."""
    check_generating_head(model)
    stepper = EncoderDecoderStepper if model.config.is_encoder_decoder else DecoderOnlyStepper
    return stepper(model, input_ids, attention_mask, max_new_tokens, use_cache)


def check_generating_head(model) -> None:
    """`InputError` unless the model's head predicts next tokens."""
    if not isinstance(model.head, LMHead):
        raise InputError(f"generation needs a causal-lm (decoder) or seq2seq-lm (encoder-decoder) head, but this "
                         f"model has a {model.task} head; load a checkpoint trained for generation")
