"""Task heads: what turns hidden states into logits, and what is compared with labels, for each task.

A head owns its forward, its loss and the positions that training and evaluation compare (distillation's
soft targets, evaluation's label count). `HEADS` maps each model task name to its head class; the task
names, the tasks of each family and each family's pretraining task all derive from it, so a new head
(a new task) is one class here and one entry in `HEADS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..config import FAMILIES, ModelConfig
from ..errors import InputError
from ..labels import IGNORE_INDEX
from ..nn.loss import cross_entropy
from ..nn.mlp import ACTIVATION_FUNCTIONS
from . import cpu_decoding


@dataclass
class HeadInputs:
    """What a head may read besides the last hidden states (B, T, d)."""

    embedding: torch.Tensor  # (V, d) the token embedding, for tied output matrices
    mask: torch.Tensor | None = None  # (B, T) 1 for real tokens
    pooled: torch.Tensor | None = None  # (B, d) the backbone's pooler output
    encoder_hidden: torch.Tensor | None = None  # (B, S, d) an encoder-decoder's encoder output
    decoding_weight: torch.Tensor | None = None  # the output matrix in a decoding layout (see cpu_decoding)


class Head(nn.Module, ABC):
    """Abstract base of the task heads. Subclasses set `task` and `families` and implement `forward`."""

    task: ClassVar[str]
    families: ClassVar[tuple[str, ...]]  # the model families that offer this head
    language_model: ClassVar[bool] = False  # logits over the vocabulary: decoding may ask for the last position only
    uses_pooler: ClassVar[bool] = False  # reads the backbone's pooler output
    encoder_only: ClassVar[bool] = False  # an encoder-decoder needs no decoder pass for it
    independent_positions: ClassVar[bool] = False  # unlabelled positions may be dropped before the head
    named_classes: ClassVar[bool] = False  # outputs are classes: num_labels and id2label apply
    sequence_labels: ClassVar[bool] = False  # one label per sequence (not per position)

    @abstractmethod
    def forward(self, hidden: torch.Tensor, inputs: HeadInputs) -> torch.Tensor:
        """(B, T, d) last hidden states -> this head's logits."""

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over the labels that are not IGNORE_INDEX (-100)."""
        if logits.shape[:-1] != labels.shape:
            raise InputError(f"labels have shape {tuple(labels.shape)} but the {self.task} head "
                             f"expects {tuple(logits.shape[:-1])}")
        return cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), IGNORE_INDEX)

    def aligned(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits and the labels they predict, position for position (evaluation's accuracy)."""
        return logits, labels

    def scored_labels(self, labels: torch.Tensor) -> int:
        """How many labels of a batch the loss averages over (evaluation weights batch losses by it)."""
        return int((labels != IGNORE_INDEX).sum())

    def soft_positions(self, batch: dict) -> torch.Tensor | None:
        """Where a teacher's and a student's logits are compared (bool over the logits' leading
        dimensions; None: every row): by default the labelled positions."""
        return batch["labels"] != IGNORE_INDEX

    def hidden_positions(self, batch: dict) -> torch.Tensor | None:
        """Where last hidden states are compared: every real input token."""
        return real_tokens(batch)

    def decoding_weight(self, embedding: torch.Tensor, batch: int) -> torch.Tensor | None:
        """State a decoding cache of `batch` rows should carry for this head (None: nothing)."""
        return None

    @classmethod
    def new_head_config(cls, config: ModelConfig) -> ModelConfig:
        """The architecture of a model given this head anew (fine-tuning): by default `config` as it is."""
        return config


def real_tokens(batch: dict) -> torch.Tensor | None:
    """The batch's attention mask as bool (B, T), or None when it has none (every token is real)."""
    mask = batch.get("attention_mask")
    return None if mask is None else mask.bool()


