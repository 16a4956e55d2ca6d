"""Streaming metric accumulators: feed batches with `update`, read results with `compute`.

None of them keeps logits: classification keeps a confusion matrix, tagging keeps tag strings,
generation keeps output strings, language modelling keeps two sums.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch


class ClassificationMetrics:
    """Accuracy, macro-F1 and per-class precision/recall/F1 from a running confusion matrix."""

    def __init__(self, id2label: dict[int, str]):
        self.id2label = id2label
        n = len(id2label)
        self.confusion = torch.zeros(n, n, dtype=torch.long)  # (gold, predicted)

    def update(self, predictions: torch.Tensor, labels: torch.Tensor) -> None:
        """predictions, labels: (B,) class ids."""
        n = self.confusion.shape[0]
        flat = labels.long().cpu() * n + predictions.long().cpu()
        self.confusion += torch.bincount(flat, minlength=n * n).view(n, n)

    def compute(self) -> dict:
        confusion = self.confusion.double()
        true_positive = confusion.diag()
        support = confusion.sum(1)
        predicted = confusion.sum(0)
        precision = torch.where(predicted > 0, true_positive / predicted.clamp(min=1), torch.zeros_like(predicted))
        recall = torch.where(support > 0, true_positive / support.clamp(min=1), torch.zeros_like(support))
        f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12),
                         torch.zeros_like(precision))
        total = confusion.sum().item()
        return {
            "accuracy": true_positive.sum().item() / total if total else 0.0,
            "macro_f1": f1.mean().item(),
            "examples": int(total),
            "per_class": {self.id2label[i]: {"precision": precision[i].item(), "recall": recall[i].item(),
                                             "f1": f1[i].item(), "support": int(support[i].item())}
                          for i in range(len(self.id2label))},
        }


class EntityMetrics:
    """Entity-level precision/recall/F1 of BIO-tagged sequences, computed with seqeval (CoNLL semantics)."""

    def __init__(self):
        self.gold: list[list[str]] = []
        self.predicted: list[list[str]] = []

    def update(self, predicted: Sequence[Sequence[str]], gold: Sequence[Sequence[str]]) -> None:
        """One list of tag strings per sentence (word level)."""
        self.predicted.extend(list(p) for p in predicted)
        self.gold.extend(list(g) for g in gold)

    def compute(self) -> dict:
        from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score

        if not self.gold:
            return {"precision": 0.0, "recall": 0.0, "f1": 0.0, "sentences": 0}
        report = classification_report(self.gold, self.predicted, output_dict=True, zero_division=0)
        return {
            "precision": float(precision_score(self.gold, self.predicted, zero_division=0)),
            "recall": float(recall_score(self.gold, self.predicted, zero_division=0)),
            "f1": float(f1_score(self.gold, self.predicted, zero_division=0)),
            "token_accuracy": float(accuracy_score(self.gold, self.predicted)),
            "sentences": len(self.gold),
            "per_type": {k: {m: float(v) for m, v in scores.items()} for k, scores in report.items()
                         if not k.endswith(" avg")},
        }


class GenerationMetrics:
    """sacreBLEU and chrF (translation) and ROUGE-1/2/L (summarization) of generated text."""

    def __init__(self, rouge: bool = False):
        self.hypotheses: list[str] = []
        self.references: list[str] = []
        self.rouge = rouge

    def update(self, hypotheses: Sequence[str], references: Sequence[str]) -> None:
        self.hypotheses.extend(hypotheses)
        self.references.extend(references)

    def compute(self) -> dict:
        import sacrebleu

        result = {
            "bleu": sacrebleu.corpus_bleu(self.hypotheses, [self.references]).score,
            "chrf": sacrebleu.corpus_chrf(self.hypotheses, [self.references]).score,
            "examples": len(self.hypotheses),
        }
        if self.rouge:
            from rouge_score import rouge_scorer

            scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
            sums = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
            for hypothesis, reference in zip(self.hypotheses, self.references):
                for name, score in scorer.score(reference, hypothesis).items():
                    sums[name] += score.fmeasure
            result.update({name: total / max(len(self.hypotheses), 1) for name, total in sums.items()})
        return result


class LanguageModelMetrics:
    """Token-weighted mean cross-entropy and perplexity."""

    def __init__(self):
        self.loss_sum = 0.0
        self.tokens = 0

    def update(self, mean_loss: float, tokens: int) -> None:
        self.loss_sum += float(mean_loss) * tokens
        self.tokens += int(tokens)

    def compute(self) -> dict:
        loss = self.loss_sum / self.tokens if self.tokens else float("nan")
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": self.tokens}
