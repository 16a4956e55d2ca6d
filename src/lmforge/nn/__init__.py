"""The only Transformer building blocks; every family is assembled from these."""

from .attention import Attention
from .block import Block
from .cache import KVCache
from .stack import Stack

__all__ = ["Attention", "Block", "KVCache", "Stack"]
