"""How each fine-tuning task scores a model's outputs on labelled batches: a `Scorer` is built from the model,
fed every batch's output with `update` and read with `compute`, keeping only the streaming accumulators of
lmforge.finetune.metrics (never a dataset's logits). Each `finetune.tasks.TASKS` entry names its scorer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from ..infer.generate import generate
from ..labels import IGNORE_INDEX
from .metrics import ClassificationMetrics, EntityMetrics, GenerationMetrics, LanguageModelMetrics


@dataclass(frozen=True)
class ScoreOptions:
    """What a scorer may be asked for besides the batches."""

    max_new_tokens: int = 64  # generation: tokens generated per example
    num_beams: int = 1  # generation: greedy (1) or beam search
    rouge: bool = False  # generation: ROUGE-1/2/L besides BLEU and chrF


class Scorer(ABC):
    """The task's metrics over the batches given to `update` (the loss is accumulated by the caller)."""

    def __init__(self, model, options: ScoreOptions):
        self.model, self.options = model, options

    @abstractmethod
    def update(self, output, batch: dict, count: int) -> None:
        """One batch: the model's `output` on `batch`, whose mean loss averaged over `count` labels."""

    @abstractmethod
    def compute(self) -> dict:
        """The metrics so far."""


class ClassScorer(Scorer):
    """Accuracy, macro-F1 and per-class scores of the argmax class."""

    def __init__(self, model, options: ScoreOptions):
        super().__init__(model, options)
        self.scores = ClassificationMetrics(dict(enumerate(label_names(model))))

    def update(self, output, batch: dict, count: int) -> None:
        self.scores.update(output.logits.argmax(-1), batch["labels"])

    def compute(self) -> dict:
        return self.scores.compute()


class EntityScorer(Scorer):
    """Entity precision/recall/F1 (seqeval) of the word-level argmax tags."""

    def __init__(self, model, options: ScoreOptions):
        super().__init__(model, options)
        self.names, self.scores = label_names(model), EntityMetrics()

    def update(self, output, batch: dict, count: int) -> None:
        self.scores.update(*word_tags(output.logits.argmax(-1), batch["labels"], self.names))

    def compute(self) -> dict:
        return self.scores.compute()


class GenerationScorer(Scorer):
    """sacreBLEU and chrF (and ROUGE when asked) of generated text against the label text."""

    def __init__(self, model, options: ScoreOptions):
        super().__init__(model, options)
        self.scores = GenerationMetrics(rouge=options.rouge)

    def update(self, output, batch: dict, count: int) -> None:
        self.scores.update(generated_texts(self.model, batch, self.options.max_new_tokens, self.options.num_beams),
                           label_texts(self.model, batch["labels"]))

    def compute(self) -> dict:
        return self.scores.compute()


class PerplexityScorer(Scorer):
    """Token-weighted loss and perplexity (also as eval_ppl, the Trainer's name)."""

    def __init__(self, model, options: ScoreOptions):
        super().__init__(model, options)
        self.scores = LanguageModelMetrics()

    def update(self, output, batch: dict, count: int) -> None:
        self.scores.update(float(output.loss), count)

    def compute(self) -> dict:
        result = self.scores.compute()
        return {**result, "eval_ppl": result["perplexity"]}


def label_names(model) -> list[str]:
    """The model's class names in id order."""
    names = model.config.label_names
    return [names[i] for i in range(len(names))]


def word_tags(predicted: torch.Tensor, labels: torch.Tensor, names: list[str]) -> tuple[list, list]:
    """Word-level tag strings (the first sub-token of each word carries its label) of predictions and gold."""
    predicted_tags, gold_tags = [], []
    for row_predicted, row_labels in zip(predicted.tolist(), labels.tolist()):
        words = [(p, g) for p, g in zip(row_predicted, row_labels) if g != IGNORE_INDEX]
        predicted_tags.append([names[p] for p, _ in words])
        gold_tags.append([names[g] for _, g in words])
    return predicted_tags, gold_tags


def label_texts(model, ids: torch.Tensor) -> list[str]:
    """Decode rows of ids, dropping -100, padding and special tokens (and everything after EOS)."""
    tokenizer, eos = model.tokenizer, set(model.config.eos_ids)
    texts = []
    for row in ids.tolist():
        kept = [t for t in row if t != IGNORE_INDEX]
        end = next((i for i, t in enumerate(kept) if i > 0 and t in eos), None)
        if end is not None:
            kept = kept[:end]
        texts.append(tokenizer.decode(kept, skip_special_tokens=True).strip())
    return texts


def generated_texts(model, batch: dict, max_new_tokens: int, num_beams: int) -> list[str]:
    """The model's generations for the batch's sources, decoded like `label_texts`."""
    out = generate(model, batch["input_ids"], batch["attention_mask"], max_new_tokens=max_new_tokens,
                   num_beams=num_beams)  # (B, 1 + new): the decoder start token, then the new tokens
    return label_texts(model, out[:, 1:])
