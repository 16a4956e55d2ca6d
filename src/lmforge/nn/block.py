"""One Transformer layer: self-attention, optional cross-attention, feed-forward; pre- or post-norm."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..config import ModelConfig
from .attention import Attention
from .cache import KVCache
from .dropout import dropout_add
from .mlp import MLP
from .norms import make_norm


class Block(nn.Module):
    """Residual sublayers. Pre-norm: x + f(norm(x)) (GPT-2, T5). Post-norm: norm(x + f(x)) (BERT, BART)."""

    def __init__(self, config: ModelConfig, cross: bool, window: int | None = None, rotary: nn.Module | None = None):
        """`window`: this layer's sliding attention window (None: all earlier tokens); `rotary`: the stack's
        rotary position module, shared by the self-attention of every block."""
        super().__init__()
        c = config
        self.window = window

        def attention(is_cross: bool) -> Attention:
            return Attention(c.d_model, c.n_heads, c.head_dim, c.use_qkv_bias, c.attention_dropout,
                             c.scale_attention, cross=is_cross, n_kv_heads=c.kv_heads, out_bias=c.use_out_bias,
                             qk_norm_eps=c.norm_eps if c.qk_norm else None,
                             rotary=None if is_cross else rotary)

        self.pre_norm = c.norm_placement == "pre"
        self.self_attn = attention(False)
        self.attn_norm = make_norm(c.norm, c.d_model, c.norm_eps)
        self.cross_attn = attention(True) if cross else None
        self.cross_norm = make_norm(c.norm, c.d_model, c.norm_eps) if cross else None
        self.mlp = MLP(c.d_model, c.d_ff, c.activation, c.gated_mlp, c.use_mlp_bias, c.activation_dropout)
        self.mlp_norm = make_norm(c.norm, c.d_model, c.norm_eps)
        self.dropout = c.dropout  # on each sublayer's output, added to the residual

    def _residual(self, x: torch.Tensor, norm: nn.Module, sublayer: Callable[[torch.Tensor], torch.Tensor]):
        if self.pre_norm:
            return dropout_add(sublayer(norm(x)), x, self.dropout, self.training)
        return norm(dropout_add(sublayer(x), x, self.dropout, self.training))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, is_causal: bool,
                context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None,
                cache: KVCache | None = None, layer: int = 0,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, T, d_model) -> (B, T, d_model). context: encoder output (B, S, d_model).
        position_ids: (B|1, T) positions of the new tokens, for position-aware attention (rotary)."""
        x = self._residual(x, self.attn_norm,
                           lambda h: self.self_attn(h, mask, is_causal, cache=cache, layer=layer,
                                                    position_ids=position_ids))
        if self.cross_attn is not None:
            x = self._residual(x, self.cross_norm,
                               lambda h: self.cross_attn(h, context_mask, context=context, cache=cache, layer=layer))
        return self._residual(x, self.mlp_norm, self.mlp)
