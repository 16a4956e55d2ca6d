"""A training checkpoint: a normal lmforge checkpoint folder plus the trainer's state, without pickle.

    checkpoints/last/
        config.json, model.safetensors, tokenizer.json, README.md   (lmforge.load reads these)
        trainer_state.json          step, counters, sampler, callbacks, RNG states, optimizer hyperparameters
        trainer_state.safetensors   optimizer moments (exp_avg, exp_avg_sq, step) by parameter index
        training_parts.safetensors  training-only weights beside the model (an RTD generator), if any

The whole folder is written through `atomic_folder`: a crash leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..checkpoint.atomic import atomic_folder
from ..checkpoint.io import save_checkpoint
from ..errors import CheckpointError
from ..files import naming

STATE_JSON = "trainer_state.json"
STATE_TENSORS = "trainer_state.safetensors"
AUXILIARY_WEIGHTS = "training_parts.safetensors"


# ---- random number generators ------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """This process's python, numpy, torch (and CUDA) generator states as JSON-able data."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


# ---- optimizer ---------------------------------------------------------------------------------
def split_optimizer_state(state: dict) -> tuple[dict, dict[str, torch.Tensor]]:
    """Split `optimizer.state_dict()` into JSON-able data and a flat dict of tensors."""
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    return {"param_groups": state["param_groups"], "scalars": scalars}, tensors


def join_optimizer_state(meta: dict, tensors: dict[str, torch.Tensor]) -> dict:
    """The inverse of `split_optimizer_state`."""
    per_param: dict[Any, dict] = {}
    for key, value in list(tensors.items()) + list(meta["scalars"].items()):
        index, name = key.rsplit(".", 1)  # FSDP keys are parameter names, dots and all; state names have none
        per_param.setdefault(int(index) if index.isdigit() else index, {})[name] = value
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["param_groups"]]
    return {"state": per_param, "param_groups": groups}


# ---- the folder --------------------------------------------------------------------------------
def write_training_checkpoint(path: Path, model, card: dict, state: dict, tensors: dict[str, torch.Tensor],
                              auxiliary: dict[str, torch.Tensor] | None = None) -> None:
    """Write model + trainer state (+ `auxiliary` training-only weights) to `path` as one atomic folder
    replacement."""
    with atomic_folder(path) as tmp:
        save_checkpoint(model, tmp, card=card)
        with naming(tmp / STATE_TENSORS):
            save_file(tensors, str(tmp / STATE_TENSORS))
        if auxiliary is not None:
            with naming(tmp / AUXILIARY_WEIGHTS):
                save_file({k: v.detach().contiguous().cpu() for k, v in auxiliary.items()}, str(tmp / AUXILIARY_WEIGHTS))
        (tmp / STATE_JSON).write_text(json.dumps(state), encoding="utf-8")


def read_training_state(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """The trainer state JSON and tensors of a training checkpoint folder."""
    try:
        state = json.loads((path / STATE_JSON).read_text(encoding="utf-8"))
        tensors = load_file(str(path / STATE_TENSORS))
    except FileNotFoundError as error:
        raise CheckpointError(f"{path} is not a training checkpoint ({Path(error.filename).name} is missing); "
                              "it cannot be resumed") from None
    except Exception as error:  # json / safetensors decoding errors
        raise CheckpointError(f"the training state in {path} is damaged ({error}); delete the folder and "
                              "resume from an earlier copy, or start again with --overwrite") from None
    return state, tensors


def read_auxiliary_weights(path: Path) -> dict[str, torch.Tensor]:
    """The training-only weights a training checkpoint keeps beside the model."""
    if not (path / AUXILIARY_WEIGHTS).is_file():
        raise CheckpointError(f"{path} lacks {AUXILIARY_WEIGHTS} (the training-only weights, e.g. an RTD generator); "
                              "it was not written by this kind of run: start again with --overwrite")
    try:
        return load_file(str(path / AUXILIARY_WEIGHTS))
    except Exception as error:  # safetensors decoding errors
        raise CheckpointError(f"{path / AUXILIARY_WEIGHTS} is damaged ({error}); start again with --overwrite") from None