class LMHead(Head):
    """Next-token logits over the vocabulary, tied to the token embedding or with its own matrix
    (the base of `CausalLMHead` and `Seq2SeqLMHead`).

    T5 rescales hidden states by d_model**-0.5 before a tied head; BART adds a fixed
    `final_logits_bias` (a buffer, not trained, as in the original).
    """

    language_model = True

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.tied = config.tie_embeddings
        self.weight = None if self.tied else nn.Parameter(torch.empty(config.vocab_size, config.d_model))
        self.scale = config.d_model ** -0.5 if (self.tied and config.scale_tied_logits) else 1.0
        if config.final_logits_bias:
            self.register_buffer("final_logits_bias", torch.zeros(config.vocab_size))
        else:
            self.final_logits_bias = None
        self._decoding = cpu_decoding.DecodingCopies()
        self.quantized: nn.Module | None = None  # an int8 copy of the output matrix (`models.weight_formats`)

    def forward(self, hidden: torch.Tensor, inputs: HeadInputs) -> torch.Tensor:
        """hidden (B, T, d) -> logits (B, T, V), through `cpu_decoding.project` (the fastest product for
        a few rows on the CPU; `inputs.decoding_weight` is this head's matrix in a decoding layout), or through
        the int8 copy of the matrix when the model was loaded with dtype="int8"."""
        hidden = hidden * self.scale if self.scale != 1.0 else hidden
        if self.quantized is not None:
            logits = self.quantized(hidden)  # (B, T, V)
        else:
            logits = cpu_decoding.project(hidden, self.output_matrix(inputs.embedding), inputs.decoding_weight,
                                          self._decoding)
        return logits if self.final_logits_bias is None else logits + self.final_logits_bias

    def output_matrix(self, embedding: torch.Tensor) -> torch.Tensor:  # (V, d)
        return embedding if self.tied else self.weight

    def decoding_weight(self, embedding: torch.Tensor, batch: int) -> torch.Tensor | None:
        """The output matrix in the layout that decodes `batch` rows here fastest, when one gains (see
        `cpu_decoding`): (d, V) for one row, packed for 2-16; kept between generations, remade when the matrix changes."""
        matrix = self.output_matrix(embedding)
        layout = None if self.quantized is not None else cpu_decoding.decoding_layout(batch, matrix.device, matrix.dtype)
        return None if layout is None else self._decoding.of(matrix, layout)

    def _apply(self, fn, *args, **kwargs):  # .to(), .half(), .cuda(): the copy would be stale
        self._decoding.clear()
        return super()._apply(fn, *args, **kwargs)


class Seq2SeqLMHead(LMHead):
    """An encoder-decoder's decoder head: each target position is scored against its own label."""

    task = "seq2seq-lm"
    families = ("encoder-decoder",)

    def hidden_positions(self, batch: dict) -> torch.Tensor | None:
        return batch["labels"] != IGNORE_INDEX  # the decoder's target positions


