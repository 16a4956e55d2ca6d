"""The model a fine-tuning run starts from: a checkpoint's backbone under a new task head, or the same
architecture with random weights (the from-scratch baseline)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ..config import ModelConfig
from ..data import LabelSet
from ..errors import CheckpointError, ConfigError, DataError
from ..checkpoint.folder import load
from ..models import FAMILY_TASKS
from ..models.heads import HEADS
from ..tokenizer import SPECIALS_FILE, Tokenizer
from .tasks import task_spec
from ..checkpoint.hf import load_hf_tokenizer
from .. import presets
from ..train.pretraining import fit_config_to_tokenizer
from ..models.build import build_model


@dataclass
class StartingPoint:
    """A model ready to fine-tune, and what became of the source weights."""

    model: object
    source: str  # "checkpoint PATH", "preset NAME (random weights)", ...
    copied: int = 0  # tensors copied from the checkpoint
    initialised: list[str] = field(default_factory=list)  # tensors of the new model left at their random init
    unused: list[str] = field(default_factory=list)  # checkpoint tensors the new model has no place for

    def report(self) -> str:
        """One line saying what was copied and what is new."""
        if not self.copied:
            return f"{self.source}: all {len(self.initialised)} tensors randomly initialised"
        new = f"newly initialised: {', '.join(self.initialised)}" if self.initialised else "no new tensors"
        dropped = f"; not used: {', '.join(self.unused)}" if self.unused else ""
        return f"{self.source}: {self.copied} tensors copied, {new}{dropped}"


def load_model(path: str | Path):
    """`lmforge.load` for an lmforge or Hugging Face folder, quietly: a head the checkpoint lacks is
    reported by `build_task_model`, not by a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load(path)


def load_tokenizer(folder: str | Path) -> Tokenizer:
    """A tokenizer folder written by lmforge, or the tokenizer files of a Hugging Face folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"tokenizer folder {folder} does not exist; give a folder with tokenizer.json")
    if (folder / SPECIALS_FILE).is_file():
        return Tokenizer.load(folder)

    tokenizer = load_hf_tokenizer(folder)
    if tokenizer is None:
        raise DataError(f"{folder} holds no tokenizer (tokenizer.json, vocab.txt, vocab.json + merges.txt or "
                        "spiece.model); train one with `lmforge tokenizer train`")
    return tokenizer


def require_tokenizer(model, where: str) -> Tokenizer:
    """The model's tokenizer; a model without one is a CheckpointError saying how to give one."""
    if getattr(model, "tokenizer", None) is None:
        raise CheckpointError(f"{where} has no tokenizer (no tokenizer.json, vocab.txt or vocab.json + merges.txt); "
                              "copy the tokenizer files of the model it came from into the folder, or pass "
                              "--tokenizer DIR")
    return model.tokenizer


@dataclass
class Source:
    """Where a run starts: the loaded checkpoint (None for a preset), its architecture and tokenizer."""

    model: object | None
    config: ModelConfig
    tokenizer: Tokenizer
    where: str


def resolve_source(checkpoint: str | Path | object | None = None, preset: str | None = None,
                   from_scratch: bool = False, tokenizer: str | Path | Tokenizer | None = None) -> Source:
    """Load the starting checkpoint (a folder, lmforge or Hugging Face, or a loaded model), or take `preset`'s
    architecture (with `from_scratch`) with its vocabulary fitted to `tokenizer`. `tokenizer` (a folder or a
    Tokenizer) replaces the checkpoint's; a checkpoint without one needs it."""
    if checkpoint is None and preset is None:
        raise ConfigError("give the starting point: a checkpoint (--from DIR) or an architecture "
                          "(--preset NAME --from-scratch)")
    if checkpoint is not None and preset is not None:
        raise ConfigError("give either --from CHECKPOINT or --preset NAME, not both")
    if preset is not None and not from_scratch:
        raise ConfigError(f"--preset {preset} has no trained weights; pass --from-scratch to train it from random "
                          "weights, or --from CHECKPOINT to fine-tune pretrained ones")
    tok = load_tokenizer(tokenizer) if isinstance(tokenizer, (str, Path)) else tokenizer
    if checkpoint is not None:
        where = str(checkpoint) if isinstance(checkpoint, (str, Path)) else "the given model"
        model = load_model(checkpoint) if isinstance(checkpoint, (str, Path)) else checkpoint
        return Source(model, model.config, tok or require_tokenizer(model, where), where)

    if tok is None:
        raise ConfigError(f"--preset {preset} --from-scratch needs a tokenizer: pass --tokenizer DIR (for a fair "
                          "baseline, the tokenizer of the checkpoint it is compared with)")
    return Source(None, fit_config_to_tokenizer(presets.get(preset), tok, vocab_from_data=True), tok,
                  f"preset {preset}")


def build_task_model(task: str, source: Source, labels: LabelSet | None = None,
                     from_scratch: bool = False) -> StartingPoint:
    """The model fine-tuning `task` starts from: `source`'s architecture with the task's head. Unless
    `from_scratch`, every checkpoint tensor the new model shares (name and shape) is copied; a head that
    cannot be reused (another task, other labels) is newly initialised. `labels` (classify, tag) become
    the head's size and the config's `id2label`."""

    spec, config, where = task_spec(task), source.config, source.where
    if spec.head not in FAMILY_TASKS[config.family]:
        raise ConfigError(f"--task {task} cannot run on {where}: it is a {config.family} model, which has no "
                          f"{spec.head} head; {spec.family_advice}")
    if source.tokenizer.vocab_size > config.vocab_size:
        raise DataError(f"the tokenizer has {source.tokenizer.vocab_size:,} tokens but {where} has vocab_size "
                        f"{config.vocab_size:,}; use the tokenizer the model was trained with")
    model = build_model(_task_config(config, spec.head, labels), spec.head)
    model.attach_tokenizer(source.tokenizer)
    if from_scratch or source.model is None:
        return StartingPoint(model, f"{where} (random weights)", initialised=sorted(model.state_dict()))
    return _copy_weights(source.model, model, where)


def _task_config(config: ModelConfig, head: str, labels: LabelSet | None) -> ModelConfig:
    """The head's architecture needs (`Head.new_head_config`) and the label map as num_labels / id2label."""
    config = HEADS[head].new_head_config(config)
    if labels is None:
        return config
    return config.replace(num_labels=len(labels), id2label=dict(enumerate(labels.names)))


def _copy_weights(source, model, where: str) -> StartingPoint:
    """Copy every tensor of `source` whose name and shape `model` shares; a head is reused only when the
    source had the same head with the same labels."""
    same_head = source.task == model.task and source.config.id2label == model.config.id2label
    theirs = source.state_dict()
    state, initialised = {}, []
    for name, tensor in model.state_dict().items():
        reusable = same_head or not name.startswith("head.")
        if reusable and name in theirs and theirs[name].shape == tensor.shape:
            state[name] = theirs[name]
        else:
            initialised.append(name)
    model.load_state_dict(state, strict=False)
    unused = sorted(set(theirs) - set(state))
    return StartingPoint(model, f"checkpoint {where}", copied=len(state), initialised=initialised, unused=unused)
