"""Checkpoint folders: save, load, and (in `hf/`) the Hugging Face format."""

from .folder import load
from .io import load_checkpoint, save_checkpoint

__all__ = ["load", "load_checkpoint", "save_checkpoint"]