class CausalLMHead(LMHead):
    """A decoder's next-token head: position t is scored against the label at t+1."""

    task = "causal-lm"
    families = ("decoder",)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of each position against the next label; the last position predicts nothing."""
        return super().loss(logits, self.shifted(labels))

    @staticmethod
    def shifted(labels: torch.Tensor) -> torch.Tensor:
        return F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)  # (B, T), no copy of the logits

    def aligned(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return logits[:, :-1], labels[:, 1:]  # (B, T-1, V): position t predicts token t+1

    def scored_labels(self, labels: torch.Tensor) -> int:
        return int((labels[:, 1:] != IGNORE_INDEX).sum())

    def soft_positions(self, batch: dict) -> torch.Tensor | None:
        return real_tokens(batch)


class MaskedLMHead(Head):
    """BERT's MLM head: dense + activation + norm, then a decoder (tied or own) with a bias.
    `input_width` (default d_model): the width of the hidden states it reads, when a narrower model (an
    ELECTRA generator) predicts through the d_model-wide token embedding; the dense layer maps it to d_model."""

    task = "masked-lm"
    families = ("encoder",)
    language_model = True
    independent_positions = True

    def __init__(self, config: ModelConfig, input_width: int | None = None):
        super().__init__()
        d = config.d_model
        self.transform = nn.Linear(input_width or d, d) if config.mlm_transform else None
        self.norm = nn.LayerNorm(d, eps=config.norm_eps) if config.mlm_transform else None
        self.act = ACTIVATION_FUNCTIONS[config.activation]
        self.weight = None if config.tie_embeddings else nn.Parameter(torch.empty(config.vocab_size, d))
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: torch.Tensor, inputs: HeadInputs) -> torch.Tensor:
        """hidden (B, T, d) (or (N, d) labelled positions) -> logits (B, T, V)."""
        if self.transform is not None:
            hidden = self.norm(self.act(self.transform(hidden)))
        return F.linear(hidden, inputs.embedding if self.weight is None else self.weight, self.bias)


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


class SequenceClassificationHead(Head):
    """Pool a vector per sequence, optionally dense + activation, then a linear classifier (a regressor
    trained with mean squared error when num_labels is 1).

    dropout -> [dense -> act -> dropout] -> out covers BERT (on the pooler output), RoBERTa (tanh),
    DistilBERT (ReLU) and GPT-2 (the last real token, no bias)."""

    task = "sequence-classification"
    families = ("decoder", "encoder")
    uses_pooler = True
    named_classes = True
    sequence_labels = True

    def __init__(self, config: ModelConfig):
        super().__init__()
        d = config.d_model
        self.regression = config.num_labels == 1
        self.how = config.classifier_pool
        p = config.dropout if config.classifier_dropout is None else config.classifier_dropout
        self.dropout = nn.Dropout(p)
        self.dense = nn.Linear(d, d) if config.classifier_hidden_act else None
        self.act = ACTIVATION_FUNCTIONS[config.classifier_hidden_act] if config.classifier_hidden_act else None
        self.out = nn.Linear(d, config.num_labels, bias=config.classifier_bias)

    def forward(self, hidden: torch.Tensor, inputs: HeadInputs) -> torch.Tensor:
        """hidden (B, T, d), inputs.pooled (B, d) from the backbone's pooler -> logits (B, num_labels)."""
        x = inputs.pooled if self.how == "pooler" else pool(hidden, inputs.mask, self.how)
        x = self.dropout(x)
        if self.dense is not None:
            x = self.dropout(self.act(self.dense(x)))
        return self.out(x)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over classes; mean squared error for a one-output regressor."""
        if self.regression:
            return F.mse_loss(logits.squeeze(-1).float(), labels.float())
        return super().loss(logits, labels)

    def scored_labels(self, labels: torch.Tensor) -> int:
        return labels.numel()  # one label per sequence, every one scored

    def soft_positions(self, batch: dict) -> torch.Tensor | None:
        return None  # one row of logits per sequence

    @classmethod
    def new_head_config(cls, config: ModelConfig) -> ModelConfig:
        """A decoder's new classifier reads the last real token (in a causal model only the last position has
        seen the whole text), as GPT-2's does."""
        if config.family == "decoder" and config.classifier_pool == "first":
            return config.replace(classifier_pool="last")
        return config


class TokenClassificationHead(Head):
    """A label per token: dropout then linear."""

    task = "token-classification"
    families = ("decoder", "encoder")
    named_classes = True

    def __init__(self, config: ModelConfig):
        super().__init__()
        p = config.dropout if config.classifier_dropout is None else config.classifier_dropout
        self.dropout = nn.Dropout(p)
        self.out = nn.Linear(config.d_model, config.num_labels)

    def forward(self, hidden: torch.Tensor, inputs: HeadInputs) -> torch.Tensor:  # (B, T, d) -> (B, T, num_labels)
        return self.out(self.dropout(hidden))

    def soft_positions(self, batch: dict) -> torch.Tensor | None:
        return real_tokens(batch)


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


class SentenceEmbeddingHead(Head):
    """No parameters: the sentence embedding of the last hidden states (an encoder-decoder's encoder)."""

    task = "embedding"
    families = FAMILIES
    encoder_only = True

    def __init__(self, config: ModelConfig):
        super().__init__()

    def forward(self, hidden: torch.Tensor, inputs: HeadInputs) -> torch.Tensor:  # (B, T, d) -> (B, d)
        return sentence_embedding(inputs.encoder_hidden if inputs.encoder_hidden is not None else hidden, inputs.mask)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise InputError("the embedding task has no labels; use a sequence-classification head to train")

    def soft_positions(self, batch: dict) -> torch.Tensor | None:
        return None


# ---- the model-task registry: every name set of model tasks derives from it ----------------------------
HEADS: dict[str, type[Head]] = {head.task: head for head in (
    CausalLMHead, MaskedLMHead, Seq2SeqLMHead, SequenceClassificationHead, TokenClassificationHead, SentenceEmbeddingHead)}
TASKS = tuple(HEADS)
FAMILY_TASKS = {family: tuple(task for task, head in HEADS.items() if family in head.families) for family in FAMILIES}
DEFAULT_TASK = {family: tasks[0] for family, tasks in FAMILY_TASKS.items()}  # each family's pretraining head
