"""`TrainSettings`: every knob of a training run as plain data (YAML/JSON run files, CLI overrides)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..files import check_fields, coerce_fields, read_mapping
from ..models.weight_formats import INFERENCE_ONLY

SCHEDULES = ("cosine", "linear", "constant")
PRECISIONS = ("fp32", "bf16", "fp16")
MODES = ("min", "max")


@dataclass
class TrainSettings:
    """Hyperparameters of one run. `batch_size` is the global number of sequences per optimizer
    step (over all ranks and accumulation micro-steps): changing the number of processes or
    `grad_accum` does not change what one step computes."""

    max_steps: int = 1000
    batch_size: int = 8
    grad_accum: int = 1
    seq_len: int = 256
    lr: float = 3e-4
    min_lr_ratio: float = 0.1  # the schedule decays to lr * min_lr_ratio
    warmup_steps: int = 100
    schedule: str = "cosine"
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    adam_eps: float = 1e-8
    clip_norm: float | None = 1.0  # None or 0: no clipping
    precision: str = "fp32"
    compile: bool = False
    seed: int = 0
    log_every: int = 10
    eval_every: int = 100  # 0: evaluate only at the end
    eval_batches: int = 20  # batches per evaluation (0: the whole evaluation set)
    save_every: int = 100  # 0: save only at the end
    best_metric: str = "eval_loss"
    best_mode: str = "min"
    skip_nonfinite: bool = False
    max_skips: int = 20  # stop anyway after this many skipped non-finite steps

    def validate(self) -> "TrainSettings":
        """Check every value; raise `ConfigError` naming the setting and a valid range. Returns self."""

        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(f"invalid training setting: {message}")

        check_fields(self, "training setting")
        for name in ("max_steps", "batch_size", "grad_accum", "seq_len"):
            value = getattr(self, name)
            need(isinstance(value, int) and value > 0, f"{name} must be a positive integer, got {value!r}")
        for name in ("warmup_steps", "log_every", "eval_every", "eval_batches", "save_every", "max_skips"):
            value = getattr(self, name)
            need(isinstance(value, int) and value >= 0, f"{name} must be an integer >= 0, got {value!r}")
        need(self.lr > 0 and self.lr < 1, f"lr must be in (0, 1), got {self.lr}")
        need(0 <= self.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        need(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        need(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, f"beta1/beta2 must be in [0, 1), got {self.beta1}, {self.beta2}")
        need(self.adam_eps > 0, f"adam_eps must be positive, got {self.adam_eps}")
        need(self.clip_norm is None or self.clip_norm >= 0, f"clip_norm must be >= 0 or null, got {self.clip_norm}")
        need(self.schedule in SCHEDULES, f"schedule={self.schedule!r} is not one of {', '.join(SCHEDULES)}")
        need(self.precision != "int8", f"precision int8: {INFERENCE_ONLY}; train in fp32 or bf16 (--precision) and "
             "load the result with dtype int8 (--dtype int8) to run it")
        need(self.precision in PRECISIONS, f"precision={self.precision!r} is not one of {', '.join(PRECISIONS)}")
        need(self.best_mode in MODES, f"best_mode={self.best_mode!r} is not one of {', '.join(MODES)}")
        need(self.warmup_steps <= self.max_steps,
             f"warmup_steps={self.warmup_steps} exceeds max_steps={self.max_steps}; lower --warmup-steps "
             "(or leave it out: the default warm-up is shortened to the run)")
        return self

    def check_world(self, world_size: int) -> None:
        """The global batch must split evenly over ranks and accumulation micro-steps."""
        parts = world_size * self.grad_accum
        if self.batch_size % parts:
            raise ConfigError(f"batch_size={self.batch_size} does not split over {world_size} process(es) x "
                              f"grad_accum={self.grad_accum}; choose a batch_size divisible by {parts}")

    def micro_batch_size(self, world_size: int) -> int:
        """Sequences per forward pass on one rank."""
        self.check_world(world_size)
        return self.batch_size // (world_size * self.grad_accum)

    # ---- serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], defaults: dict[str, Any] | None = None) -> "TrainSettings":
        """Settings from `data` (what the user gave) over `defaults` (a command's own defaults, else the
        class's). One rule for every command: a value the user gave is honoured or refused; a default
        warm-up longer than the run is shortened to the run (max_steps)."""
        data = coerce_fields(cls, data)
        if "warmup_steps" not in data:
            steps = data.get("max_steps", (defaults or {}).get("max_steps", cls.max_steps))
            warmup = (defaults or {}).get("warmup_steps", cls.warmup_steps)
            if isinstance(steps, int) and not isinstance(steps, bool):
                data = {**data, "warmup_steps": min(warmup, max(steps, 0))}
        data = {**(defaults or {}), **data}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown training setting(s) {', '.join(unknown)}; "
                              f"valid settings are: {', '.join(sorted(known))}")
        return cls(**coerce_fields(cls, data)).validate()

    def updated(self, overrides: dict[str, Any]) -> "TrainSettings":
        """A validated copy with the non-None values of `overrides` applied (command-line flags)."""
        return TrainSettings.from_dict({**self.to_dict(), **{k: v for k, v in overrides.items() if v is not None}})


def read_run_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON run file: a mapping whose keys are `TrainSettings` fields (a nested
    `train:` mapping is accepted too, leaving room for other sections)."""
    data = read_mapping(path, "run file")
    section = data.get("train", data)
    if not isinstance(section, dict):
        raise ConfigError(f"run file {path}: 'train' must be a mapping of training settings")
    return dict(section)
