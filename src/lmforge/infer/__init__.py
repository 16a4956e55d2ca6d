"""Inference: generation with a KV cache, and task pipelines."""

from .generate import generate, stream
from .options import GenerationOptions

__all__ = ["generate", "stream", "GenerationOptions"]
