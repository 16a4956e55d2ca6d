"""`load`: a model from any checkpoint folder, lmforge's own or Hugging Face's."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import CheckpointError
from .hf import load_hf
from .io import CONFIG_FILE, load_checkpoint, read_checkpoint_config


def load(path: str | Path, task: str | None = None, device: str | torch.device = "cpu", verify: bool = True):
    """Load a model from an lmforge checkpoint folder or a Hugging Face checkpoint folder.

    `task` (Hugging Face folders only) overrides the head chosen from the checkpoint's `architectures`."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; give a checkpoint folder (lmforge or Hugging Face)")
    if not path.is_dir():
        raise CheckpointError(f"{path} is a file; give the checkpoint folder that contains config.json")
    meta = read_checkpoint_config(path)
    if "format_version" in meta:
        model = load_checkpoint(path, verify=verify, device=device)
        if task is not None and task != model.task:
            raise CheckpointError(f"{path} holds a {model.task} model, not {task}")
        return model
    if "model_type" in meta:
        return load_hf(path, task=task).to(device)
    raise CheckpointError(f"{path / CONFIG_FILE} is neither an lmforge config (format_version) nor a Hugging Face "
                          "config (model_type)")
