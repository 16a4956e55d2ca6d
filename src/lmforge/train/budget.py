"""A wall-clock budget turned into a number of steps, so that the schedule is laid out for the budget.

`plan_steps` times a few real optimizer steps of a throw-away copy of the model on real batches, then
sizes the run: max_steps = (budget - reserve) / seconds per step. The run then has a fixed step count,
so its learning-rate schedule reaches its end exactly at the last step and `--resume` continues it
bitwise like any other run; a `TimeBudget` callback still ends it at the budget if the machine slows down.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from .optim import build_optimizer
from .settings import TrainSettings
from .trainer import default_loss, loss_and_parts

RESERVE = 0.08  # of the budget, for evaluation, checkpoints and the final save
TIMED_STEPS = 3


def measure_step_seconds(model: nn.Module, batches: Iterable[dict], loss_fn: Callable, settings: TrainSettings,
                         steps: int = TIMED_STEPS) -> float:
    """Median seconds of one optimizer step (forward, backward, AdamW) on a copy of `model`, after one
    untimed warm-up step. The model, and every random generator, are left as they were."""
    numpy_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        trial = copy.deepcopy(model).train()
        optimizer = build_optimizer(trial, settings)
        times, source = [], iter(batches)
        for index in range(steps + 1):
            batch = next(source)
            started = time.perf_counter()
            for _ in range(settings.grad_accum):
                loss_and_parts(loss_fn(trial, batch))[0].backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if index:
                times.append(time.perf_counter() - started)
    np.random.set_state(numpy_state)
    return statistics.median(times)


def minimum_budget(step_seconds: float) -> int:
    """The shortest budget that holds one step and the reserve, in whole seconds."""
    return math.ceil(step_seconds / (1 - RESERVE) + 1)


def steps_for_budget(seconds: float, step_seconds: float, flag: str = "--time-budget") -> int:
    """Optimizer steps that fit in `seconds` at `step_seconds` each, after the reserve; ConfigError when
    the budget cannot hold one step."""
    if not seconds > 0:
        raise ConfigError(f"{flag} must be a positive number of seconds, got {seconds:g}")
    steps = int(seconds * (1 - RESERVE) // step_seconds)
    if steps < 1 or seconds < minimum_budget(step_seconds):
        raise ConfigError(f"{flag} {seconds:g} is shorter than one training step here ({step_seconds:.2f} s measured); "
                          f"give at least {minimum_budget(step_seconds)} seconds")
    return steps


def fit_to_budget(seconds: float, model: nn.Module, settings: TrainSettings, sources, loss_fn, recipe, given: dict,
                  world_size: int = 1) -> tuple[TrainSettings, float]:
    """`settings` with max_steps sized so that training ends at `seconds` (the trial steps' own time
    counted; `model`, a fresh copy of what the run trains, is timed), warm-up from the recipe's share and about ten evaluations and checkpoints; returns them with
    the seconds left for training (the `TimeBudget` that ends the run if the machine slows down)."""
    if not seconds > 0:
        raise ConfigError(f"--time-budget must be a positive number of seconds, got {seconds:g}")
    started = time.perf_counter()
    step_seconds = measure_step_seconds(model, sources.train(settings.micro_batch_size(world_size)),
                                        loss_fn or default_loss, settings)
    spent = time.perf_counter() - started
    least = math.ceil(spent + minimum_budget(step_seconds))
    if seconds < least:
        raise ConfigError(f"--time-budget {seconds:g} is shorter than one training step here ({step_seconds:.2f} s "
                          f"measured, after {spent:.0f} s of timing); give at least {least} seconds")
    steps = steps_for_budget(seconds - spent, step_seconds)
    values = {**settings.to_dict(), "max_steps": steps}
    if given.get("warmup_steps") is None and recipe.warmup_fraction is not None:
        values["warmup_steps"] = max(1, round(recipe.warmup_fraction * steps))
    values["warmup_steps"] = min(values["warmup_steps"], steps)
    for name, share in (("eval_every", 10), ("save_every", 10), ("log_every", 50)):  # the budget is checked at logs
        if given.get(name) is None:
            values[name] = max(1, steps // share)
    return TrainSettings.from_dict(values), seconds - (time.perf_counter() - started)
