"""`distill_teacher(...)`: the whole `lmforge distill` job as a library call: checks, student, sources,
the run folder, training and the report.

    result, report = distill_teacher("runs/distil", DistillRequest(teacher="runs/bert/final", data="shards/"))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..checkpoint.folder import load
from ..errors import ConfigError
from ..models.lora import merge_and_unload
from ..seeding import seed_everything
from ..train.carbon import EnergyMeter
from ..train.distributed import Distributed
from ..train.pretrain import settings_for
from ..train.result import TrainResult
from ..train.run_folder import RunFolder
from .losses import LossWeights
from .run import distill
from .sources import OBJECTIVES, labelled_sources, objective_for, shard_sources
from .student import make_student, student_config


@dataclass
class DistillRequest:
    """What a distillation asks for: the teacher, its data (shards or labelled files), the student's size,
    the loss weights and the training settings (a run file, then `settings` overrides)."""

    teacher: str | Path
    teacher_adapter: str | Path | None = None  # a LoRA adapter folder for the teacher, merged in
    data: str | Path | None = None  # prepared token shards (mlm, clm, seq2seq)
    train: str | Path | None = None  # labelled files (task; seq2seq: JSONL pairs)
    valid: str | Path | None = None
    unlabelled: str | Path | None = None  # text lines taught by soft targets only (task)
    objective: str | None = None  # default: from the teacher's head
    student_layers: int | None = None
    student_config: str | Path | None = None
    weights: LossWeights = field(default_factory=LossWeights)
    max_length: int = 128
    speed_batches: int = 20
    run_config: str | Path | None = None
    settings: dict[str, Any] = field(default_factory=dict)


def distill_teacher(out: str | Path, request: DistillRequest, *, overwrite: bool = False,
                    dist: Distributed | None = None, use_codecarbon: bool = True, country: str | None = None,
                    progress: bool = True, say=print) -> tuple[TrainResult, dict]:
    """Distil `request.teacher` into a smaller student in run folder `out` (new, empty, or with `overwrite`
    an earlier distillation); returns (training result, report). Refusals leave nothing behind."""
    dist = dist or Distributed()
    folder = RunFolder(out, "distill")
    folder.open(overwrite=overwrite)
    weights = request.weights.validate()
    teacher = load(request.teacher, adapter=request.teacher_adapter)
    if request.teacher_adapter is not None:
        teacher = merge_and_unload(teacher)  # a plain teacher: the student copies its merged weights
    objective = objective_for(teacher.task, request.objective)
    config = student_config(teacher.config, request.student_layers, request.student_config)
    if weights.alpha_cos and config.d_model != teacher.config.d_model:
        raise ConfigError(f"the student is {config.d_model} wide and the teacher {teacher.config.d_model}, so their "
                          "hidden states cannot be compared; pass --alpha-cos 0")
    settings = settings_for(teacher.config, request.run_config, request.settings)
    settings.check_world(dist.world_size)
    sources = _sources(request, teacher, objective, settings)
    seed_everything(settings.seed)
    student, init = make_student(teacher, config)
    if dist.is_main:
        say(f"student: {config.n_layers} layers from teacher layers {init['layers']}, "
            f"{init['copied']}/{init['total']} tensors copied from the teacher")
        folder.start()
    dist.barrier()
    with folder.refusals_leave_nothing(new=dist.is_main):
        return distill(teacher, student, sources, settings, weights, folder.path, objective=objective, init=init,
                       speed_batches=request.speed_batches, dist=dist,
                       energy=EnergyMeter(country, use_codecarbon=use_codecarbon), progress=progress)


def _sources(request: DistillRequest, teacher, objective: str, settings):
    """Labelled files for task (and seq2seq given --train) distillation, prepared shards otherwise."""
    if OBJECTIVES[objective].reads_files(bool(request.train)):
        if not (request.train and request.valid) or request.data:
            raise ConfigError(f"objective {objective} reads labelled files: give --train FILE and --valid FILE "
                              "(not --data)")
        return labelled_sources(teacher, request.train, request.valid, request.unlabelled, request.max_length,
                                settings.seed)
    if not request.data or request.train or request.valid:
        raise ConfigError(f"objective {objective} reads prepared token shards: give --data DIR (from "
                          "`lmforge prepare` with the teacher's tokenizer), not --train/--valid")
    if request.unlabelled:
        raise ConfigError("--unlabelled is for task distillation; put the text into the prepared shards")
    return shard_sources(teacher, request.data, settings.seq_len, settings.seed)
