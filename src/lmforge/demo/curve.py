"""The label-efficiency curve: test accuracy against labelled examples per class, for several starting points.

For every size k and fine-tuning seed s, k training examples of every label are drawn (seeded by s, the
same draw for every arm), each arm is fine-tuned on them for the same number of steps, and every test
example's result is kept. A point of the curve is the mean over seeds; the paired comparison of two arms
at a size uses every (seed, test example) pair (lmforge.eval.paired).
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..checkpoint.atomic import write_text
from ..eval.hits import classification_hits
from ..eval.paired import compare_paired
from ..finetune import DataOptions, FinetuneRequest, finetune
from ..finetune.tasks import sample_per_label


@dataclass(frozen=True)
class Arm:
    """One starting point: a checkpoint, fine-tuned as it is or re-initialised (`from_scratch`)."""

    name: str
    checkpoint: Path
    from_scratch: bool = False
    folder: str | None = None  # its runs' folder under the curve's (default: arm<position in the list>)
    epochs: float | None = None  # its own fine-tuning budget (default: the plan's), e.g. fewer passes for a
    min_steps: int | None = None  # large model that converges in fewer steps


@dataclass(frozen=True)
class CurvePlan:
    """Sizes (labelled examples per class), seeds, and the fine-tuning budget of every run."""

    sizes: tuple[int, ...]
    seeds: int
    max_length: int
    batch_size: int = 16
    epochs: int = 4  # passes over the labelled examples, but at least min_steps optimizer steps
    min_steps: int = 40

    def steps(self, examples: int, arm: Arm | None = None) -> int:
        """Optimizer steps for a run of `arm` (its own budget if it has one) on `examples` labelled examples."""
        epochs = arm.epochs if arm is not None and arm.epochs is not None else self.epochs
        least = arm.min_steps if arm is not None and arm.min_steps is not None else self.min_steps
        return max(least, math.ceil(epochs * examples / self.batch_size))


@dataclass
class ArmResults:
    """One arm's results: per size, the test accuracy and the per-example hits of every seed."""

    name: str
    accuracy: dict[int, list[float]] = field(default_factory=dict)
    hits: dict[int, list[list[bool]]] = field(default_factory=dict)
    wall_s: float = 0.0
    cpu_s: float = 0.0  # CPU seconds of its process (every thread) for fine-tuning and testing
    energy_wh: float = 0.0
    co2_g: float = 0.0
    kept_checkpoint: str | None = None

    def merged(self, other: "ArmResults") -> "ArmResults":
        """These results and `other`'s, the same arm run at other sizes (in another process): every size of
        both, costs added, and the kept checkpoint of the one that ran the largest size."""
        largest = max((self, other), key=lambda r: max(r.accuracy, default=0))
        return ArmResults(self.name, {**self.accuracy, **other.accuracy}, {**self.hits, **other.hits},
                          self.wall_s + other.wall_s, self.cpu_s + other.cpu_s, self.energy_wh + other.energy_wh,
                          self.co2_g + other.co2_g, largest.kept_checkpoint)

    def point(self, size: int) -> dict[str, float]:
        """Mean, standard deviation, min and max over seeds at `size`."""
        values = self.accuracy[size]
        return {"mean": statistics.fmean(values), "sd": statistics.pstdev(values) if len(values) > 1 else 0.0,
                "min": min(values), "max": max(values), "seeds": values}


