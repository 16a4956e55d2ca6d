"""A wall-clock budget turned into a number of steps, so that the schedule is laid out for the budget.

`fit_to_budget` times a few real optimizer steps of a throw-away copy of the model on real batches and
one evaluation on the validation split, then sizes the run: max_steps steps plus their evaluations (one
every eval_every steps and one at the end) fill the budget after a reserve for checkpoints and the final
save. The run then has a fixed step count, so its learning-rate schedule reaches its end exactly at the
last step and `--resume` continues it bitwise like any other run; a `TimeBudget` callback still ends it
at the budget if the machine slows down.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from .optim import build_optimizer
from .settings import TrainSettings
from .trainer import default_loss, loss_and_parts

RESERVE = 0.05  # of the budget, for checkpoints and the final save (evaluations are timed and counted)
TIMED_STEPS = 3  # timed trial steps at least
TIMING_SHARE = 0.01  # and more of them until this share of the budget is spent, so one slow moment weighs less
MAX_TIMED_STEPS = 30
EVALUATIONS = 10  # about this many evaluations (and checkpoints) per run
MIN_EVAL_INTERVAL = 20  # steps between evaluations at least: a short budget trains rather than evaluates


def measure_step_seconds(model: nn.Module, batches: Iterable[dict], loss_fn: Callable, settings: TrainSettings,
                         steps: int = TIMED_STEPS, seconds: float = 0.0) -> float:
    """Median seconds of one optimizer step (forward, backward, AdamW) on a copy of `model`, after one
    untimed warm-up step: `steps` timed steps, and more (up to MAX_TIMED_STEPS) until `seconds` have passed,
    so that a moment of load on a shared machine does not size the whole run. The model, and every random
    generator, are left as they were."""
    numpy_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        trial = copy.deepcopy(model).train()
        optimizer = build_optimizer(trial, settings)
        source = endless(batches)

        def timed_step() -> float:
            batch = next(source)
            started = time.perf_counter()
            for _ in range(settings.grad_accum):
                loss_and_parts(loss_fn(trial, batch))[0].backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return time.perf_counter() - started

        timed_step()  # warm-up (allocations, kernel choice): not counted
        times, began = [], time.perf_counter()
        while len(times) < steps or (time.perf_counter() - began < seconds and len(times) < MAX_TIMED_STEPS):
            times.append(timed_step())
    np.random.set_state(numpy_state)
    return statistics.median(times)


def endless(batches: Iterable[dict]) -> Iterator[dict]:
    """The batches of `batches` pass after pass (a small corpus may hold fewer batches than the timing
    takes); ConfigError when a pass yields none."""
    while True:
        count = 0
        for count, batch in enumerate(batches, 1):
            yield batch
        if count == 0:
            raise ConfigError("the training split yields no batch to time; give more text or a smaller --batch-size")


def measure_eval_seconds(model: nn.Module, batches: Iterable[dict], loss_fn: Callable, limit: int) -> float:
    """Seconds of one evaluation as the Trainer runs it: the loss of `model` (eval mode, no gradients) over
    `batches`, at most `limit` of them (0: all). Random generators are left as they were."""
    numpy_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        was_training = model.training
        model.eval()
        started = time.perf_counter()
        for index, batch in enumerate(batches):
            if limit and index >= limit:
                break
            loss_and_parts(loss_fn(model, batch))
        seconds = time.perf_counter() - started
        model.train(was_training)
    np.random.set_state(numpy_state)
    return seconds


def evaluation_interval(steps: int) -> int:
    """Steps between evaluations for a run of `steps`: about EVALUATIONS of them, never closer than
    MIN_EVAL_INTERVAL steps (a run shorter than that evaluates at its end only)."""
    return max(MIN_EVAL_INTERVAL, steps // EVALUATIONS)


def require_budget(seconds: float, flag: str = "--time-budget") -> None:
    """ConfigError unless `seconds` is a positive, finite number of seconds."""
    if not 0 < seconds < math.inf:
        raise ConfigError(f"{flag} must be a positive, finite number of seconds, got {seconds:g}")


def plan_steps(seconds: float, step_seconds: float, eval_seconds: float = 0.0, eval_every: int | None = None,
               flag: str = "--time-budget") -> tuple[int, int]:
    """(max_steps, eval_every) so that the steps and their evaluations (one every eval_every steps and one
    at the end, `eval_seconds` each) fit in `seconds` after the reserve; `eval_every` None: chosen by
    `evaluation_interval`. ConfigError when the budget cannot hold one step and one evaluation."""
    require_budget(seconds, flag)
    usable = seconds * (1 - RESERVE)

    def fitting(every: int) -> int:  # the most steps that fit with an evaluation every `every` steps
        steps = int(usable // (step_seconds + eval_seconds / every))
        while steps >= 1 and steps * step_seconds + math.ceil(steps / every) * eval_seconds > usable:
            steps -= 1  # the evaluation at the end: at most one evaluation's worth of steps
        return max(steps, 0)

    every = eval_every or evaluation_interval(int(usable // step_seconds))
    steps = fitting(every)
    for _ in range(4):  # the interval follows the step count, which the interval's evaluations shorten
        if eval_every or evaluation_interval(max(steps, 1)) == every:
            break
        every = evaluation_interval(max(steps, 1))
        steps = fitting(every)
    if steps < 1:
        least = minimum_budget(step_seconds + eval_seconds)
        raise ConfigError(f"{flag} {seconds:g} is shorter than one training step and one evaluation here "
                          f"({step_seconds:.2f} s and {eval_seconds:.2f} s measured); give at least {least} seconds")
    return steps, every


def minimum_budget(step_seconds: float) -> int:
    """The shortest budget that holds one step and the reserve, in whole seconds."""
    return math.ceil(step_seconds / (1 - RESERVE) + 1)


def fit_to_budget(seconds: float, model: nn.Module, settings: TrainSettings, sources, loss_fn, recipe, given: dict,
                  world_size: int = 1) -> tuple[TrainSettings, float]:
    """`settings` with max_steps sized so that training and its evaluations end at `seconds` (the trial's own
    time counted: `model`, a fresh copy of what the run trains, is timed for a few steps and one evaluation on
    `sources.valid`), warm-up from the recipe's share, evaluations and checkpoints every `evaluation_interval`
    steps unless given; returns them with the seconds left (the `TimeBudget` that ends the run if the machine
    slows down)."""
    require_budget(seconds)
    started = time.perf_counter()
    loss_fn = loss_fn or default_loss
    micro = settings.micro_batch_size(world_size)
    step_seconds = measure_step_seconds(model, sources.train(micro), loss_fn, settings, seconds=TIMING_SHARE * seconds)
    evaluates = sources.has_valid and given.get("eval_every") != 0
    eval_seconds = measure_eval_seconds(model, sources.valid(micro), loss_fn, settings.eval_batches) if evaluates else 0.0
    left = seconds - (time.perf_counter() - started)
    if left <= 0 or left * (1 - RESERVE) < step_seconds + eval_seconds:
        least = math.ceil(seconds - left + minimum_budget(step_seconds + eval_seconds))
        raise ConfigError(f"--time-budget {seconds:g} is shorter than one training step and one evaluation here "
                          f"({step_seconds:.2f} s and {eval_seconds:.2f} s measured, after {seconds - left:.0f} s of "
                          f"timing); give at least {least} seconds")
    steps, every = plan_steps(left, step_seconds, eval_seconds, given.get("eval_every") or None)
    values = {**settings.to_dict(), "max_steps": steps, "eval_every": every if evaluates else settings.eval_every}
    if given.get("warmup_steps") is None and recipe.warmup_fraction is not None:
        values["warmup_steps"] = max(1, round(recipe.warmup_fraction * steps))
    values["warmup_steps"] = min(values["warmup_steps"], steps)
    if given.get("save_every") is None:
        values["save_every"] = evaluation_interval(steps)
    if given.get("log_every") is None:  # the budget is checked at logs
        values["log_every"] = max(1, min(every, steps // 50))
    return TrainSettings.from_dict(values), seconds - (time.perf_counter() - started)
