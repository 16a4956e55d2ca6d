"""The four fine-tuning tasks, one `TaskSpec` each in `TASKS`: which head each needs, which metric picks the
best checkpoint, how its labelled files are read and how it is scored (a new task is one entry here).

    classify  sentence (pair) classification  -> sequence-classification head, best by accuracy
    tag       token classification (CoNLL)    -> token-classification head,    best by entity F1
    seq2seq   translation / summarization     -> seq2seq-lm head,              best by BLEU
    clm       causal-LM adaptation on text    -> causal-lm head,               best by validation loss
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..config import ModelConfig
from ..data import LabelSet, TaskData, iter_texts, pack, read_classification, read_conll, read_parallel
from ..errors import ConfigError, DataError
from ..tokenizer import Tokenizer
from .defaults import stuck_at_majority_warning
from .scorers import ClassScorer, EntityScorer, GenerationScorer, PerplexityScorer, Scorer


@dataclass
class DataOptions:
    """How labelled files are read (the readers' format options)."""

    max_length: int | None = field(default=None, metadata={
        "help": "tokens per example, specials included (default: min(512, the model's max_positions))"})
    text_field: str = field(default="text", metadata={"help": "text column (.csv/.tsv/.jsonl)"})
    pair_field: str | None = field(default=None, metadata={"help": "second text column, for sentence pairs"})
    label_field: str = field(default="label", metadata={"help": "label column"})
    source_field: str = field(default="source", metadata={"help": "seq2seq .jsonl source field"})
    target_field: str = field(default="target", metadata={"help": "seq2seq .jsonl target field"})
    block_size: int = field(default=128, metadata={"help": "clm: tokens per training block (default 128)"})
    errors: str = field(default="strict", metadata={"choices": ("strict", "replace"),
                                                    "help": "what to do with bytes that are not UTF-8"})


Reader = Callable[[list[Path], Tokenizer, "LabelSet | None", DataOptions], TaskData]
RunWarning = Callable[[dict, list[dict], "LabelSet | None", float, int], "str | None"]


@dataclass(frozen=True)
class TaskSpec:
    """Everything a fine-tuning task decides: its head, how its files are read, how it is scored."""

    name: str
    head: str  # the lmforge model task (head) it trains
    metric: str  # the validation metric that selects the best checkpoint
    mode: str  # "max" or "min" for that metric
    family_advice: str  # what to do when the checkpoint's family has no such head
    files: str  # how the task's data files are given, for messages
    file_counts: tuple[int, ...] | None  # how many files it reads (None: one or more)
    read: Reader  # (files, tokenizer, labels, options) -> TaskData
    scorer: type[Scorer]  # its validation metrics (finetune.scorers)
    metric_title: str  # the metric as reports name it
    warning: RunWarning | None = None  # (best metrics, validation examples, labels, lr, parameters) -> a warning


def _read_classification(files: list[Path], tokenizer: Tokenizer, labels: LabelSet | None,
                         options: DataOptions) -> TaskData:
    return read_classification(files[0], tokenizer, labels, text_field=options.text_field,
                               pair_field=options.pair_field, label_field=options.label_field,
                               max_length=options.max_length, errors=options.errors)


def _read_conll(files: list[Path], tokenizer: Tokenizer, labels: LabelSet | None, options: DataOptions) -> TaskData:
    return read_conll(files[0], tokenizer, labels, max_length=options.max_length, errors=options.errors)


def _read_parallel(files: list[Path], tokenizer: Tokenizer, labels: LabelSet | None, options: DataOptions) -> TaskData:
    return read_parallel(files[0], files[1] if len(files) == 2 else None, tokenizer,
                         source_field=options.source_field, target_field=options.target_field,
                         max_length=options.max_length, errors=options.errors)


def _read_text_blocks(files: list[Path], tokenizer: Tokenizer, labels: LabelSet | None,
                      options: DataOptions) -> TaskData:
    """Causal-LM examples: the files' documents, each followed by EOS, packed into blocks of block_size."""
    texts = list(iter_texts(files, text_field=options.text_field, errors=options.errors))
    separator = tokenizer.eos_id if tokenizer.eos_id is not None else tokenizer.sep_id
    blocks = [block.tolist() for block in pack(tokenizer.encode_batch(texts, add_special_tokens=False),
                                               options.block_size, separator)]
    if not blocks:
        raise DataError(f"{', '.join(map(str, files))} hold fewer than {options.block_size} tokens, not one "
                        "training block; give more text or a smaller block size")
    return TaskData([{"input_ids": b, "labels": b} for b in blocks], None)


def _majority_warning(metrics: dict, valid: list[dict], labels: LabelSet, lr: float, parameters: int) -> str | None:
    """The classifier's accuracy never left the majority-class level of the validation labels."""
    names = [labels.names[int(e["labels"])] for e in valid]
    return stuck_at_majority_warning(metrics.get("accuracy"), names, lr, parameters)


TASKS = {
    "classify": TaskSpec("classify", "sequence-classification", "accuracy", "max",
                         "classification needs an encoder (BERT-like) or decoder (GPT-like) checkpoint; an "
                         "encoder-decoder can learn it as text-to-text: use --task seq2seq with the label as target",
                         "one labelled file (.csv/.tsv/.jsonl or `label text` lines)", (1,),
                         _read_classification, ClassScorer, "accuracy", _majority_warning),
    "tag": TaskSpec("tag", "token-classification", "f1", "max",
                    "tagging needs an encoder (BERT-like) or decoder (GPT-like) checkpoint; an encoder-decoder "
                    "can learn it as text-to-text: use --task seq2seq",
                    "one CoNLL file (`token<TAB>tag` lines)", (1,), _read_conll, EntityScorer, "entity F1"),
    "seq2seq": TaskSpec("seq2seq", "seq2seq-lm", "bleu", "max",
                        "sequence-to-sequence needs an encoder-decoder (BART/T5-like) checkpoint; with a decoder use "
                        "--task clm on `source target` text, with an encoder use --task classify or tag",
                        "two line-aligned files (source, target) or one .jsonl with source/target fields", (1, 2),
                        _read_parallel, GenerationScorer, "BLEU"),
    "clm": TaskSpec("clm", "causal-lm", "eval_loss", "min",
                    "causal-LM fine-tuning needs a decoder (GPT-like) checkpoint; with an encoder-decoder use "
                    "--task seq2seq",
                    "one or more text files (.txt, .jsonl)", None, _read_text_blocks, PerplexityScorer,
                    "validation loss"),
}
HEAD_TASKS = {spec.head: name for name, spec in TASKS.items()}


def task_spec(name: str) -> TaskSpec:
    """The `TaskSpec` of a task name; an unknown name is a ConfigError listing the valid ones."""
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")
    return TASKS[name]


def task_of_head(head: str, where: str) -> str:
    """The fine-tuning task that trains the lmforge head `head` (a checkpoint's task)."""
    if head not in HEAD_TASKS:
        raise ConfigError(f"{where} has a {head} head, which no fine-tuning task evaluates; give --task "
                          f"({', '.join(TASKS)}) for a checkpoint with the matching head")
    return HEAD_TASKS[head]


DEFAULT_MAX_LENGTH = 512


def fitted_max_length(max_length: int | None, config: ModelConfig | None) -> int:
    """`max_length` checked against the model's position limit, or the default that fits it."""
    limit = config.max_positions if config is not None and config.positions_bounded else None
    if max_length is None:
        return min(DEFAULT_MAX_LENGTH, limit) if limit else DEFAULT_MAX_LENGTH
    if not isinstance(max_length, int) or max_length < 1:
        raise ConfigError(f"--max-length must be a positive number of tokens, got {max_length!r}")
    if limit and max_length > limit:
        raise ConfigError(f"--max-length {max_length} exceeds the model's limit of {limit} tokens; "
                          f"use --max-length {limit} or less")
    return max_length


def read_task_data(task: str, files: Sequence[str | Path], tokenizer: Tokenizer, labels: LabelSet | None = None,
                   options: DataOptions | None = None, config: ModelConfig | None = None) -> TaskData:
    """Read the labelled `files` of `task` with `tokenizer`. With `labels` (the training set's), a label
    the training data did not have is a DataError naming file and line. `config` (the model's) bounds
    `options.max_length`, whose default is min(512, the model's max_positions)."""
    spec, options = task_spec(task), options or DataOptions()
    options = dataclasses.replace(options, max_length=fitted_max_length(options.max_length, config))
    files = [Path(f) for f in ([files] if isinstance(files, (str, Path)) else files)]
    if not files or (spec.file_counts and len(files) not in spec.file_counts):
        raise DataError(f"--task {task} reads {spec.files}; got {len(files)} file(s)")
    return spec.read(files, tokenizer, labels, options)


def subset(data: TaskData, count: int | None, seed: int = 0, option: str = "--max-train-examples") -> TaskData:
    """`count` examples drawn at random (seeded, in file order) for low-data studies; all when None.
    `option` names the count in the error (the flag that set it)."""
    if count is None or count >= len(data.examples):
        return data
    if count < 1:
        raise ConfigError(f"{option} must be >= 1, got {count}")
    keep = np.sort(np.random.default_rng(seed).choice(len(data.examples), size=count, replace=False))
    return TaskData([data.examples[i] for i in keep], data.labels)


def sample_per_label(items: Sequence, label_of: Callable[[object], str], count: int, seed: int = 0,
                     option: str = "--sizes") -> list:
    """`count` items of every label (labels in sorted order, items drawn at random, seeded, kept in their
    order) for label-efficiency studies. A label with fewer than `count` items is a DataError naming it,
    how many it has, and `option` (the flag that asked for the count)."""
    if count < 1:
        raise ConfigError(f"{option} sizes must be >= 1 labelled example per label, got {count}")
    by_label: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        by_label.setdefault(label_of(item), []).append(index)
    if not by_label:
        raise DataError("no labelled examples to draw from; give a non-empty training set")
    short = {label: len(found) for label, found in by_label.items() if len(found) < count}
    if short:
        label, have = min(short.items(), key=lambda pair: pair[1])
        raise DataError(f"{option} asks for {count} labelled examples per label, but label {label!r} has only "
                        f"{have}; ask for at most {min(len(f) for f in by_label.values())} per label or give more data")
    rng = np.random.default_rng(seed)
    keep = sorted(i for label in sorted(by_label) for i in rng.choice(by_label[label], size=count, replace=False))
    return [items[i] for i in keep]
