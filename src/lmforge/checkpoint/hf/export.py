"""`export_hf`: an lmforge model -> a Hugging Face checkpoint folder, when its architecture matches a
supported model type exactly (the config must survive the round trip through that type's fields)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from safetensors.torch import save_file

from ...errors import CheckpointError
from ..atomic import atomic_folder
from .formats import FORMATS
from .mapping import strip_prefix, to_hf
from .load import GENERATION_CONFIG
from .spec import ConfigReader, HFFormat
from .tokenizer import save_hf_tokenizer
from ...files import naming

# the mask token lives in the tokenizer, not config.json; `bias` is compared through the three switches it defaults
ALWAYS_IGNORED = {"name", "extra", "mask_token_id", "bias"}
DERIVED = {"d_head": "head_dim", "n_decoder_layers": "decoder_layers", "n_kv_heads": "kv_heads",
           "qkv_bias": "use_qkv_bias", "out_bias": "use_out_bias", "mlp_bias": "use_mlp_bias"}
TASK_FIELDS = {
    "classifier_pool": ("sequence-classification",), "classifier_hidden_act": ("sequence-classification",),
    "classifier_bias": ("sequence-classification",),
    "classifier_dropout": ("sequence-classification", "token-classification"),
    "num_labels": ("sequence-classification", "token-classification"),
    "id2label": ("sequence-classification", "token-classification"), "mlm_transform": ("masked-lm",),
}


def export_hf(model, path: str | Path, model_type: str | None = None) -> Path:
    """Write `model` as a Hugging Face folder: config.json, model.safetensors and, when the model has a
    tokenizer, tokenizer.json + tokenizer_config.json. `model_type` picks the format (default: the
    first of gpt2, bert, roberta, distilbert, bart, t5 whose fields express the architecture exactly);
    a `CheckpointError` explains, per format, which field does not fit."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or (any(path.iterdir()) and not (path / "config.json").is_file())):
        raise CheckpointError(f"{path} exists and is not a checkpoint folder; choose an empty or new folder")
    fmt, state, hf_config = match_format(model, model_type)
    with atomic_folder(path) as tmp:
        with naming(tmp / "model.safetensors"):
            save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")
        if model.task == "causal-lm":
            write_generation_config(model.config, tmp)
        if getattr(model, "tokenizer", None) is not None:
            save_hf_tokenizer(model.tokenizer, tmp)
    return path


def write_generation_config(config, folder: Path) -> None:
    """generation_config.json with the special tokens `generate` needs (eos may be a list)."""
    tokens = {name: getattr(config, name) for name in ("bos_token_id", "eos_token_id", "pad_token_id")}
    data = {name: value for name, value in tokens.items() if value is not None}
    (folder / GENERATION_CONFIG).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def match_format(model, model_type: str | None, state: dict | None = None):
    """(format, Hugging Face state dict, config.json dict) for the first format that fits `model` (whose
    weights are `state` when given)."""
    if model_type is not None and model_type not in FORMATS:
        raise CheckpointError(f"model_type {model_type!r} is not supported; choose one of {', '.join(FORMATS)}")
    hinted = model.config.extra.get("model_type") if isinstance(model.config.extra, dict) else None
    order = [model_type] if model_type else sorted(FORMATS, key=lambda t: t != hinted)
    reasons, unfit = [], []  # unfit: formats of another family or without this head, named only if all are
    for name in order:
        fmt = FORMATS[name]
        try:
            return fmt, *convert(fmt, model, state)
        except _Unfit as error:
            unfit.append(f"{name}: {error}")
        except CheckpointError as error:
            reasons.append(f"{name}: {error}")
    hint = ("; a pre-LN encoder (lmforge's small-budget pretraining recipe) has no BERT-family equivalent: "
            "pretrain with --recipe standard for a model that exports") \
        if model.config.family == "encoder" and model.config.norm_placement == "pre" else ""
    raise CheckpointError(f"this {model.config.family} {model.task} model matches no Hugging Face format "
                          f"lmforge writes ({'; '.join(reasons or unfit)}){hint}")


class _Unfit(CheckpointError):
    """A format that cannot hold the model at all: another family, or no architecture with its head."""


def effective(config, name: str):
    """A field's value as the model uses it (d_head None means d_model // n_heads, no id2label means
    LABEL_0, LABEL_1, ...)."""
    if name == "id2label":
        return config.label_names
    return getattr(config, DERIVED.get(name, name))


def convert(fmt: HFFormat, model, state: dict | None = None) -> tuple[dict, dict]:
    """The state dict and config.json of `model` in `fmt`; raises `CheckpointError` saying what does not fit."""
    if model.task not in fmt.tasks:
        raise _Unfit(f"no {fmt.model_type} architecture has a {model.task} head")
    family = fmt.to_config(ConfigReader(fmt.from_config(model.config), "config"), set(), model.task).family
    if family != model.config.family:
        raise _Unfit(f"{fmt.model_type} is a {family} model type")
    architecture = fmt.architecture_for(model.task)
    state = to_hf(fmt, model, architecture, state)
    hf_config = {"model_type": fmt.model_type, "architectures": [architecture], **fmt.from_config(model.config)}
    if not model.head.named_classes:
        hf_config.pop("id2label", None), hf_config.pop("label2id", None)
    back = fmt.to_config(ConfigReader(hf_config, f"{fmt.model_type} config"), set(strip_prefix(fmt, state)), model.task)
    differences = [f"{f.name}={getattr(model.config, f.name)!r} (the format gives {getattr(back, f.name)!r})"
                   for f in dataclasses.fields(back)
                   if f.name not in ALWAYS_IGNORED and model.task in TASK_FIELDS.get(f.name, (model.task,))
                   and effective(back, f.name) != effective(model.config, f.name)]
    if differences:
        raise CheckpointError(", ".join(differences[:3]))
    return state, hf_config
