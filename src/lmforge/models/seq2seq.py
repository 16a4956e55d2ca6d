"""Encoder-decoder (BART/T5-like) models: an encoder stack and a causal decoder stack with cross-attention."""

from __future__ import annotations

import torch

from ..config import ModelConfig
from ..errors import InputError
from ..nn.cache import KVCache
from ..nn.stack import Stack
from ..labels import IGNORE_INDEX
from .base import LmforgeModel, ModelOutput


def shift_right(labels: torch.Tensor, start_id: int, pad_id: int) -> torch.Tensor:
    """Decoder inputs for teacher forcing: [start, y0, ..., y_{n-2}], with -100 replaced by pad. (B, T) -> (B, T)."""
    shifted = labels.new_full(labels.shape, start_id)
    shifted[:, 1:] = labels[:, :-1]
    return shifted.masked_fill(shifted == IGNORE_INDEX, pad_id)


class EncoderDecoderModel(LmforgeModel):
    """Encoder and decoder stacks sharing one token embedding; heads: seq2seq LM, embedding (encoder mean)."""

    def __init__(self, config: ModelConfig, task: str = "seq2seq-lm"):
        super().__init__(config, task)
        self.encoder = Stack(config, config.n_layers, causal=False)
        self.decoder = Stack(config, config.decoder_layers, causal=True, cross=True)
        self.init_weights()

    @property
    def decoder_start_id(self) -> int:
        c = self.config
        return c.decoder_start_token_id if c.decoder_start_token_id is not None else c.pad_token_id

    @property
    def inputs_from_labels(self) -> bool:
        return not self.head.encoder_only  # the decoder inputs are the labels shifted right

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S) source ids -> encoder hidden states (B, S, d)."""
        self.check_input_ids(input_ids)
        return self.encoder(self.embed(input_ids), attention_mask)

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, decoder_input_ids: torch.Tensor | None = None,
                decoder_attention_mask: torch.Tensor | None = None,
                encoder_hidden_states: torch.Tensor | None = None, cache: KVCache | None = None,
                last_only: bool = False) -> ModelOutput:
        """input_ids/attention_mask (B, S): the source. decoder_input_ids (B, T), or built from labels
        (B, T) by shifting right. encoder_hidden_states skips the encoder (reused while decoding).
        `last_only`: logits of the last decoder position only (B, 1, V), as decoding needs."""
        if encoder_hidden_states is None:
            if input_ids is None:
                raise InputError("give input_ids (or encoder_hidden_states) to an encoder-decoder model")
            encoder_hidden_states = self.encode(input_ids, attention_mask)  # (B, S, d)
        if self.head.encoder_only:
            return self.finish(encoder_hidden_states, attention_mask, None, encoder_hidden=encoder_hidden_states)
        if decoder_input_ids is None:
            if labels is None:
                raise InputError("give decoder_input_ids or labels to an encoder-decoder model")
            decoder_input_ids = shift_right(labels, self.decoder_start_id, self.config.padding_id)
        past = cache.length if cache is not None else 0
        self.check_input_ids(decoder_input_ids, past, name="decoder_input_ids")
        hidden = self.decoder(self.embed(decoder_input_ids), decoder_attention_mask, context=encoder_hidden_states,
                              context_mask=attention_mask, cache=cache)  # (B, T, d)
        return self.finish(hidden, decoder_attention_mask, labels, encoder_hidden=encoder_hidden_states,
                           cache=cache, last_only=last_only)
