"""Evaluation metrics, computed streaming through the field's own libraries (seqeval, sacrebleu, rouge-score)."""

from .metrics import ClassificationMetrics, EntityMetrics, GenerationMetrics, LanguageModelMetrics

__all__ = ["ClassificationMetrics", "EntityMetrics", "GenerationMetrics", "LanguageModelMetrics"]
