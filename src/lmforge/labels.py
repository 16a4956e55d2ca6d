"""Label conventions shared by the models, the data pipeline and evaluation."""

from __future__ import annotations

IGNORE_INDEX = -100  # a label with this value takes no part in the loss (padding, unmasked tokens, ...)


def label_names(id2label: dict[int, str] | None, num_labels: int) -> dict[int, str]:
    """The class names of a classifier: its `id2label`, or LABEL_0, LABEL_1, ... (Hugging Face's default)."""
    return dict(id2label) if id2label else {i: f"LABEL_{i}" for i in range(num_labels)}
