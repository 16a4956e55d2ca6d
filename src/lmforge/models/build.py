"""The one place that maps a family and a task to a model class."""

from __future__ import annotations

from .. import presets
from ..config import ModelConfig
from .base import LmforgeModel
from .decoder import DecoderModel
from .encoder import EncoderModel
from .heads import DEFAULT_TASK, TASKS
from .seq2seq import EncoderDecoderModel
from ..errors import ConfigError

FAMILY_CLASSES = {"decoder": DecoderModel, "encoder": EncoderModel, "encoder-decoder": EncoderDecoderModel}


def build_model(config: ModelConfig | str, task: str | None = None) -> LmforgeModel:
    """A randomly initialised model for `config` (a ModelConfig or a preset name) and `task`
    (default: the family's pretraining task: causal-lm, masked-lm or seq2seq-lm)."""
    if isinstance(config, str):
        config = presets.get(config)
    config.validate()
    task = task or DEFAULT_TASK[config.family]
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    return FAMILY_CLASSES[config.family](config, task)
