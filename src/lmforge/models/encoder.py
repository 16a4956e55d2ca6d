"""Encoder-only (BERT-like) models: one bidirectional stack, optionally a pooler."""

from __future__ import annotations

import torch

from ..config import ModelConfig
from ..nn.stack import Stack
from ..labels import IGNORE_INDEX
from .base import LmforgeModel, ModelOutput
from .heads import Pooler


class EncoderModel(LmforgeModel):
    """A bidirectional stack; heads: masked LM, sequence/token classification, embedding."""

    def __init__(self, config: ModelConfig, task: str = "masked-lm"):
        super().__init__(config, task)
        self.encoder = Stack(config, config.n_layers, causal=False)
        self.pooler = Pooler(config) if config.pooler else None
        self.init_weights()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None,
                labelled_only: bool = False) -> ModelOutput:
        """input_ids (B, T), attention_mask (B, T), token_type_ids (B, T) segment ids (BERT).
        `labelled_only` (a head whose positions are independent, the masked LM, with labels): logits (N, V) for the N labelled positions only, in
        row-major order; the loss is the same, without the head's cost at the other ~85% of positions."""
        self.check_input_ids(input_ids)
        hidden = self.encoder(self.embed(input_ids), attention_mask, token_type_ids)  # (B, T, d)
        pooled = self.pooler(hidden) if (self.pooler is not None and self.head.uses_pooler) else None
        if labelled_only and labels is not None and self.head.independent_positions:
            chosen = labels != IGNORE_INDEX  # (B, T)
            hidden, labels = hidden[chosen], labels[chosen]  # (N, d), (N,)
        return self.finish(hidden, attention_mask, labels, pooled=pooled)
