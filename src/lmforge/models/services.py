"""Model operations implemented in higher layers: saving (lmforge.checkpoint) and generation (lmforge.infer).

`LmforgeModel.save` and `LmforgeModel.generate` call them through here, so the models layer never
imports the layers above it. Each implementing module registers its function when it is imported;
`import lmforge` imports both, and anything under `lmforge` imports the package first.
"""

from __future__ import annotations

from typing import Callable

from ..errors import LmforgeError

_IMPLEMENTATIONS: dict[str, Callable] = {}


def register(name: str, function: Callable) -> Callable:
    """Make `function` the implementation of the model operation `name` ("save" or "generate")."""
    _IMPLEMENTATIONS[name] = function
    return function


def _call(name: str, *args, **kwargs):
    if name not in _IMPLEMENTATIONS:  # only if lmforge's own package __init__ was bypassed
        raise LmforgeError(f"model.{name} is unavailable: import lmforge (the package) before using models")
    return _IMPLEMENTATIONS[name](*args, **kwargs)


def save(model, path, card=None):
    """`lmforge.checkpoint.io.save_checkpoint`."""
    return _call("save", model, path, card=card)


def generate(model, input_ids, attention_mask=None, **options):
    """`lmforge.infer.generate.generate`."""
    return _call("generate", model, input_ids, attention_mask, **options)
