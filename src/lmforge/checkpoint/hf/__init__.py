"""Hugging Face interop: read and write checkpoints of gpt2, bert, distilbert, roberta, bart and t5.

Every format quirk lives here: one table of renaming rules per model type (formats/), read in both
directions (mapping.py), a config translator per type, and the tokenizer files (tokenizer.py).
`lmforge.load(path)` calls `load_hf` for folders whose config.json has a `model_type`."""

from .export import export_hf
from .formats import FORMATS
from .load import load_hf
from .tokenizer import load_hf_tokenizer

__all__ = ["load_hf", "export_hf", "load_hf_tokenizer", "FORMATS"]
