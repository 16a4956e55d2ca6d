"""lmforge: build, pretrain, fine-tune, distill, evaluate, share and run Transformer language models."""

from . import presets
from .checkpoint.folder import load
from .config import ModelConfig
from .errors import LmforgeError
from .infer import pipeline
from .models import LmforgeModel, ModelOutput, build_model
from .tokenizer import Tokenizer

__version__ = "0.1.0"

__all__ = ["ModelConfig", "presets", "build_model", "load", "LmforgeModel", "ModelOutput", "Tokenizer",
           "LmforgeError", "pipeline", "__version__"]
