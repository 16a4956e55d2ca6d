"""The lmforge checkpoint folder: config.json + model.safetensors (+ tokenizer.json, README.md).

config.json = {"format_version": 1, "task": ..., "model": {ModelConfig fields}, "weights": {"file", "sha256"}}.
Loading never unpickles anything; every key, shape and the file's checksum are verified.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..config import ModelConfig
from ..errors import CheckpointError, LmforgeError
from ..models import services
from ..models.build import build_model
from ..models.lora import lora_spec, restore_lora, unmerged
from ..models.weight_formats import INFERENCE_ONLY
from ..nn.quantized import has_int8_weights
from ..tokenizer import Tokenizer
from .atomic import atomic_folder
from .card import write_card
from ..files import naming

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_lmforge_checkpoint(path: Path) -> bool:
    try:
        return "format_version" in json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def save_checkpoint(model, path: str | Path, card: dict | None = None) -> Path:
    """Write `model` (and its tokenizer, if attached) as a checkpoint folder at `path`, atomically.

    An existing lmforge checkpoint at `path` is replaced; any other non-empty folder is refused.
    `card` holds model-card facts (data, objective, steps, metrics, emissions) for README.md."""
    path = Path(path)
    if has_int8_weights(model):
        raise CheckpointError(f"this model holds int8 weights ({INFERENCE_ONLY}: they are made on load); "
                              "save the float model it was loaded from instead")
    if path.exists() and (not path.is_dir() or (any(path.iterdir()) and not is_lmforge_checkpoint(path))):
        raise CheckpointError(f"{path} exists and is not an lmforge checkpoint; "
                              "choose an empty or new folder so nothing of yours is overwritten")
    with unmerged(model):
        state = {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}
    lora = lora_spec(model)
    with atomic_folder(path) as tmp:
        with naming(tmp / WEIGHTS_FILE):
            save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt", "lmforge_format": str(FORMAT_VERSION)})
        meta = {
            "format_version": FORMAT_VERSION,
            "task": model.task,
            "model": model.config.to_dict(),
            "weights": {"file": WEIGHTS_FILE, "sha256": sha256_of(tmp / WEIGHTS_FILE)},
        }
        if lora is not None:
            meta["lora"] = lora  # the adapters' layout, rebuilt before the weights are loaded
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if getattr(model, "tokenizer", None) is not None:
            model.tokenizer.save(tmp)
        write_card(tmp, model, card or {})
    return path


services.register("save", save_checkpoint)  # LmforgeModel.save


def read_checkpoint_config(path: Path) -> dict[str, Any]:
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        leftovers = sorted(path.parent.glob(f".{path.name}.*.old")) if path.parent.is_dir() else []
        hint = (f"; an interrupted save left the previous checkpoint at {leftovers[0]}: rename it to {path}"
                if leftovers else "")
        raise CheckpointError(f"{path} is not a checkpoint folder: {CONFIG_FILE} is missing{hint}")
    try:
        return json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{config_path} is not valid JSON ({error}); the checkpoint is damaged") from None


def load_checkpoint(path: str | Path, verify: bool = True, device: str | torch.device = "cpu"):
    """Load an lmforge checkpoint folder; `verify` checks the weights file's SHA-256 first."""
    path = Path(path)
    meta = read_checkpoint_config(path)
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path / CONFIG_FILE}: format_version {meta.get('format_version')!r} is not "
                              f"supported (this lmforge reads version {FORMAT_VERSION}); upgrade lmforge")
    try:
        config = ModelConfig.from_dict(meta["model"])
        task = meta["task"]
    except KeyError as missing:
        raise CheckpointError(f"{path / CONFIG_FILE} lacks the field {missing}; the checkpoint is damaged") from None
    except LmforgeError as error:
        raise CheckpointError(f"{path / CONFIG_FILE}: {error}") from None
    weights = meta.get("weights", {})
    weights_path = path / weights.get("file", WEIGHTS_FILE)
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path} is missing; the checkpoint is incomplete")
    if verify and "sha256" in weights and sha256_of(weights_path) != weights["sha256"]:
        raise CheckpointError(f"{weights_path} does not match the SHA-256 recorded in {CONFIG_FILE}: the file was "
                              "modified or truncated; restore it (or load with verify=False at your own risk)")
    model = build_model(config, task)
    if meta.get("lora"):
        try:
            restore_lora(model, meta["lora"])
        except LmforgeError as error:
            raise CheckpointError(f"{path / CONFIG_FILE}: {error}") from None
    load_weights(model, read_safetensors(weights_path), source=str(weights_path))
    tokenizer_dir = path if (path / "tokenizer.json").is_file() else None
    if tokenizer_dir is not None:
        model.attach_tokenizer(Tokenizer.load(tokenizer_dir))
    return model.to(device)


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file; a damaged file is a `CheckpointError` naming it."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as error:  # safetensors raises its own error types for damaged headers
        raise CheckpointError(f"{path} is not a readable safetensors file ({error}); the file is damaged or "
                              "truncated") from None


def load_weights(model, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy `state` into `model`, after checking that keys and shapes match exactly."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
                   for k in expected if k in state and state[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}")
    if wrong_shape:
        problems.append(f"shape mismatches: {'; '.join(wrong_shape[:8])}")
    if problems:
        raise CheckpointError(f"{source} does not fit the model described by its config ({'; '.join(problems)})")
    check_weight_values(state, expected, source)
    model.load_state_dict(state, strict=True)


def check_weight_values(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], source: str) -> None:
    """Refuse a tensor whose dtype kind differs from the model's (integer weights for float parameters would
    load as rounded numbers); warn, naming the tensors, about NaN or infinite values."""
    for name, tensor in state.items():
        if tensor.is_floating_point() != expected[name].is_floating_point() or tensor.dtype == torch.bool:
            raise CheckpointError(f"{source}: tensor {name} is {str(tensor.dtype).removeprefix('torch.')}, but the "
                                  f"model needs {str(expected[name].dtype).removeprefix('torch.')}; the file is not "
                                  "a weights file for this model, or it was written wrongly: convert it again")
    broken = [name for name, tensor in state.items() if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if broken:
        warnings.warn(f"{source}: tensor(s) {', '.join(broken[:5])}{' ...' if len(broken) > 5 else ''} hold NaN or "
                      "infinite values; the model's outputs will be NaN where they are used", stacklevel=3)
