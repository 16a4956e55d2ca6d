"""Flags shared by the training commands, generated from the settings dataclasses."""

from __future__ import annotations

import dataclasses

from ..train.settings import TrainSettings

SETTING_HELP = {
    "max_steps": "optimizer steps", "batch_size": "sequences per optimizer step, over all processes",
    "grad_accum": "micro-steps per optimizer step", "seq_len": "tokens per sequence (default min(256, max_positions))",
    "lr": "peak learning rate", "warmup_steps": "linear warmup steps", "schedule": "cosine | linear | constant",
    "precision": "fp32 | bf16 (CPU/CUDA autocast) | fp16 (CUDA, with a gradient scaler)",
    "compile": "torch.compile the model", "skip_nonfinite": "skip steps whose loss or gradient is not finite",
    "eval_every": "evaluate every N steps (0: at the end)", "save_every": "checkpoint every N steps (0: at the end)",
    "best_metric": "metric that selects checkpoints/best",
}


def add_setting_flags(parser) -> None:
    """One flag per `TrainSettings` field (--max-steps, --lr, ...), each overriding --run-config."""
    settings = parser.add_argument_group("training settings (override --run-config)")
    for field in dataclasses.fields(TrainSettings):
        flag = "--" + field.name.replace("_", "-")
        if isinstance(field.default, bool):
            settings.add_argument(flag, action="store_true", default=None, help=SETTING_HELP.get(field.name))
        else:
            kind = float if field.name == "clip_norm" else type(field.default)
            settings.add_argument(flag, type=kind, default=None, metavar=field.name.upper(),
                                  help=SETTING_HELP.get(field.name))


def setting_overrides(args) -> dict:
    """The training settings given as flags (None: not given)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainSettings)
            if getattr(args, f.name, None) is not None}

