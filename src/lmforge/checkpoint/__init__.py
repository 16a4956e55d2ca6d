"""Checkpoint folders: save, load, and (in `hf/`) the Hugging Face format."""

from .io import load, load_checkpoint, save_checkpoint

__all__ = ["load", "load_checkpoint", "save_checkpoint"]
