"""Decoder-only (GPT-like) models: one causal stack."""

from __future__ import annotations

import torch

from ..config import ModelConfig
from ..nn.cache import KVCache
from ..nn.stack import Stack
from .base import LmforgeModel, ModelOutput


class DecoderModel(LmforgeModel):
    """A causal stack over the token embedding; heads: causal LM, sequence/token classification, embedding."""

    def __init__(self, config: ModelConfig, task: str = "causal-lm"):
        super().__init__(config, task)
        self.decoder = Stack(config, config.n_layers, causal=True)
        self.init_weights()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, cache: KVCache | None = None,
                token_type_ids: torch.Tensor | None = None, last_only: bool = False) -> ModelOutput:
        """input_ids (B, T); attention_mask (B, past+T) covering cached tokens. Causal-LM labels are
        the input ids themselves (shifted inside); -100 marks positions without a loss.
        `last_only`: logits of the last position only (B, 1, V), as decoding needs."""
        past = cache.length if cache is not None else 0
        self.check_input_ids(input_ids, past)
        hidden = self.decoder(self.embed(input_ids), attention_mask, token_type_ids, cache=cache)  # (B, T, d)
        mask = attention_mask[:, past:] if attention_mask is not None else None
        return self.finish(hidden, mask, labels, cache=cache, last_only=last_only)

    def decode_step(self, input_ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """One decoding step over a static cache (`KVCache.start_static`): input_ids (B, 1), the tokens
        just picked, -> next-token logits (B, V) in float32. No input checks and no host synchronisation (the
        step a compiled decoder runs, see `lmforge.infer.compiled`)."""
        hidden = self.decoder(self.embed(input_ids), cache=cache)  # (B, 1, d)
        return self.finish(hidden, None, None, cache=cache, last_only=True).logits[:, -1].float()
