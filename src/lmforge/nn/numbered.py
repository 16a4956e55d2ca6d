"""Objects found by a number: how an operator that torch.compile treats as opaque (its inputs are tensors and
numbers, not Python objects) reaches the layer or weight copies it multiplies by."""

from __future__ import annotations

import itertools
import weakref


class Numbered:
    """A weak registry: `add(obj)` gives `obj` a number, `self[number]` finds it while it lives."""

    def __init__(self):
        self._objects: "weakref.WeakValueDictionary[int, object]" = weakref.WeakValueDictionary()
        self._numbers = itertools.count()

    def add(self, obj) -> int:
        number = next(self._numbers)
        self._objects[number] = obj
        return number

    def __getitem__(self, number: int):
        return self._objects[number]
