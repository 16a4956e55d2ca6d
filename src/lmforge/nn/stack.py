"""A stack of blocks with its embeddings: the whole of a decoder-only model, an encoder, or a decoder."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import ModelConfig
from ..errors import InputError
from .block import Block
from .cache import KVCache
from .dropout import Dropout
from .masks import key_padding_mask, self_attention_mask, with_bias
from .norms import make_norm
from .positions import LearnedPositions, RelativePositionBias, SinusoidalPositions, new_position_ids
from .rotary import RotaryEmbedding


class Stack(nn.Module):
    """Positions, token types, embedding norm, `n_layers` blocks and a final norm.

    `causal` makes it a decoder (each token sees only earlier ones); `cross` adds cross-attention
    to an encoder's output. The token embedding itself belongs to the model (it is shared by the
    encoder, the decoder and a tied output head), so the stack receives embedded tokens.
    Masks and position biases are built here once and shared by every block.
    """

    def __init__(self, config: ModelConfig, n_layers: int, causal: bool, cross: bool = False):
        super().__init__()
        c = config
        self.causal = causal
        self.max_positions = c.max_positions
        self.embed_scale = math.sqrt(c.d_model) if c.scale_embeddings else 1.0
        self.positions: nn.Module | None = None
        self.relative_bias: RelativePositionBias | None = None
        self.rotary = RotaryEmbedding(c) if c.positions == "rotary" else None  # applied inside attention
        if c.positions == "learned":
            self.positions = LearnedPositions(c.max_positions, c.d_model, c.position_offset)
        elif c.positions == "sinusoidal":
            self.positions = SinusoidalPositions(c.max_positions, c.d_model)
        elif c.positions == "relative":
            self.relative_bias = RelativePositionBias(c.n_heads, c.relative_buckets, c.relative_max_distance,
                                                      bidirectional=not causal)
        self.token_types = nn.Embedding(c.type_vocab_size, c.d_model) if c.type_vocab_size else None
        self.embed_norm = make_norm(c.norm, c.d_model, c.norm_eps) if c.embedding_norm else None
        self.blocks = nn.ModuleList(Block(c, cross, c.window_of(i) if causal else None, self.rotary)
                                    for i in range(n_layers))
        self.final_norm = make_norm(c.norm, c.d_model, c.norm_eps) if c.final_norm else None
        self.dropout = Dropout(c.dropout)

    def forward(self, embeds: torch.Tensor, key_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None, cache: KVCache | None = None) -> torch.Tensor:
        """embeds: (B, T, d_model) token embeddings of the new tokens.
        key_mask: (B, past+T) 1 for real tokens, 0 for padding (None: all real), covering cached tokens.
        context, context_mask: encoder output (B, S, d_model) and its (B, S) mask, for cross-attention.
        Returns hidden states (B, T, d_model)."""
        batch, length, _ = embeds.shape
        static = cache.static if cache is not None else None  # one token per row, positions and mask in tensors
        past = cache.length if cache is not None and static is None else 0
        if key_mask is not None and key_mask.shape != (batch, past + length):
            raise InputError(f"attention_mask has shape {tuple(key_mask.shape)} but ({batch}, {past + length}) "
                             "was expected (batch, cached + new tokens)")
        x = embeds * self.embed_scale if self.embed_scale != 1.0 else embeds
        # static: a copy of this step's positions (the cache changes its own in place; rotary keys on the tensor)
        position_ids = static.positions.clone() if static is not None else \
            new_position_ids(key_mask, past, length, embeds.device)  # (B|1, T)
        if self.positions is not None:
            x = x + self.positions(position_ids)
        if self.token_types is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros(batch, length, dtype=torch.long, device=embeds.device)
            x = x + self.token_types(token_type_ids)
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        x = self.dropout(x) if self.training else x

        windows = {block.window for block in self.blocks}
        if static is not None:
            masks = {window: (static.mask(window), False) for window in windows}
        else:
            masks = {window: self._self_mask(length, key_mask, past, window, x)
                     for window in windows}  # built once per distinct window
        cross_mask = key_padding_mask(context_mask)

        for index, block in enumerate(self.blocks):
            mask, is_causal = masks[block.window]
            x = block(x, mask, is_causal, context, cross_mask, cache, index, position_ids)
        if cache is not None:
            cache.advance(length)
        if self.final_norm is not None:
            x = self.final_norm(x)
            x = self.dropout(x) if self.training else x
        return x

    def _self_mask(self, length: int, key_mask: torch.Tensor | None, past: int, window: int | None,
                   x: torch.Tensor) -> tuple[torch.Tensor | None, bool]:
        """(mask, is_causal) for self-attention of `length` new tokens (x: their (B, T, d) states, for device
        and dtype), with the relative-position bias folded in when the stack has one."""
        device = x.device
        mask, is_causal = self_attention_mask(length, key_mask, self.causal, past, device, window)
        if self.relative_bias is not None:
            if is_causal:  # the bias must carry the causal mask itself
                mask, is_causal = self_attention_mask(length, None, True, past, device, window, explicit=True)
            bias = self.relative_bias(length, past + length, past).to(x.dtype)  # (1, H, T, S)
            mask = with_bias(mask, bias)
        return mask, is_causal
