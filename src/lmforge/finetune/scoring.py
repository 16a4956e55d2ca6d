"""Scores of a model on batches of labelled examples for its task, streaming: batches go through the
model one at a time and only the metric accumulators of lmforge.finetune.metrics survive them (never a
dataset's logits). The fine-tuning loop calls `batch_metrics` on its validation set; `lmforge evaluate`
and the distillation report call it too.
"""

from __future__ import annotations

from typing import Iterable

import torch

from ..data import IGNORE_INDEX
from ..errors import InputError
from ..infer.generate import generate
from .metrics import ClassificationMetrics, EntityMetrics, GenerationMetrics, LanguageModelMetrics


def batch_metrics(model, task: str, batches: Iterable[dict], *, max_new_tokens: int = 64, num_beams: int = 1,
                  rouge: bool = False) -> dict:
    """Metrics of `model` over `batches` (collated dicts with labels) for fine-tuning `task` (classify, tag,
    seq2seq, clm). Every task reports `eval_loss` (mean over labelled positions or examples) beside its own:
    accuracy, macro_f1 and per_class (classify); entity precision/recall/f1 with seqeval (tag); sacreBLEU
    bleu and chrf, plus ROUGE-1/2/L with `rouge` (seq2seq, greedy or beam decoding); perplexity (clm)."""
    names = label_names(model) if task in ("classify", "tag") else None
    scores = {"classify": ClassificationMetrics(dict(enumerate(names or []))), "tag": EntityMetrics(),
              "seq2seq": GenerationMetrics(rouge=rouge), "clm": LanguageModelMetrics()}[task]
    loss = LanguageModelMetrics()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                output = model(**batch)
                labels = batch["labels"]
                count = model.head.scored_labels(labels)  # what the batch's mean loss averaged over
                loss.update(float(output.loss), count)
                if task == "classify":
                    scores.update(output.logits.argmax(-1), labels)
                elif task == "tag":
                    scores.update(*_word_tags(output.logits.argmax(-1), labels, names))
                elif task == "seq2seq":
                    scores.update(_generated_texts(model, batch, max_new_tokens, num_beams), _texts(model, labels))
                else:
                    scores.update(float(output.loss), count)
    finally:
        model.train(was_training)
    if loss.tokens == 0:
        raise InputError("the evaluation data holds no labelled examples; give a non-empty file")
    result = {"eval_loss": loss.compute()["loss"], **scores.compute()}
    if task == "clm":
        result["eval_ppl"] = result["perplexity"]
    return result


def label_names(model) -> list[str]:
    names = model.config.label_names
    return [names[i] for i in range(len(names))]


def _word_tags(predicted: torch.Tensor, labels: torch.Tensor, names: list[str]) -> tuple[list, list]:
    """Word-level tag strings (the first sub-token of each word carries its label) of predictions and gold."""
    predicted_tags, gold_tags = [], []
    for row_predicted, row_labels in zip(predicted.tolist(), labels.tolist()):
        words = [(p, g) for p, g in zip(row_predicted, row_labels) if g != IGNORE_INDEX]
        predicted_tags.append([names[p] for p, _ in words])
        gold_tags.append([names[g] for _, g in words])
    return predicted_tags, gold_tags


def _texts(model, ids: torch.Tensor) -> list[str]:
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


def _generated_texts(model, batch: dict, max_new_tokens: int, num_beams: int) -> list[str]:
    out = generate(model, batch["input_ids"], batch["attention_mask"], max_new_tokens=max_new_tokens,
                   num_beams=num_beams)  # (B, 1 + new): the decoder start token, then the new tokens
    return _texts(model, out[:, 1:])
