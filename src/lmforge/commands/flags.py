"""Flags generated from dataclasses (requests and settings), and the flags the training commands share."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing

from ..models.weight_formats import WEIGHT_DTYPES
from ..train.carbon import DEFAULT_COUNTRY
from ..train.settings import TrainSettings

SETTING_HELP = {
    "max_steps": "optimizer steps", "batch_size": "sequences per optimizer step, over all processes",
    "grad_accum": "micro-steps per optimizer step", "seq_len": "tokens per sequence (default min(256, max_positions))",
    "lr": "peak learning rate", "warmup_steps": "linear warmup steps", "schedule": "cosine | linear | constant",
    "precision": "fp32 | bf16 (fp32 master weights, bf16 compute; fast on CUDA and CPUs with AVX512-BF16/AMX) | "
                 "fp16 (CUDA, with a gradient scaler)",
    "compile": "torch.compile the model", "skip_nonfinite": "skip steps whose loss or gradient is not finite",
    "eval_every": "evaluate every N steps (0: at the end)", "save_every": "checkpoint every N steps (0: at the end)",
    "best_metric": "metric that selects checkpoints/best",
}


def add_dataclass_flags(parser, cls, title: str | None = None, description: str | None = None, *, prefix: str = "",
                        exclude: tuple[str, ...] = (), helps: dict[str, str] | None = None) -> None:
    """One flag per field of dataclass `cls`: --PREFIX-NAME (or the field's metadata "flag"; "flag": False
    leaves the field out), typed by the field's annotation, store_true for a bool, default None (the
    dataclass's default applies, see `dataclass_values`). Field metadata may give help, metavar, nargs,
    choices, required, and exclusive (a group name: one of the group's flags, required if any says so).
    `helps`: help texts by field name, for dataclasses without metadata; `title`: an argument group."""
    group = parser.add_argument_group(title, description) if title else parser
    exclusive: dict[str, argparse._MutuallyExclusiveGroup] = {}
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        meta = field.metadata
        if field.name in exclude or meta.get("flag", True) is False:
            continue
        flag = flag_of(field, prefix)
        where = group
        if "exclusive" in meta:
            if meta["exclusive"] not in exclusive:
                exclusive[meta["exclusive"]] = group.add_mutually_exclusive_group(required=meta.get("required", False))
            where = exclusive[meta["exclusive"]]
        options = {"dest": prefix + field.name, "default": None,
                   "help": meta.get("help", (helps or {}).get(field.name))}
        kind = flag_type(hints[field.name])
        if kind is bool:
            options["action"] = "store_true"
        else:
            options.update(type=kind, **{key: meta[key] for key in ("nargs", "choices") if key in meta})
            options["metavar"] = meta.get("metavar", None if "choices" in meta else field.name.upper())
            options["required"] = bool(meta.get("required")) and "exclusive" not in meta
        where.add_argument(flag, **options)


def flag_of(field: dataclasses.Field, prefix: str = "") -> str:
    """The flag of a dataclass field: its metadata's "flag", else --PREFIX-NAME."""
    return field.metadata.get("flag") or "--" + (prefix + field.name).replace("_", "-")


def flag_type(hint) -> type:
    """The type a flag parses for a field annotated `hint`: bool, int or float, else str (paths, lists given
    as comma-separated text, `X | None` as X)."""
    kinds = [k for k in typing.get_args(hint) if k is not type(None)] if isinstance(hint, types.UnionType) else [hint]
    return kinds[0] if kinds[0] in (bool, int, float) else str


def dataclass_values(args, cls, prefix: str = "", exclude: tuple[str, ...] = ()) -> dict:
    """The fields of dataclass `cls` that `add_dataclass_flags` made flags of and the command line gave
    (flags left out are None and not returned)."""
    return {f.name: getattr(args, prefix + f.name) for f in dataclasses.fields(cls)
            if f.name not in exclude and f.metadata.get("flag", True) is not False
            and getattr(args, prefix + f.name, None) is not None}


def add_setting_flags(parser, title: str = "training settings (override --run-config)",
                      description: str | None = None, exclude: tuple[str, ...] = ()) -> None:
    """One flag per `TrainSettings` field (--max-steps, --lr, ...), each overriding the command's defaults;
    `exclude`: fields the command sets itself."""
    add_dataclass_flags(parser, TrainSettings, title, description, exclude=exclude, helps=SETTING_HELP)


def setting_overrides(args, exclude: tuple[str, ...] = ()) -> dict:
    """The training settings given as flags."""
    return dataclass_values(args, TrainSettings, exclude=exclude)


def add_adapter_flag(parser, base: str = "MODEL") -> None:
    """--adapter DIR, the same flag on every command that loads a model: a LoRA adapter folder for `base`."""
    parser.add_argument("--adapter", metavar="DIR", help=f"a LoRA adapter folder (lmforge or PEFT) for {base}")


def add_dtype_flag(parser) -> None:
    """--dtype: the weight format MODEL is loaded in (`lmforge.models.weight_formats.WEIGHT_DTYPES`)."""
    parser.add_argument("--dtype", default=None, metavar="DTYPE",
                        help=f"weights for inference: {' | '.join(WEIGHT_DTYPES)} (default fp32; int8 is weight-only "
                             "per-channel, quantized on load; int8-dynamic also rounds activations to 8 bits per row, "
                             "faster on x86 CPUs; fp16 needs CUDA)")


def add_energy_flags(parser, measure_by_default: bool) -> None:
    """--codecarbon / --no-codecarbon (the same spelling in every command) and --country."""
    default = "measure with codecarbon" if measure_by_default else "estimate from wall time"
    parser.add_argument("--codecarbon", action=argparse.BooleanOptionalAction, default=measure_by_default,
                        help=f"measure energy with codecarbon, or estimate it from wall time only (default: {default})")
    parser.add_argument("--country", default=None,
                        help=f"ISO 3166 alpha-3 country of the electricity grid for CO2 (default {DEFAULT_COUNTRY})")


def add_training_run_flags(parser) -> None:
    """What every command that trains on torchrun-able processes takes: energy, --device, --quiet and one
    flag per training setting."""
    add_energy_flags(parser, measure_by_default=True)
    parser.add_argument("--device", default=None, help="cpu or cuda:N (default: this rank's GPU, else cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_setting_flags(parser)
