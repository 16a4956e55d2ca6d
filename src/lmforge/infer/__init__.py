"""Inference: generation with a KV cache, and task pipelines."""

from .generate import generate, stream
from .options import GenerationOptions
from .pipelines import pipeline

__all__ = ["generate", "stream", "GenerationOptions", "pipeline"]
