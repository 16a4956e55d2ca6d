"""Task heads: what turns hidden states into logits for each task."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..nn.mlp import ACTIVATION_FUNCTIONS
from ..nn.norms import make_norm


class LMHead(nn.Module):
    """Next-token logits over the vocabulary, tied to the token embedding or with its own matrix.

    T5 rescales hidden states by d_model**-0.5 before a tied head; BART adds a fixed
    `final_logits_bias` (a buffer, not trained, as in the original).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.tied = config.tie_embeddings
        self.weight = None if self.tied else nn.Parameter(torch.empty(config.vocab_size, config.d_model))
        self.scale = config.d_model ** -0.5 if (self.tied and config.scale_tied_logits) else 1.0
        if config.final_logits_bias:
            self.register_buffer("final_logits_bias", torch.zeros(config.vocab_size))
        else:
            self.final_logits_bias = None
        self._decoding: tuple[tuple, torch.Tensor] | None = None  # (key of the matrix, its (d, V) copy)

    def forward(self, hidden: torch.Tensor, embedding: torch.Tensor,
                decoding_weight: torch.Tensor | None = None) -> torch.Tensor:
        """hidden (B, T, d), embedding (V, d) -> logits (B, T, V). `decoding_weight` is this head's
        matrix laid out (d, V) (see `decoding_weight`). Without autograd on the CPU, a few rows (decoding)
        take the matrix product that CPU BLAS runs fastest for their number."""
        hidden = hidden * self.scale if self.scale != 1.0 else hidden
        weight = embedding if self.tied else self.weight  # (V, d)
        rows = hidden.shape[:-1].numel()
        if torch.is_grad_enabled() or hidden.device.type != "cpu" or rows > 16:
            logits = F.linear(hidden, weight)
        elif decoding_weight is not None and rows == 1:
            logits = hidden @ decoding_weight  # (B, T, d) @ (d, V): one streaming pass over the matrix
        else:  # 2-16 rows: CPU BLAS runs the tall-skinny (V, d) @ (d, rows) faster than (rows, d) @ (d, V)
            flat = hidden.reshape(rows, -1)  # (rows, d)
            logits = (weight @ flat.T).T.contiguous().reshape(*hidden.shape[:-1], -1)
        return logits if self.final_logits_bias is None else logits + self.final_logits_bias

    def decoding_weight(self, embedding: torch.Tensor) -> torch.Tensor:
        """A detached (d, V) contiguous copy of the output matrix. For a single row, x @ W^T reads a
        (V, d) matrix as V short dot products, which CPU BLAS runs 1.5-4x slower than the same product
        from a (d, V) copy (memory-bound at full bandwidth); one-token decoding is dominated by it.

        The copy is kept for later generations (one more V x d matrix in memory) and made again
        whenever the matrix changes: a new tensor, an in-place update (its version counter), `.to()`."""
        weight = embedding if self.tied else self.weight
        key = (weight.data_ptr(), weight._version, weight.dtype, weight.device, tuple(weight.shape))
        if self._decoding is None or self._decoding[0] != key:
            self._decoding = (key, weight.detach().t().contiguous())  # the transpose is a slow strided copy
        return self._decoding[1]

    def _apply(self, fn, *args, **kwargs):  # .to(), .half(), .cuda(): the copy would be stale
        self._decoding = None
        return super()._apply(fn, *args, **kwargs)


class MaskedLMHead(nn.Module):
    """BERT's MLM head: dense + activation + norm, then a decoder (tied or own) with a bias."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        d = config.d_model
        self.transform = nn.Linear(d, d) if config.mlm_transform else None
        self.norm = nn.LayerNorm(d, eps=config.norm_eps) if config.mlm_transform else None
        self.act = ACTIVATION_FUNCTIONS[config.activation]
        self.weight = None if config.tie_embeddings else nn.Parameter(torch.empty(config.vocab_size, d))
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """hidden (B, T, d), embedding (V, d) -> logits (B, T, V)."""
        if self.transform is not None:
            hidden = self.norm(self.act(self.transform(hidden)))
        return F.linear(hidden, embedding if self.weight is None else self.weight, self.bias)


def pool(hidden: torch.Tensor, mask: torch.Tensor | None, how: str) -> torch.Tensor:
    """(B, T, d) -> (B, d): the first token, the last real token, or the mean over real tokens."""
    if how == "first":
        return hidden[:, 0]
    if mask is None:
        mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
    if how == "last":
        positions = torch.arange(hidden.shape[1], device=hidden.device)  # works for left and right padding
        last = (positions * mask).argmax(dim=-1)  # (B,)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    weights = mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


class SequenceClassificationHead(nn.Module):
    """Pool a vector per sequence, optionally dense + activation, then a linear classifier.

    dropout -> [dense -> act -> dropout] -> out covers BERT (on the pooler output), RoBERTa (tanh),
    DistilBERT (ReLU) and GPT-2 (the last real token, no bias)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        d = config.d_model
        self.how = config.classifier_pool
        p = config.dropout if config.classifier_dropout is None else config.classifier_dropout
        self.dropout = nn.Dropout(p)
        self.dense = nn.Linear(d, d) if config.classifier_hidden_act else None
        self.act = ACTIVATION_FUNCTIONS[config.classifier_hidden_act] if config.classifier_hidden_act else None
        self.out = nn.Linear(d, config.num_labels, bias=config.classifier_bias)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None, pooled: torch.Tensor | None) -> torch.Tensor:
        """hidden (B, T, d), pooled (B, d) from the backbone's pooler -> logits (B, num_labels)."""
        x = pooled if self.how == "pooler" else pool(hidden, mask, self.how)
        x = self.dropout(x)
        if self.dense is not None:
            x = self.dropout(self.act(self.dense(x)))
        return self.out(x)


class TokenClassificationHead(nn.Module):
    """A label per token: dropout then linear."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        p = config.dropout if config.classifier_dropout is None else config.classifier_dropout
        self.dropout = nn.Dropout(p)
        self.out = nn.Linear(config.d_model, config.num_labels)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, T, num_labels)
        return self.out(self.dropout(hidden))


class Pooler(nn.Module):
    """BERT's pooler (part of the backbone): dense + tanh on the first token."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.dense = nn.Linear(config.d_model, config.d_model)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, d)
        return torch.tanh(self.dense(hidden[:, 0]))


def sentence_embedding(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over real tokens, L2-normalised: (B, T, d) -> (B, d) (sentence-transformers' recipe)."""
    return F.normalize(pool(hidden, mask, "mean"), p=2, dim=-1)
