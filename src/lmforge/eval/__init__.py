"""Evaluation of a checkpoint on labelled files (`lmforge.eval.evaluate.evaluate`). The metrics are
computed streaming through the field's own libraries (seqeval, sacrebleu, rouge-score) by
lmforge.finetune.metrics, which the fine-tuning loop shares."""

from ..finetune.metrics import ClassificationMetrics, EntityMetrics, GenerationMetrics, LanguageModelMetrics

__all__ = ["ClassificationMetrics", "EntityMetrics", "GenerationMetrics", "LanguageModelMetrics"]
