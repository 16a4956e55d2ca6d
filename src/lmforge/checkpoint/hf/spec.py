"""What one Hugging Face `model_type` looks like to lmforge: its renaming rules, heads and config fields."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ...config import ModelConfig
from ...errors import CheckpointError
from ...labels import label_names
from ...models.heads import HEADS
from .rules import Rule

# Hugging Face activation names -> ours, and back (the first HF name of each is what we write).
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh",
               "relu": "relu", "silu": "silu", "swish": "silu"}
HF_ACTIVATION = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "silu": "silu"}


@dataclass(frozen=True)
class HFFormat:
    """The whole description of one Hugging Face model type.

    backbone: rules for the base model's weights (stored under `base_prefix` in head architectures).
    heads: extra rules per lmforge task, named from the checkpoint's root.
    tied_copies: Hugging Face names that hold a copy of the token embedding when the config ties it.
    ignore: regexes of Hugging Face names that have no lmforge counterpart and carry no information
    (GPT-2's causal-mask buffers, position-id buffers), skipped by rule.
    architectures: Hugging Face class -> lmforge task; the first class of a task is what export writes.
    unsupported: Hugging Face class -> why lmforge cannot load it.
    to_config(hf_config, reader, weight_names, task) and from_config(config) translate config.json.
    tokenizer: which classic vocabulary files mean what ("wordpiece", "byte-bpe", "sentencepiece").
    """

    model_type: str
    base_prefix: str
    backbone: tuple[Rule, ...]
    heads: dict[str, tuple[Rule, ...]]
    architectures: dict[str, str]
    to_config: Callable[["ConfigReader", set[str], str], ModelConfig]
    from_config: Callable[[ModelConfig], dict[str, Any]]
    tokenizer: str
    tied_copies: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    unsupported: dict[str, str] = field(default_factory=dict)

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.architectures.values()))

    def architecture_for(self, task: str) -> str:
        return next(arch for arch, t in self.architectures.items() if t == task)

    def is_base(self, architecture: str) -> bool:
        """The base model class keeps backbone weights at the root (no prefix)."""
        return self.architectures.get(architecture) == "embedding"

    def ignored(self, name: str) -> bool:
        return any(re.fullmatch(pattern, name) for pattern in self.ignore)


class ConfigReader:
    """Reads fields of a Hugging Face config.json, raising `CheckpointError` naming the file and field."""

    def __init__(self, data: dict[str, Any], path: Path | str):
        self.data, self.path = data, path

    def get(self, name: str, default: Any = None) -> Any:
        value = self.data.get(name, default)
        return default if value is None else value

    def need(self, name: str) -> Any:
        if self.data.get(name) is None:
            raise CheckpointError(f"{self.path}: the field {name!r} is missing; the config.json is incomplete")
        return self.data[name]

    def refuse(self, name: str, allowed: tuple, why: str) -> None:
        """Raise when the field has a value lmforge cannot honour (absent = the first allowed value)."""
        value = self.data.get(name, allowed[0])
        if value not in allowed:
            raise CheckpointError(f"{self.path}: {name}={value!r} cannot be honoured by lmforge ({why}); "
                                  f"only {', '.join(repr(a) for a in allowed)} is supported")

    def same(self, *names: str) -> Any:
        """Fields that lmforge keeps as one value (e.g. encoder and decoder head counts) must agree."""
        values = [self.need(name) for name in names]
        if len(set(values)) != 1:
            pairs = ", ".join(f"{n}={v}" for n, v in zip(names, values))
            raise CheckpointError(f"{self.path}: {pairs} differ, and lmforge uses one value for both stacks")
        return values[0]

    def activation(self, name: str, default: str) -> str:
        value = self.get(name, default)
        if value not in ACTIVATIONS:
            raise CheckpointError(f"{self.path}: {name}={value!r} is an activation lmforge does not implement; "
                                  f"supported: {', '.join(ACTIVATIONS)}")
        return ACTIVATIONS[value]

    def labels(self, task: str) -> dict[str, Any]:
        """num_labels and id2label for classification heads (Hugging Face writes string keys)."""
        if not HEADS[task].named_classes:
            return {}
        raw = label_names(self.get("id2label"), int(self.get("num_labels", 2)))
        id2label = {int(k): str(v) for k, v in raw.items()}
        return {"num_labels": len(id2label), "id2label": id2label}


def labels_to_hf(config: ModelConfig) -> dict[str, Any]:
    """id2label / label2id for a classification config, in Hugging Face's spelling."""
    id2label = config.label_names
    return {"id2label": {str(k): v for k, v in id2label.items()}, "label2id": {v: k for k, v in id2label.items()}}
