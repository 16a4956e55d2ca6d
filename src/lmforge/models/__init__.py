"""Models of the three families, their heads, and `build_model`."""

from .base import LmforgeModel, ModelOutput
from .build import build_model
from .decoder import DecoderModel
from .heads import DEFAULT_TASK, FAMILY_TASKS, HEADS, TASKS, Head
from .encoder import EncoderModel
from .seq2seq import EncoderDecoderModel, shift_right

__all__ = ["DEFAULT_TASK", "FAMILY_TASKS", "TASKS", "HEADS", "Head", "LmforgeModel", "ModelOutput", "build_model",
           "DecoderModel", "EncoderModel", "EncoderDecoderModel", "shift_right"]
