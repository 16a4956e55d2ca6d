"""Reading Hugging Face weight files: model.safetensors, sharded safetensors with an index, or
pytorch_model.bin through `torch.load(weights_only=True)` (never a full unpickle)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ...errors import CheckpointError
from ..io import read_safetensors

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE = "pytorch_model.bin"


def read_hf_weights(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors of a checkpoint folder and, for each name, the file it came from (for error messages)."""
    if (folder / SAFETENSORS).is_file():
        files = [folder / SAFETENSORS]
    elif (folder / SAFETENSORS_INDEX).is_file():
        files = shard_files(folder / SAFETENSORS_INDEX)
    elif (folder / PICKLE).is_file():
        state = read_pickle(folder / PICKLE)
        return state, {name: str(folder / PICKLE) for name in state}
    else:
        raise CheckpointError(f"{folder} has no weights: expected {SAFETENSORS}, {SAFETENSORS_INDEX} with its "
                              f"shards, or {PICKLE}")
    state, origin = {}, {}
    for file in files:
        shard = read_safetensors(file)
        state.update(shard)
        origin.update({name: str(file) for name in shard})
    return state, origin


def shard_files(index_path: Path) -> list[Path]:
    """The distinct shard files named by a safetensors index, each checked to exist."""
    try:
        weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{index_path} is not a valid safetensors index ({error!r}); it needs a "
                              "'weight_map' of tensor name -> shard file") from None
    files = [index_path.parent / name for name in dict.fromkeys(weight_map.values())]
    for file in files:
        if not file.is_file():
            raise CheckpointError(f"{index_path} names the shard {file.name}, which is missing; download it again")
    return files


def read_pickle(path: Path) -> dict[str, torch.Tensor]:
    """A PyTorch state dict saved with torch.save, read without executing arbitrary code."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError ... for bad files
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path} cannot be read safely with torch.load(weights_only=True) ({first_line}); "
                              "it holds objects other than tensors or is damaged. Convert it to safetensors "
                              "with a trusted tool, or download model.safetensors instead") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} is not a state dict of named tensors")
    return state
