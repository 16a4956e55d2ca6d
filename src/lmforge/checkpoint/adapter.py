"""LoRA adapter folders in PEFT's format: adapter_config.json + adapter_model.safetensors, with the key names
PEFT uses for the base model's Hugging Face type, plus lmforge_adapter.json (the task, label map and
architecture the adapter was trained with) and README.md (the card).

    save_adapter(model, "runs/sst2/adapter", base="minilm/")      # a model after models.lora.add_lora
    model = apply_adapter(lmforge.load("minilm/"), "runs/sst2/adapter")
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import warnings
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..config import ModelConfig
from ..errors import CheckpointError, LmforgeError
from ..models.build import build_model
from ..models.lora import (LoraSettings, adapter_state, base_signature, freeze_except, lora_layers, same_base,
                           scaling_for, trainable_parameters)
from .adapter_names import PREFIX, check_chunk, chunks, export_chunk, import_chunk, lookup
from .atomic import atomic_folder
from .card import write_card
from .hf.export import match_format
from .hf.mapping import NEW_HEAD_PREFIXES, to_hf
from .io import read_safetensors

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
META = "lmforge_adapter.json"
PEFT_TASK_TYPES = {"causal-lm": "CAUSAL_LM", "seq2seq-lm": "SEQ_2_SEQ_LM", "sequence-classification": "SEQ_CLS",
                   "token-classification": "TOKEN_CLS", "embedding": "FEATURE_EXTRACTION"}
HEAD_FIELDS = {"num_labels", "id2label", "classifier_pool", "classifier_hidden_act", "classifier_bias",
               "classifier_dropout", "mlm_transform", "name", "extra", "mask_token_id"}
UNSUPPORTED = {"use_dora": "DoRA", "lora_bias": "trained LoRA biases", "layer_replication": "layer replication",
               "use_qalora": "QA-LoRA", "trainable_token_indices": "trainable tokens"}


def file_format(model):
    """(Hugging Face format, architecture) whose key names the adapter uses, or (None, None) when no
    format lmforge writes expresses this model (the file then uses lmforge's names)."""
    base = {n: t for n, t in model.state_dict().items() if ".lora." not in f".{n}"}
    hint = model.config.extra.get("model_type") if isinstance(model.config.extra, dict) else None
    try:
        fmt, _, _ = match_format(model, hint, base) if hint else match_format(model, None, base)
    except CheckpointError:
        return None, None
    return fmt, fmt.architecture_for(model.task)


# ---- writing ----------------------------------------------------------------------------------------

def save_adapter(model, path: str | Path, base: str | None = None, card: dict | None = None) -> Path:
    """Write the adapters (and fully trained tensors) of `model` as an adapter folder, atomically.
    `base`: the base checkpoint's name, recorded as PEFT's base_model_name_or_path."""
    path = Path(path)
    if not lora_layers(model):
        raise CheckpointError("the model has no LoRA adapters to save; add them with add_lora (--lora-r)")
    if path.exists() and (not path.is_dir() or (any(path.iterdir()) and not (path / CONFIG).is_file())):
        raise CheckpointError(f"{path} exists and is not an adapter folder; choose an empty or new folder")
    fmt, architecture = file_format(model)
    tensors, ranks, alphas = {}, {}, {}
    settings: LoraSettings = getattr(model, "lora_settings", None) or LoraSettings()
    for name, chunk in chunks(model, fmt, architecture).items():
        exported = export_chunk(model, chunk)
        if exported is None:
            continue
        a, b, scaling = exported
        tensors[f"{name}.lora_A.weight"], tensors[f"{name}.lora_B.weight"] = a, b
        module = name.removeprefix(PREFIX)
        alpha = scaling * (math.sqrt(a.shape[0]) if settings.rslora else a.shape[0])
        if a.shape[0] != settings.r:
            ranks[module] = a.shape[0]
        if not math.isclose(alpha, settings.lora_alpha, rel_tol=1e-9):
            alphas[module] = alpha
    saved = saved_names(model, fmt, architecture)
    tensors.update({saved[n]: t.detach() for n, t in adapter_state(model).items() if n in saved})
    config = peft_config(model, settings, sorted(n.removeprefix(PREFIX).removesuffix(".lora_A.weight")
                                                 for n in tensors if n.endswith(".lora_A.weight")),
                         modules_to_save(model, fmt, architecture, saved), ranks, alphas, base, fmt)
    meta = {"format": "lmforge-lora", "version": 1, "key_names": fmt.model_type if fmt else "lmforge",
            "task": model.task, "model": model.config.to_dict(), "trainable_parameters": trainable_parameters(model),
            "base_signature": base_signature(model, skipped=set(saved))}
    with atomic_folder(path) as tmp:
        save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(tmp / WEIGHTS), metadata={"format": "pt"})
        (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        write_adapter_card(tmp, model, meta, card or {})
    return path


def peft_config(model, settings: LoraSettings, targets, to_save, ranks, alphas, base, fmt) -> dict:
    """adapter_config.json: the fields PEFT's LoraConfig reads."""
    conv1d = fmt is not None and any(r.layout == "conv1d" for r in fmt.backbone)
    return {"peft_type": "LORA", "task_type": PEFT_TASK_TYPES.get(model.task), "base_model_name_or_path": base,
            "r": settings.r, "lora_alpha": settings.lora_alpha, "lora_dropout": settings.dropout,
            "use_rslora": settings.rslora, "target_modules": targets, "modules_to_save": to_save or None,
            "rank_pattern": ranks, "alpha_pattern": alphas, "fan_in_fan_out": conv1d, "bias": "none",
            "init_lora_weights": True, "inference_mode": True, "library_name": "lmforge"}


def modules_to_save(model, fmt, architecture, saved: dict[str, str]) -> list[str]:
    """PEFT's modules_to_save: each saved tensor's module, or its top-level head module (RoBERTa's
    `classifier`, holding `dense` and `out_proj`) when every head tensor under it is saved, as PEFT does."""
    candidates = saved_names_for(model, fmt, architecture).values()
    prefix = PREFIX + (fmt.base_prefix if fmt else "")
    chosen = set()
    for name in saved.values():
        module = name.removeprefix(PREFIX).rpartition(".")[0]
        top = module.split(".")[0]
        whole = not name.startswith(prefix) or not prefix.removeprefix(PREFIX)
        under = [c for c in candidates if c.removeprefix(PREFIX).startswith(top + ".")]
        chosen.add(top if whole and all(c in saved.values() for c in under) else module)
    return sorted(chosen)


def saved_names(model, fmt, architecture) -> dict[str, str]:
    """Our name -> the file's name of every fully trained tensor (the Hugging Face name through the rules)."""
    names = {}
    state = model.state_dict()
    for name in getattr(model, "lora_trainable", []):
        if fmt is None:
            names[name] = PREFIX + name
            continue
        converted = to_hf(fmt, model, architecture, {name: state[name]})
        if len(converted) != 1:
            raise CheckpointError(f"{name} is stored in several {fmt.model_type} tensors and cannot be saved "
                                  "in an adapter")
        names[name] = PREFIX + next(iter(converted))
    return names


def write_adapter_card(folder: Path, model, meta: dict, facts: dict) -> None:
    share = meta["trainable_parameters"] / max(model.num_parameters(backbone_only=True), 1)
    compute = {"adapter": f"LoRA, {len(lora_layers(model))} layers adapted",
               "trainable parameters": f"{meta['trainable_parameters']:,} ({share:.2%} of the backbone)",
               **(facts.get("compute") or {})}
    description = facts.get("description", "A LoRA adapter saved by lmforge.")
    write_card(folder, model, {**facts, "compute": compute,
                               "description": f"{description} Load it with `lmforge.load(BASE, adapter=DIR)` "
                                              "or PEFT's `PeftModel.from_pretrained`."})


# ---- reading -----------------------------------------------------------------------------------------

def read_adapter(path: str | Path) -> tuple[dict, dict | None, dict[str, torch.Tensor]]:
    """(adapter_config.json, lmforge_adapter.json or None, tensors) of an adapter folder, checked."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"adapter folder {path} does not exist; give the folder with {CONFIG} "
                              "(written by `lmforge finetune --lora-r` or PEFT's save_pretrained)")
    if not (path / CONFIG).is_file():
        raise CheckpointError(f"{path} has no {CONFIG}; an adapter folder holds {CONFIG} and {WEIGHTS} "
                              "(written by `lmforge finetune --lora-r` or PEFT's save_pretrained)")
    config = _json(path / CONFIG)
    if config.get("peft_type", "LORA") != "LORA":
        raise CheckpointError(f"{path / CONFIG}: peft_type {config.get('peft_type')!r} is not LoRA; lmforge "
                              "loads LoRA adapters only")
    for key, what in UNSUPPORTED.items():
        if config.get(key):
            raise CheckpointError(f"{path / CONFIG}: {key} is set, and lmforge does not implement {what}")
    if config.get("bias", "none") != "none":
        raise CheckpointError(f"{path / CONFIG}: bias={config['bias']!r} trains biases, which lmforge adapters "
                              "do not hold; only bias='none' is supported")
    if not (path / WEIGHTS).is_file():
        raise CheckpointError(f"{path} has {CONFIG} but no {WEIGHTS}; the adapter is incomplete")
    meta = _json(path / META) if (path / META).is_file() else None
    return config, meta, read_safetensors(path / WEIGHTS)


def base_of(path: str | Path) -> Path:
    """The base checkpoint folder an adapter folder names (PEFT's base_model_name_or_path)."""
    config, _, _ = read_adapter(path)
    base = config.get("base_model_name_or_path")
    if not base or not Path(base).is_dir():
        raise CheckpointError(f"{path} is an adapter for the base {base!r}, which is not a folder here; load it "
                              "on its base: lmforge.load(BASE, adapter=DIR), or --adapter DIR with the base as MODEL")
    return Path(base)


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} is not valid JSON ({error}); the adapter is damaged") from None


def apply_adapter(model, path: str | Path):
    """Load the adapter folder `path` into `model` (an lmforge model of the base it was made for) and
    return the adapted model: base frozen, adapters and the adapter's task head loaded. An adapter trained
    for another task (a classifier on an embedding model) rebuilds the model with that head first.
    Everything is checked before `model` is changed: a mismatch leaves it as it was."""
    path = Path(path)
    config, meta, tensors = read_adapter(path)
    if meta is not None:
        model = with_adapter_head(model, meta, path)
    fmt, architecture = file_format(model)
    check_key_names(model, fmt, meta, path)
    where = f"{fmt.model_type if fmt else 'lmforge'} {model.task} base"
    pairs = plan_pairs(model, fmt, architecture, config, tensors, str(path / WEIGHTS), where)
    saved = plan_saved(model, fmt, architecture, tensors, str(path / WEIGHTS), where)
    check_base_weights(model, meta, set(saved), path)
    dropout = float(config.get("lora_dropout") or 0.0)
    for chunk, a, b, scaling in pairs:
        import_chunk(model, chunk, a, b, scaling, dropout)
    state = model.state_dict()
    with torch.no_grad():
        for ours, value in saved.items():
            state[ours].copy_(value)
    model.lora_settings = LoraSettings(r=int(config.get("r", 8)), alpha=float(config.get("lora_alpha", 8)),
                                       dropout=dropout, rslora=bool(config.get("use_rslora")),
                                       targets=tuple(dict.fromkeys(b.rpartition(".")[2] for b in _adapted(model))))
    freeze_except(model, list(saved))
    return model


def check_key_names(model, fmt, meta: dict | None, path: Path) -> None:
    """The adapter's key names must be the ones this base's format gives."""
    found = fmt.model_type if fmt else "lmforge"
    if meta is not None and meta.get("key_names") != found:
        raise CheckpointError(f"{path} was made for a {meta.get('key_names')} model, but the base is a {found} "
                              f"{model.config.family} model; load it on the base it was trained from")
    if fmt is None and meta is None:
        raise CheckpointError(f"{path} has no {META} and the base model matches no Hugging Face format, so its "
                              "key names cannot be read; load it on the base it was trained from")


def check_base_weights(model, meta: dict | None, saved: set[str], path: Path) -> None:
    """Warn when the base's weights are not the ones the adapter was trained on (same architecture, other
    values: another checkpoint of the same shape), which would load without error and answer wrongly."""
    recorded = (meta or {}).get("base_signature")
    if recorded and not same_base(recorded, base_signature(model, skipped=saved)):
        warnings.warn(f"{path} was trained on other base weights than these (the same architecture, different "
                      "values); its outputs will not be what it learned: load it on the base it was trained from",
                      stacklevel=3)


def plan_pairs(model, fmt, architecture, config: dict, tensors: dict, where: str, base: str) -> list[tuple]:
    """(chunk, A, B, scaling) for every lora_A / lora_B pair of the file, each checked against the base."""
    table = chunks(model, fmt, architecture)
    plan = []
    for key in sorted(k for k in tensors if k.endswith(".lora_A.weight")):
        module = key.removesuffix(".lora_A.weight")
        chunk = lookup(table, module, fmt.base_prefix if fmt else "")
        if chunk is None:
            raise CheckpointError(f"{where}: {key} adapts {module.removeprefix(PREFIX)}, which this {base} does "
                                  "not have; the adapter was made for another base model")
        b = tensors.get(f"{module}.lora_B.weight")
        if b is None:
            raise CheckpointError(f"{where} has {key} but no lora_B for it; the adapter is damaged")
        a = tensors[key]
        check_chunk(model, chunk, a, b, where)
        alpha = pattern_value(config, "alpha_pattern", module, config.get("lora_alpha", 8))
        plan.append((chunk, a.float(), b.float(), scaling_for(alpha, a.shape[0], bool(config.get("use_rslora")))))
    if not plan:
        raise CheckpointError(f"{where} holds no LoRA weights (lora_A / lora_B); the adapter is damaged")
    return plan


def plan_saved(model, fmt, architecture, tensors: dict, where: str, base: str) -> dict[str, torch.Tensor]:
    """Our name -> value of every fully trained tensor of the file (a task head), each checked."""
    saved = {v: k for k, v in saved_names_for(model, fmt, architecture).items()}
    state = model.state_dict()
    plan = {}
    for key in (k for k in tensors if not k.endswith((".lora_A.weight", ".lora_B.weight"))):
        ours = saved.get(key) or saved.get(lookup_prefixed(key, saved, fmt))
        if ours is None:
            raise CheckpointError(f"{where}: {key.removeprefix(PREFIX)} is not a weight of this {base}; the "
                                  "adapter was made for another base model or task")
        if tensors[key].shape != state[ours].shape:
            raise CheckpointError(f"{where}: {key.removeprefix(PREFIX)} has shape {tuple(tensors[key].shape)} but "
                                  f"the base needs {tuple(state[ours].shape)}; the adapter was made for another "
                                  "base model or label set")
        plan[ours] = tensors[key]
    return plan


def _adapted(model) -> list[str]:
    return [f"{path}.{block}" for path, layer in lora_layers(model).items() for block in layer.lora]


def saved_names_for(model, fmt, architecture) -> dict[str, str]:
    """Our name -> file name for every tensor a task head (or pooler) may save."""
    names = [n for n in model.state_dict() if n.startswith(NEW_HEAD_PREFIXES) and ".lora." not in n]
    keep = getattr(model, "lora_trainable", [])
    model.lora_trainable = names
    try:
        return saved_names(model, fmt, architecture)
    finally:
        model.lora_trainable = keep


def lookup_prefixed(key: str, saved: dict, fmt) -> str:
    """A saved tensor's name with or without the base model prefix, whichever the table has."""
    bare = key.removeprefix(PREFIX)
    prefix = fmt.base_prefix if fmt else ""
    for candidate in (PREFIX + prefix + bare, PREFIX + bare.removeprefix(prefix)):
        if candidate in saved:
            return candidate
    return key


def pattern_value(config: dict, field: str, module: str, default):
    """PEFT's per-module override: the first key of `field` that matches the end of the module name."""
    name = module.removeprefix(PREFIX)
    for key, value in (config.get(field) or {}).items():
        if re.match(rf"(.*\.)?({key})$", name):
            return value
    return default


def with_adapter_head(model, meta: dict, path: Path):
    """`model` with the task and head the adapter was trained with; the architecture must be the same
    (else a `CheckpointError` naming the first field that differs)."""
    try:
        wanted = ModelConfig.from_dict(meta["model"])
    except (KeyError, LmforgeError) as error:
        raise CheckpointError(f"{path / META} is damaged ({error}); the adapter cannot be loaded") from None
    for f in dataclasses.fields(wanted):
        if f.name not in HEAD_FIELDS and getattr(wanted, f.name) != getattr(model.config, f.name):
            raise CheckpointError(f"{path} was made for another base model: its {f.name} is "
                                  f"{getattr(wanted, f.name)!r}, the base's is {getattr(model.config, f.name)!r}")
    task = meta.get("task", model.task)
    if task == model.task and all(getattr(wanted, f) == getattr(model.config, f) for f in HEAD_FIELDS - {"name", "extra"}):
        return model
    headed = build_model(dataclasses.replace(wanted, name=model.config.name, extra=model.config.extra), task)
    theirs = model.state_dict()
    headed.load_state_dict({n: t for n, t in theirs.items() if n in headed.state_dict()
                            and headed.state_dict()[n].shape == t.shape and not n.startswith("head.")}, strict=False)
    headed.attach_tokenizer(getattr(model, "tokenizer", None))
    return headed.to(model.device)
