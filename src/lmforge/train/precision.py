"""Training precision: which precisions a device runs, and bf16 mixed precision with fp32 master weights.

bf16 training keeps the model the trainer owns (saved, evaluated by callbacks, stepped by the optimizer)
in float32: these are the master weights. Forward and backward run on a `WorkingCopy`, the same module
with every weight cast to bf16 ONCE per optimizer step, so activations stay bf16 from end to end and no
matrix product casts its weight again (as per-op autocast does on every call). Its bf16 gradients are
moved into the master's float32 `.grad` before clipping; after the optimizer step the master weights are
copied back into the working copy. The loss stays float32 (the heads take cross-entropy in float32).
"""

from __future__ import annotations

import copy
import sys

import torch
from torch import nn

from ..devices import cpu_has_bf16_units, half_precision_problem
from ..errors import ConfigError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a precision `device` cannot train in (`ConfigError`, one line naming the alternative);
    warn on stderr when it runs but emulated (bf16 on a CPU without bf16 units)."""
    problem = half_precision_problem(precision, device)
    if problem is not None:
        other = "bf16 or fp32" if precision == "fp16" else "fp16 or fp32"
        raise ConfigError(f"precision {problem}; use --precision {other}")
    if precision == "bf16" and device.type == "cpu" and not cpu_has_bf16_units():
        print("warning: this CPU has no bf16 matrix units (AVX512-BF16/AMX), so bf16 training is emulated and "
              "runs slower than fp32 here; --precision fp32 is faster on this machine", file=sys.stderr, flush=True)


class WorkingCopy:
    """A low-precision copy of `master` for forward and backward (see the module docstring).

    Tied weights stay tied (one copied tensor), frozen weights are cast once and never refreshed,
    buffers take the working dtype as `module.to(dtype)` gives them."""

    def __init__(self, master: nn.Module, dtype: torch.dtype):
        shared = getattr(master, "tokenizer", None)  # not copied: the copy only computes
        self.module = copy.deepcopy(master, {id(shared): shared} if shared is not None else None).to(dtype)
        pairs = zip(master.parameters(), self.module.parameters())  # same order: the same module tree
        self.trained = [(main, work) for main, work in pairs if main.requires_grad]

    @torch.no_grad()
    def gradients_to_master(self) -> None:
        """Move the working copy's gradients into the master weights' `.grad` as float32."""
        for main, work in self.trained:
            if work.grad is not None:
                main.grad = work.grad.to(main.dtype)
                work.grad = None

    @torch.no_grad()
    def refresh(self) -> None:
        """Copy the (updated) master weights into the working copy, rounding them to its dtype."""
        if self.trained:
            torch._foreach_copy_([work for _, work in self.trained], [main for main, _ in self.trained])
