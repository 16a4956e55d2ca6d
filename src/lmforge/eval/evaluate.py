"""Evaluate a model on labelled data for its task, streaming (scored by lmforge.finetune.scoring).

    metrics = evaluate("runs/sst2/model", "sst2.dev.txt")                 # task from the model's head
    metrics = evaluate(model_dir, ["val.en", "val.de"], out="val.json")   # seq2seq: source and target files
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

from ..checkpoint.atomic import write_text
from ..checkpoint.output import claim_file
from ..data import LabelSet
from ..errors import InputError
from ..finetune.batching import sorted_batches
from ..finetune.model import load_model, require_tokenizer
from ..finetune.scoring import batch_metrics, label_names
from ..finetune.tasks import read_task_data, subset, task_of_head, task_spec


def evaluate(model, data: str | Path | Sequence[str | Path], task: str | None = None, *,
             out: str | Path | None = None, batch_size: int = 32, data_options=None, max_examples: int | None = None,
             max_new_tokens: int = 64, num_beams: int = 1, rouge: bool = False, overwrite: bool = False) -> dict:
    """Evaluate `model` (a checkpoint folder, lmforge or Hugging Face, or a loaded model) on `data` (the
    task's file(s); seq2seq: source and target files, or one .jsonl). `task` defaults to the one the model's
    head serves. Labels the model does not know are a DataError. Writes the metrics as JSON to `out` (when
    given, atomically; an existing file only with `overwrite`, and only lmforge's metrics) and returns them,
    with `task`, `model`, `data` and `wall_s`."""
    if out is not None:
        claim_file(out, overwrite)

    started = time.perf_counter()
    source = str(model) if isinstance(model, (str, Path)) else (model.config.name or "model")
    model = load_model(model) if isinstance(model, (str, Path)) else model
    tokenizer = require_tokenizer(model, source)
    if task is None:
        task = task_of_head(model.task, source)
    elif task_spec(task).head != model.task:
        raise InputError(f"{source} has a {model.task} head, but --task {task} needs a {task_spec(task).head} "
                         f"head; evaluate it with --task {task_of_head(model.task, source)} or fine-tune it for {task}")
    labels = LabelSet(label_names(model)) if model.head.named_classes else None
    examples = subset(read_task_data(task, data, tokenizer, labels, data_options, model.config), max_examples,
                      option="--max-examples").examples
    metrics = batch_metrics(model, task, sorted_batches(examples, batch_size, tokenizer.padding_id),
                            max_new_tokens=max_new_tokens, num_beams=num_beams, rouge=rouge)
    files = [data] if isinstance(data, (str, Path)) else list(data)
    metrics = {"task": task, "model": source, "data": [str(f) for f in files], **metrics,
               "wall_s": round(time.perf_counter() - started, 3)}
    if out is not None:
        write_text(Path(out), json.dumps(metrics, indent=2) + "\n")
    return metrics
