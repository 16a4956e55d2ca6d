"""Scores of a model on batches of labelled examples for its task, streaming: batches go through the
model one at a time and only the task's `Scorer` (lmforge.finetune.scorers) survives them. The fine-tuning
loop calls `batch_metrics` on its validation set; `lmforge evaluate` and the distillation report call it too.
"""

from __future__ import annotations

from typing import Iterable

import torch

from ..errors import InputError
from .metrics import LanguageModelMetrics
from .scorers import ScoreOptions, label_names
from .tasks import task_spec

__all__ = ["batch_metrics", "label_names"]


def batch_metrics(model, task: str, batches: Iterable[dict], *, max_new_tokens: int = 64, num_beams: int = 1,
                  rouge: bool = False) -> dict:
    """Metrics of `model` over `batches` (collated dicts with labels) for fine-tuning `task` (classify, tag,
    seq2seq, clm), by the task's scorer. Every task reports `eval_loss` (mean over labelled positions or
    examples) beside its own: accuracy, macro_f1 and per_class (classify); entity precision/recall/f1 with
    seqeval (tag); sacreBLEU bleu and chrf, plus ROUGE-1/2/L with `rouge` (seq2seq, greedy or beam
    decoding); perplexity (clm)."""
    scores = task_spec(task).scorer(model, ScoreOptions(max_new_tokens, num_beams, rouge))
    loss = LanguageModelMetrics()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                output = model(**batch)
                count = model.head.scored_labels(batch["labels"])  # what the batch's mean loss averaged over
                loss.update(float(output.loss), count)
                scores.update(output, batch, count)
    finally:
        model.train(was_training)
    if loss.tokens == 0:
        raise InputError("the evaluation data holds no labelled examples; give a non-empty file")
    return {"eval_loss": loss.compute()["loss"], **scores.compute()}
