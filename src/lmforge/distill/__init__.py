"""Distillation: a smaller student learns from a teacher's soft targets (DistilBERT's recipe).

losses   soft-target KL with T^2, cosine on hidden states, hard labels: one loss for every family
student  the teacher's architecture with fewer layers, initialised from evenly spaced teacher layers
sources  the objective the teacher's head allows (mlm | clm | seq2seq | task) and its batches
report   parameters, throughput and quality, student / teacher, measured on this machine
run      `distill()`: the Trainer with the distillation loss, the report written into the model card
job      `distill_teacher()`: the whole `lmforge distill` job (checks, student, sources, run folder, report)
"""

from .losses import DistillationLoss, LossWeights, cosine_loss, hard_label_loss, soft_target_loss
from .report import distillation_report, format_report
from .run import distill
from .sources import objective_for
from .student import layer_choice, make_student, student_config

__all__ = ["DistillationLoss", "LossWeights", "cosine_loss", "hard_label_loss", "soft_target_loss",
           "distillation_report", "format_report", "distill", "objective_for", "layer_choice", "make_student",
           "student_config"]
