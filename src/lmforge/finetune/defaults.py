"""Fine-tuning settings that follow the model's size, and the check that a run learned more than the labels' frequencies.

A learning rate that suits BERT-base (5e-5) leaves a 2M-parameter model at the majority class; one that
suits the tiny model (1e-3) wrecks BERT-base. When the user gives no learning rate, warm-up or batch
size, they come from SIZE_RULES by the model's parameter count.
"""

from __future__ import annotations

from collections import Counter

# (parameters below, learning rate): the first rule whose bound exceeds the model's count applies
SIZE_RULES = ((10_000_000, 1e-3), (60_000_000, 2e-4), (200_000_000, 5e-5), (float("inf"), 2e-5))
WARMUP_FRACTION = 0.1
BATCH_SIZE = 32
LARGE_MODEL = 200_000_000  # from here a batch of 16 (memory)


def size_defaults(parameters: int, max_steps: int) -> dict:
    """lr, warmup_steps and batch_size for a model of `parameters` trained `max_steps` steps."""
    lr = next(rate for bound, rate in SIZE_RULES if parameters < bound)
    return {"lr": lr, "warmup_steps": max(1, round(WARMUP_FRACTION * max_steps)),
            "batch_size": 16 if parameters >= LARGE_MODEL else BATCH_SIZE}


def majority_level(labels: list) -> tuple[object, float]:
    """The most frequent label of `labels` and the accuracy of always predicting it."""
    label, count = Counter(labels).most_common(1)[0]
    return label, count / len(labels)


def stuck_at_majority_warning(best_accuracy: float | None, labels: list, lr: float, parameters: int,
                              tolerance: float = 0.01) -> str | None:
    """A warning when the best validation accuracy never rose above always predicting the majority
    label (None when it did, or without validation labels)."""
    if best_accuracy is None or not labels:
        return None
    label, level = majority_level(labels)
    if best_accuracy > level + tolerance:
        return None
    suggested = next(rate for bound, rate in SIZE_RULES if parameters < bound)
    lr_advice = (f"--lr {suggested:g} (the default for {parameters / 1e6:.1f}M parameters)" if abs(suggested - lr) > 1e-12
                 else f"a larger --lr than {lr:g}")
    return (f"warning: validation accuracy {best_accuracy:.3f} never rose above the majority-class level {level:.3f} "
            f"(always answering {label!r}): the model learned only the label frequencies. Try {lr_advice}, more "
            f"--max-steps, or more labelled examples")
