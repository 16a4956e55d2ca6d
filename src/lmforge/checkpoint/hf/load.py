"""`load_hf`: a Hugging Face checkpoint folder -> an lmforge model (with its tokenizer)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from ...errors import CheckpointError, ConfigError
from ...models.build import build_model
from ..io import CONFIG_FILE, read_checkpoint_config
from .formats import FORMATS
from .mapping import shorten, strip_prefix, to_lmforge
from .spec import ConfigReader, HFFormat
from .tokenizer import load_hf_tokenizer
from .weights import read_hf_weights

GENERATION_CONFIG = "generation_config.json"


def load_hf(path: str | Path, task: str | None = None):
    """Load a Hugging Face checkpoint folder (config.json with `model_type`, weights in model.safetensors,
    sharded safetensors with an index, or pytorch_model.bin) of type gpt2, bert, distilbert, roberta,
    bart or t5 as an lmforge model.

    The head follows the config's `architectures` (e.g. BertForSequenceClassification ->
    sequence-classification, keeping id2label); `task` overrides it. Head weights the checkpoint lacks
    are initialised and reported with a warning; every other weight must be present and used.
    The folder's tokenizer (tokenizer.json, vocab.txt, vocab.json + merges.txt or spiece.model)
    becomes `model.tokenizer` (None when the folder has none)."""
    path = Path(path)
    config_path = path / CONFIG_FILE
    data = read_checkpoint_config(path)
    fmt = format_of(data, config_path)
    architecture = (data.get("architectures") or [None])[0]
    task = resolve_task(fmt, architecture, task, config_path)
    hf_state, origin = read_hf_weights(path)
    hf_state, origin = strip_prefix(fmt, hf_state), strip_prefix(fmt, origin)
    try:
        config = fmt.to_config(ConfigReader(data, config_path), set(hf_state), task)
        config.name = str(data.get("_name_or_path") or path.name)
        config.extra = {"source": "huggingface", "model_type": fmt.model_type, "architecture": architecture}
        config.eos_token_id = generation_eos(path, config.eos_token_id)
        drop_impossible_token_ids(config, config_path)
        tokenizer = load_hf_tokenizer(path)
        if tokenizer is not None and tokenizer.mask_id is not None and tokenizer.mask_id < config.vocab_size:
            config.mask_token_id = tokenizer.mask_id
        model = build_model(config, task)
    except ConfigError as error:
        raise CheckpointError(f"{config_path}: {error}") from None
    mapped = to_lmforge(fmt, model, hf_state, origin, source=str(path))
    if mapped.initialised:
        warnings.warn(f"{path}: newly initialised {task} weights (not in the checkpoint): "
                      f"{shorten(mapped.initialised)}; train them before use", stacklevel=2)
    if mapped.unused:
        warnings.warn(f"{path}: weights of another head, not used by the {task} model: {shorten(mapped.unused)}",
                      stacklevel=2)
    model.load_state_dict(mapped.state, strict=False)
    return model.attach_tokenizer(tokenizer)


TOKEN_ID_FIELDS = ("pad_token_id", "bos_token_id", "eos_token_id", "mask_token_id", "decoder_start_token_id")


def drop_impossible_token_ids(config, config_path: Path) -> None:
    """Special-token ids outside the vocabulary (GPT-2's default bos/eos 50256 in a config with a small
    vocabulary) become None with a warning, as transformers loads such configs."""
    for name in TOKEN_ID_FIELDS:
        value = getattr(config, name)
        ids = value if isinstance(value, list) else [value]  # eos may be a list (generation_config.json)
        kept = [i for i in ids if not (isinstance(i, int) and not isinstance(i, bool)
                                       and not 0 <= i < config.vocab_size)]
        if len(kept) == len(ids):
            continue
        warnings.warn(f"{config_path}: {name}={value} lies outside the vocabulary of {config.vocab_size} "
                      "tokens; it is ignored", stacklevel=3)
        setattr(config, name, kept if isinstance(value, list) and len(kept) > 1
                else (kept[0] if kept else None))


def generation_eos(folder: Path, eos: int | list[int] | None) -> int | list[int] | None:
    """The end-of-sequence id(s) that `generate` stops on: generation_config.json's when the folder has one
    (a chat model's list, e.g. Llama 3's <|end_of_text|> and <|eot_id|>), else config.json's."""
    path = folder / GENERATION_CONFIG
    if not path.is_file():
        return eos
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} is not valid JSON ({error}); fix or delete it") from None
    value = data.get("eos_token_id") if isinstance(data, dict) else None
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    return eos if value is None else value


def format_of(data: dict, config_path: Path) -> HFFormat:
    model_type = data.get("model_type")
    if model_type not in FORMATS:
        raise CheckpointError(f"{config_path}: model_type {model_type!r} is not supported; lmforge converts "
                              f"{', '.join(FORMATS)} checkpoints")
    return FORMATS[model_type]


def resolve_task(fmt: HFFormat, architecture: str | None, task: str | None, config_path: Path) -> str:
    """The lmforge task for a checkpoint: `task` if given, else from the architecture (none: embedding)."""
    if task is not None:
        if task not in fmt.tasks:
            raise CheckpointError(f"{config_path}: task {task!r} is not available for {fmt.model_type} "
                                  f"checkpoints; choose one of: {', '.join(fmt.tasks)}")
        return task
    if architecture is None:
        return "embedding"
    if architecture in fmt.unsupported:
        raise CheckpointError(f"{config_path}: {architecture} is not supported: {fmt.unsupported[architecture]}")
    if architecture not in fmt.architectures:
        raise CheckpointError(f"{config_path}: architecture {architecture} is not supported; lmforge reads "
                              f"{', '.join(fmt.architectures)} (or pass task= to choose a head)")
    return fmt.architectures[architecture]
