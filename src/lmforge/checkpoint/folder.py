"""`load`: a model from any checkpoint folder, lmforge's own or Hugging Face's."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import CheckpointError
from ..models.weight_formats import to_weight_format, weight_format_name
from .adapter import CONFIG as ADAPTER_CONFIG, apply_adapter, base_of, read_adapter
from .hf import load_hf
from .io import CONFIG_FILE, load_checkpoint, read_checkpoint_config


def load(path: str | Path, task: str | None = None, device: str | torch.device = "cpu", verify: bool = True,
         adapter: str | Path | None = None, dtype: str | torch.dtype | None = None):
    """Load a model from an lmforge checkpoint folder or a Hugging Face checkpoint folder.

    `dtype`: the weight format for inference, "fp32" (default), "bf16", "fp16" (CUDA) or "int8"
    (weight-only, per-channel; inference only), or a torch dtype; see `lmforge.models.weight_formats`.

    `task` (Hugging Face folders only) overrides the head chosen from the checkpoint's `architectures`.
    `adapter`: a LoRA adapter folder (lmforge's or PEFT's) made for this base, applied on top; the result
    may have the adapter's head (a classifier trained on an embedding model). `path` may also be an adapter
    folder alone, whose base_model_name_or_path is a folder here.

    The model comes back in eval mode (dropout off), ready for inference, as Hugging Face's
    `from_pretrained` does; the Trainer switches it to train mode itself."""
    if dtype is not None:
        weight_format_name(dtype)  # an unknown dtype fails before anything is read
        return to_weight_format(load(path, task=task, device=device, verify=verify, adapter=adapter), dtype)
    if adapter is not None:
        read_adapter(adapter)  # a bad adapter folder fails before the base is read
        return apply_adapter(load(path, task=task, device=device, verify=verify), adapter).eval()
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; give a checkpoint folder (lmforge or Hugging Face)")
    if not path.is_dir():
        raise CheckpointError(f"{path} is a file; give the checkpoint folder that contains config.json")
    if not (path / CONFIG_FILE).is_file() and (path / ADAPTER_CONFIG).is_file():
        return load(base_of(path), task=task, device=device, verify=verify, adapter=path)
    meta = read_checkpoint_config(path)
    if "format_version" in meta:
        model = load_checkpoint(path, verify=verify, device=device)
        if task is not None and task != model.task:
            raise CheckpointError(f"{path} holds a {model.task} model, not {task}")
        return model.eval()
    if "model_type" in meta:
        return load_hf(path, task=task).to(device).eval()
    raise CheckpointError(f"{path / CONFIG_FILE} is neither an lmforge config (format_version) nor a Hugging Face "
                          "config (model_type)")
