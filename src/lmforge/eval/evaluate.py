"""Evaluate a model on labelled data for its task, streaming: batches go through the model one at a time
and only the metric accumulators of lmforge.eval.metrics survive them (never a dataset's logits).

    metrics = evaluate("runs/sst2/model", "sst2.dev.txt")                 # task from the model's head
    metrics = evaluate(model_dir, ["val.en", "val.de"], out="val.json")   # seq2seq: source and target files

`batch_metrics(model, task, batches)` is the part the fine-tuning loop calls on its validation set.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterable, Sequence

import torch

from ..data import IGNORE_INDEX, LabelSet
from ..errors import InputError
from .metrics import ClassificationMetrics, EntityMetrics, GenerationMetrics, LanguageModelMetrics


def batch_metrics(model, task: str, batches: Iterable[dict], *, max_new_tokens: int = 64, num_beams: int = 1,
                  rouge: bool = False) -> dict:
    """Metrics of `model` over `batches` (collated dicts with labels) for fine-tuning `task` (classify, tag,
    seq2seq, clm). Every task reports `eval_loss` (mean over labelled positions or examples) beside its own:
    accuracy, macro_f1 and per_class (classify); entity precision/recall/f1 with seqeval (tag); sacreBLEU
    bleu and chrf, plus ROUGE-1/2/L with `rouge` (seq2seq, greedy or beam decoding); perplexity (clm)."""
    names = _label_names(model) if task in ("classify", "tag") else None
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


def _label_names(model) -> list[str]:
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
    from ..infer.generate import generate

    out = generate(model, batch["input_ids"], batch["attention_mask"], max_new_tokens=max_new_tokens,
                   num_beams=num_beams)  # (B, 1 + new): the decoder start token, then the new tokens
    return _texts(model, out[:, 1:])


def evaluate(model, data: str | Path | Sequence[str | Path], task: str | None = None, *,
             out: str | Path | None = None, batch_size: int = 32, data_options=None, max_examples: int | None = None,
             max_new_tokens: int = 64, num_beams: int = 1, rouge: bool = False) -> dict:
    """Evaluate `model` (a checkpoint folder, lmforge or Hugging Face, or a loaded model) on `data` (the
    task's file(s); seq2seq: source and target files, or one .jsonl). `task` defaults to the one the model's
    head serves. Labels the model does not know are a DataError. Writes the metrics as JSON to `out` (when
    given, atomically) and returns them, with `task`, `model`, `data` and `wall_s`."""
    from ..checkpoint.atomic import write_text
    from ..finetune.batching import sorted_batches
    from ..finetune.model import load_model, require_tokenizer
    from ..finetune.tasks import read_task_data, subset, task_of_head, task_spec

    started = time.perf_counter()
    source = str(model) if isinstance(model, (str, Path)) else (model.config.name or "model")
    model = load_model(model) if isinstance(model, (str, Path)) else model
    tokenizer = require_tokenizer(model, source)
    if task is None:
        task = task_of_head(model.task, source)
    elif task_spec(task).head != model.task:
        raise InputError(f"{source} has a {model.task} head, but --task {task} needs a {task_spec(task).head} "
                         f"head; evaluate it with --task {task_of_head(model.task, source)} or fine-tune it for {task}")
    labels = LabelSet(_label_names(model)) if task in ("classify", "tag") else None
    examples = subset(read_task_data(task, data, tokenizer, labels, data_options), max_examples).examples
    metrics = batch_metrics(model, task, sorted_batches(examples, batch_size, tokenizer.padding_id),
                            max_new_tokens=max_new_tokens, num_beams=num_beams, rouge=rouge)
    files = [data] if isinstance(data, (str, Path)) else list(data)
    metrics = {"task": task, "model": source, "data": [str(f) for f in files], **metrics,
               "wall_s": round(time.perf_counter() - started, 3)}
    if out is not None:
        write_text(Path(out), json.dumps(metrics, indent=2) + "\n")
    return metrics