def run_curve(arms: list[Arm], labelled: list[tuple[str, str]], test_file: Path, plan: CurvePlan, out: Path,
              say: Callable[[str], None] = print, use_codecarbon: bool = False) -> list[ArmResults]:
    """Fine-tune every arm at every size and seed; return their results. `labelled`: (label, text) pairs the
    training sets are drawn from (a size larger than a label's count is a DataError, before any training)."""
    draws = {(size, seed): sample_per_label(labelled, lambda row: row[0], size, seed)
             for size in plan.sizes for seed in range(plan.seeds)}
    results = [ArmResults(arm.name) for arm in arms]
    options = DataOptions(max_length=plan.max_length)  # every arm reads the same first tokens
    for size in plan.sizes:
        for seed in range(plan.seeds):
            train_file = out / "data" / f"train_{size}_seed{seed}.jsonl"
            write_text(train_file, "".join(json.dumps({"label": label, "text": text}, ensure_ascii=False) + "\n"
                                           for label, text in draws[size, seed]))
            line = []
            for index, (arm, result) in enumerate(zip(arms, results)):
                settings = {"max_steps": plan.steps(len(draws[size, seed]), arm), "batch_size": plan.batch_size,
                            "seed": seed, "eval_every": 0, "save_every": 0, "log_every": 10}
                folder = out / (arm.folder or f"arm{index + 1}") / f"size{size}_seed{seed}"
                cpu = time.process_time()
                request = FinetuneRequest("classify", train_file, checkpoint=arm.checkpoint,
                                          from_scratch=arm.from_scratch, settings=settings, data=options)
                run = finetune(folder, request, progress=False, use_codecarbon=use_codecarbon)
                hits = classification_hits(run.model_path, test_file, data_options=options)
                result.hits.setdefault(size, []).append(hits)
                result.accuracy.setdefault(size, []).append(sum(hits) / len(hits))
                result.wall_s += run.wall_s
                result.cpu_s += time.process_time() - cpu
                result.energy_wh += run.energy_kwh * 1000
                result.co2_g += run.co2_kg * 1000
                if size == max(plan.sizes) and seed == 0:
                    result.kept_checkpoint = str(run.model_path)  # one fine-tuned model per arm to try
                else:
                    shutil.rmtree(folder)  # written by this run; 27 checkpoints would fill a small disk
                line.append(f"{arm.name.split(' (')[0]} {result.accuracy[size][-1]:.3f}")
            say(f"   {size:>3} per class, seed {seed}: " + ", ".join(line))
    return results


def _quiet(line: str) -> None:
    """`say` for a curve run in another process: its lines are reported by the caller from the results."""


def follow_parent(threads: int, parent: int) -> None:
    """Pool initializer of a background curve: `threads` torch threads, and a watcher that ends this process
    as soon as `parent` is gone. A parent killed by a signal (SIGTERM, SIGKILL) runs no cleanup, and the pool's
    worker would otherwise go on fine-tuning, unseen, for minutes."""
    torch.set_num_threads(threads)

    def watch() -> None:
        while os.getppid() == parent:  # an orphan is adopted by another process
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="follow-parent", daemon=True).start()


class BackgroundCurve:
    """`run_curve` in a separate process with its own torch threads (`start_curve`); `results()` waits.
    The process ends with this one, however this one ends (`follow_parent`)."""

    def __init__(self, arms: list[Arm], labelled, test_file: Path, plan: CurvePlan, out: Path, threads: int):
        self.pool = multiprocessing.get_context("spawn").Pool(1, initializer=follow_parent,
                                                              initargs=(threads, os.getpid()))
        self.job = self.pool.apply_async(run_curve, (arms, labelled, test_file, plan, out, _quiet))
        self.pool.close()

    def results(self) -> list[ArmResults]:
        """The arms' results once the process is done (its error, if it failed, is raised here)."""
        try:
            return self.job.get()
        finally:
            self.pool.join()

    def stop(self) -> None:
        """End the process if it still runs (the caller failed or was interrupted)."""
        self.pool.terminate()
        self.pool.join()


def start_curve(arms: list[Arm], labelled, test_file: Path, plan: CurvePlan, out: Path, threads: int) -> BackgroundCurve:
    """Start `run_curve` for `arms` in another process with `threads` torch threads: an arm that needs
    nothing from the rest of an experiment (a published checkpoint) fine-tunes while this process pretrains.
    Every run is seeded, so the results equal those of `run_curve` in this process at that thread count."""
    return BackgroundCurve(arms, labelled, test_file, plan, out, threads)


def arm_lines(result: ArmResults, sizes: tuple[int, ...]) -> list[str]:
    """One line per size: the arm's test accuracy in every seed."""
    return [f"   {size:>3} per class, {result.name.split(' (')[0]}: " + ", ".join(f"{a:.3f}" for a in result.accuracy[size])
            for size in sizes]


def comparisons(first: ArmResults, second: ArmResults, sizes: tuple[int, ...]) -> dict[str, dict[str, Any]]:
    """The paired comparison of `first` against `second` at every size (keyed by the size as text, as in
    summary.json): verdict, interval, p-value."""
    return {str(size): compare_paired(first.hits[size], second.hits[size]).to_dict() for size in sizes}


def curve_summary(results: list[ArmResults], sizes: tuple[int, ...]) -> list[dict[str, Any]]:
    """The arms as JSON-ready dicts: points per size, cost, and the fine-tuned model kept."""
    return [{"name": r.name, "points": {str(size): r.point(size) for size in sizes}, "wall_s": r.wall_s,
             "cpu_s": r.cpu_s, "energy_wh": r.energy_wh, "co2_g": r.co2_g, "checkpoint": r.kept_checkpoint} for r in results]
