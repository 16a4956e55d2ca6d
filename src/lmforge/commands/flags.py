"""Flags shared by the training commands, generated from the settings dataclasses."""

from __future__ import annotations

import argparse
import dataclasses

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


def add_setting_flags(parser, title: str = "training settings (override --run-config)",
                      description: str | None = None, exclude: tuple[str, ...] = ()) -> None:
    """One flag per `TrainSettings` field (--max-steps, --lr, ...), each overriding the command's defaults;
    `exclude`: fields the command sets itself."""
    settings = parser.add_argument_group(title, description)
    for field in dataclasses.fields(TrainSettings):
        if field.name in exclude:
            continue
        flag = "--" + field.name.replace("_", "-")
        if isinstance(field.default, bool):
            settings.add_argument(flag, action="store_true", default=None, help=SETTING_HELP.get(field.name))
        else:
            kind = float if field.name == "clip_norm" else type(field.default)
            settings.add_argument(flag, type=kind, default=None, metavar=field.name.upper(),
                                  help=SETTING_HELP.get(field.name))


def setting_overrides(args, exclude: tuple[str, ...] = ()) -> dict:
    """The training settings given as flags (None: not given)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainSettings)
            if f.name not in exclude and getattr(args, f.name, None) is not None}



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
