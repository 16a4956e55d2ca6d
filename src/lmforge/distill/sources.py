"""What the teacher teaches on: the objective its head allows, and the batch sources for it.

Objectives, one per family (the teacher's head decides): mlm (encoder with a masked-LM head, on
prepared shards), clm (decoder with a causal-LM head, on shards), seq2seq (encoder-decoder, on
shards with span corruption or text infilling, or on JSONL source/target pairs), task (a fine-tuned
sequence or token classifier, on labelled files plus optional unlabelled text).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from ..data import LabelSet, TokenShards
from ..errors import ConfigError, DataError
from ..finetune.tasks import DataOptions, task_of_head, task_spec
from ..train.pretraining import ShardSources, build_objective, default_objective
from .data import ExampleBatches

@dataclass(frozen=True)
class DistillObjective:
    """What one distillation objective teaches from and on."""

    heads: tuple[str, ...]  # the teacher heads (model tasks) it distils
    shards: bool  # reads prepared token shards (--data)
    files: bool  # reads labelled files (--train/--valid); with both, files when --train is given
    quality: str | None  # the report's quality score; None: the fine-tuning task's metric (lmforge evaluate's)

    def reads_files(self, train_given: bool) -> bool:
        return self.files and (train_given or not self.shards)


OBJECTIVES = {
    "mlm": DistillObjective(("masked-lm",), shards=True, files=False, quality="masked-token accuracy"),
    "clm": DistillObjective(("causal-lm",), shards=True, files=False, quality="next-token accuracy"),
    "seq2seq": DistillObjective(("seq2seq-lm",), shards=True, files=True, quality="next-token accuracy"),
    "task": DistillObjective(("sequence-classification", "token-classification"), shards=False, files=True,
                             quality=None),
}


def objective_for(task: str, requested: str | None = None) -> str:
    """The objective a teacher with head `task` can teach (checking `requested`, if given)."""
    fits = [name for name, objective in OBJECTIVES.items() if task in objective.heads]
    if not fits:
        raise ConfigError(f"the teacher has no head to distil from (its task is {task}); fine-tune it first "
                          "(`lmforge finetune`) and distil with --objective task, or give a teacher with a "
                          "masked-LM / causal-LM / seq2seq head")
    if requested is not None and requested not in OBJECTIVES:
        raise ConfigError(f"unknown objective {requested!r}; choose one of {', '.join(OBJECTIVES)}")
    if requested is not None and requested != fits[0]:
        needs = " or ".join(OBJECTIVES[requested].heads)
        raise ConfigError(f"--objective {requested} needs a teacher with a {needs} head, but this teacher has a "
                          f"{task} head; use --objective {fits[0]}")
    return fits[0]


@dataclass
class Sources:
    """Batch factories in the Trainer's shapes, and a line describing the data for the model card."""

    train: Callable[[int, int, int], Iterable[dict]]
    valid: Callable[[int], Iterable[dict]]  # valid(batch_size) -> a fresh pass over the validation set
    description: str


def shard_sources(teacher, data: str | Path, seq_len: int, seed: int) -> Sources:
    """Pretraining-style batches from prepared token shards, with the objective of the teacher's family
    (the masks drawn per batch are shared by teacher and student). The shards must have been prepared
    with the teacher's tokenizer."""
    shards = TokenShards(data)
    tokenizer = _tokenizer(teacher)
    shards.check_tokenizer(tokenizer)
    name = default_objective(teacher.config.family, tokenizer)
    sources = ShardSources(shards, build_objective(name, teacher.config.family, tokenizer), seq_len, seed)
    if not sources.has_valid:
        raise DataError(f"{data} has no validation split long enough for one sequence of {seq_len} tokens; prepare "
                        "it with a validation fraction (the report measures the student on it)")
    return Sources(train=sources.train, valid=sources.valid,
                   description=f"{Path(data).name} ({len(shards.train):,} train tokens, objective {name})")


def labelled_sources(teacher, train: str | Path, valid: str | Path, unlabelled: str | Path | None = None,
                     max_length: int = 128, seed: int = 0) -> Sources:
    """Batches of labelled examples read with the teacher's tokenizer and label names: classification
    files (sequence classification), CoNLL files (token classification) or JSONL source/target pairs
    (seq2seq). `unlabelled` text lines (classification) join training with labels -100: they teach
    through the soft targets only."""

    tokenizer = _tokenizer(teacher)
    if not OBJECTIVES[objective_for(teacher.task)].files:
        raise ConfigError(f"a {teacher.task} teacher learns from prepared token shards; pass --data DIR instead of "
                          "--train/--valid")
    spec = task_spec(task_of_head(teacher.task, "the teacher"))  # the fine-tuning task that reads its files
    options = DataOptions(max_length=max_length)
    labels = LabelSet(teacher.config.id2label[i] for i in range(teacher.config.num_labels)) \
        if teacher.config.id2label and teacher.head.named_classes else None
    train_data = spec.read([Path(train)], tokenizer, labels, options)
    if train_data.labels is not None and len(train_data.labels) != teacher.config.num_labels:
        raise DataError(f"{train} has {len(train_data.labels)} labels but the teacher predicts "
                        f"{teacher.config.num_labels}; give data labelled like the teacher's")
    valid_data = spec.read([Path(valid)], tokenizer, train_data.labels, options)
    examples = [{k: v for k, v in e.items() if k != "word_ids"} for e in train_data.examples]
    if unlabelled is not None:
        if not teacher.head.sequence_labels:
            raise ConfigError("--unlabelled text is for sequence-classification teachers")
        examples += _unlabelled_examples(unlabelled, tokenizer, max_length, "token_type_ids" in examples[0])
    valid_examples = [{k: v for k, v in e.items() if k != "word_ids"} for e in valid_data.examples]
    pad = tokenizer.padding_id
    extra = f" + {unlabelled} unlabelled" if unlabelled else ""
    return Sources(
        train=lambda micro, rank, world: ExampleBatches(examples, micro, pad, rank, world, seed=seed),
        valid=lambda batch: ExampleBatches(valid_examples, batch, pad, shuffle=False),
        description=f"{Path(train).name} ({len(train_data.examples):,} examples{extra})")


def _unlabelled_examples(path: str | Path, tokenizer, max_length: int, with_types: bool) -> list[dict]:
    """One example per non-empty line of `path`, label -100 (no hard-label loss)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"unlabelled text file {path} does not exist; check the path")
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    examples = []
    for ids in tokenizer.encode_batch(lines):
        ids = ids[:max_length]
        examples.append({"input_ids": ids, "labels": -100, **({"token_type_ids": [0] * len(ids)} if with_types else {})})
    return examples


def _tokenizer(teacher):
    if teacher.tokenizer is None:
        raise ConfigError("the teacher checkpoint has no tokenizer, so its data cannot be read; save the "
                          "teacher with its tokenizer (model.tokenizer) or convert it again")
    return teacher.tokenizer
