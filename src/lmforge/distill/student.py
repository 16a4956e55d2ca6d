"""The student: the teacher's architecture with fewer layers, initialised from the teacher.

DistilBERT's initialisation: keep the teacher's embeddings, norms and head, and take one of every
two layers (it took layers 0, 2, 4, 7, 9, 11 of 12). `layer_choice` spreads K layers evenly from
the first to the last; K equal to the teacher's depth copies the teacher exactly.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from ..config import ModelConfig
from ..errors import ConfigError
from ..models.build import build_model

BLOCK_KEY = re.compile(r"^(encoder|decoder)\.blocks\.(\d+)\.(.+)$")


def layer_choice(teacher_depth: int, student_depth: int) -> list[int]:
    """Evenly spaced teacher layers for a student of `student_depth`: the first and the last, and
    round(i * (N - 1) / (K - 1)) between them (12 -> 6 gives 0, 2, 4, 7, 9, 11)."""
    if not 1 <= student_depth <= teacher_depth:
        raise ConfigError(f"a student needs between 1 and {teacher_depth} layers (the teacher's depth), "
                          f"got {student_depth}; a student deeper than its teacher has no layers to start from")
    if student_depth == 1:
        return [0]
    return [round(i * (teacher_depth - 1) / (student_depth - 1)) for i in range(student_depth)]


def student_config(teacher: ModelConfig, layers: int | None = None, config_file: str | Path | None = None) -> ModelConfig:
    """The student's architecture: the teacher's with `layers` layers in each stack (default: half,
    rounded up), or the architecture in `config_file`, which must fit the teacher (same family and
    vocabulary, no deeper stack)."""
    if layers is not None and config_file is not None:
        raise ConfigError("give either --student-layers or --student-config, not both")
    if config_file is not None:
        config = ModelConfig.from_file(config_file)
        _check_fits(config, teacher)
        return config
    depth = layers if layers is not None else -(-teacher.n_layers // 2)
    layer_choice(teacher.n_layers, depth)  # validates the depth
    changes = {"n_layers": depth, "name": f"{teacher.name or 'model'}-student-{depth}l"}
    if teacher.is_encoder_decoder:
        decoder_depth = layers if layers is not None else -(-teacher.decoder_layers // 2)
        layer_choice(teacher.decoder_layers, decoder_depth)
        changes["n_decoder_layers"] = decoder_depth
    return teacher.replace(**changes)


def _check_fits(student: ModelConfig, teacher: ModelConfig) -> None:
    if student.family != teacher.family:
        raise ConfigError(f"the student config is a {student.family} but the teacher is a {teacher.family}; "
                          "distillation keeps the family")
    if student.vocab_size != teacher.vocab_size:
        raise ConfigError(f"the student config has vocab_size {student.vocab_size} but the teacher "
                          f"{teacher.vocab_size}; soft targets need the same vocabulary (set vocab_size "
                          f"{teacher.vocab_size})")
    if student.num_labels != teacher.num_labels:
        raise ConfigError(f"the student config has num_labels {student.num_labels} but the teacher "
                          f"{teacher.num_labels}; set num_labels {teacher.num_labels}")
    for name, mine, theirs in (("n_layers", student.n_layers, teacher.n_layers),
                               ("decoder layers", student.decoder_layers, teacher.decoder_layers)):
        if mine > theirs:
            raise ConfigError(f"the student config has {mine} {name} but the teacher only {theirs}; "
                              "a student deeper than its teacher has no layers to start from")


def make_student(teacher: nn.Module, config: ModelConfig) -> tuple[nn.Module, dict]:
    """Build the student (the teacher's task and tokenizer) and copy every teacher weight that fits:
    block i of each student stack from the teacher block `layer_choice` picks, everything else
    (embeddings, positions, norms, pooler, head) by name. Returns (student, {"layers": {stack: [...]},
    "copied": n, "total": n}); weights whose shape differs (a narrower --student-config) stay random."""
    student = build_model(config, teacher.task)
    student.attach_tokenizer(teacher.tokenizer)
    depth = {"encoder": config.n_layers, "decoder": config.decoder_layers}
    teacher_depth = {"encoder": teacher.config.n_layers, "decoder": teacher.config.decoder_layers}
    if config.family == "decoder":  # a decoder-only model's one stack is called `decoder`
        depth["decoder"], teacher_depth["decoder"] = config.n_layers, teacher.config.n_layers
    chosen = {stack: layer_choice(teacher_depth[stack], depth[stack]) for stack in depth}
    source = teacher.state_dict()
    state = student.state_dict()
    copied = 0
    with torch.no_grad():
        for key, tensor in state.items():
            match = BLOCK_KEY.match(key)
            teacher_key = (f"{match[1]}.blocks.{chosen[match[1]][int(match[2])]}.{match[3]}" if match else key)
            if teacher_key in source and source[teacher_key].shape == tensor.shape:
                tensor.copy_(source[teacher_key])
                copied += 1
    present = {match[1] for match in map(BLOCK_KEY.match, state) if match}
    return student, {"layers": {stack: chosen[stack] for stack in sorted(present)}, "copied": copied,
                     "total": len(state)}
