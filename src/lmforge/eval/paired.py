"""Is one classifier better than another on the same test examples, beyond chance? Paired tests.

Both models answer the same test examples, once per fine-tuning seed, so their scores are paired:
`correct_a[s, i]` and `correct_b[s, i]` say whether each got example i right in seed s.

    comparison = compare_paired(pretrained_correct, scratch_correct)   # (seeds, examples) booleans each
    comparison.verdict        # "helped" | "no clear difference" | "hurt" (a over b)
    comparison.low, comparison.high, comparison.p_value

The verdict comes from a paired bootstrap over test examples (each resampled example keeps its results
in every seed, so seeds that share a test set are not counted as independent evidence): the 95%
interval of the mean accuracy difference. The exact McNemar p-value over every (seed, example) pair is
reported beside it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import InputError

HELPED, NO_CLEAR_DIFFERENCE, HURT = "helped", "no clear difference", "hurt"


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: of the pairs where exactly one model is right (`only_a` times a,
    `only_b` times b), the chance of a split at least this uneven if each were equally likely to be the
    one that is right (a binomial test with p = 1/2). 1.0 when the models never disagree."""
    if only_a < 0 or only_b < 0:
        raise InputError(f"disagreement counts must be >= 0, got {only_a} and {only_b}")
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1))  # exact integers, any n
    return min(1.0, 2 * tail / 2 ** n)


def paired_bootstrap(correct_a, correct_b, resamples: int = 2000, confidence: float = 0.95,
                     seed: int = 0) -> tuple[float, float, float]:
    """(mean difference a - b, low, high): the accuracy difference averaged over seeds and examples and
    its percentile interval from `resamples` bootstrap draws of the test examples (columns)."""
    a, b = _as_pairs(correct_a, correct_b)
    if resamples < 1 or not 0 < confidence < 1:
        raise InputError(f"need resamples >= 1 and 0 < confidence < 1, got {resamples} and {confidence}")
    per_example = (a.astype(np.float64) - b).mean(axis=0)  # (N,) difference averaged over seeds
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, per_example.size, size=(resamples, per_example.size))  # (R, N) resampled examples
    means = per_example[draws].mean(axis=1)  # (R,)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(per_example.mean()), float(low), float(high)


@dataclass(frozen=True)
class PairedComparison:
    """Model a against model b on shared test examples (accuracies are means over seeds)."""

    accuracy_a: float
    accuracy_b: float
    difference: float  # accuracy_a - accuracy_b
    low: float  # the bootstrap interval of the difference
    high: float
    confidence: float
    p_value: float  # exact McNemar over every (seed, example) pair
    only_a: int  # pairs that a got right and b wrong
    only_b: int
    verdict: str  # helped | no clear difference | hurt

    def describe(self) -> str:
        """One line: the verdict, the difference in points, its interval and the p-value."""
        return (f"{self.verdict}: {self.difference * 100:+.1f} points "
                f"({self.confidence:.0%} interval {self.low * 100:+.1f} to {self.high * 100:+.1f}; "
                f"McNemar p = {self.p_value:.2g})")

    def to_dict(self) -> dict:
        return asdict(self)


def compare_paired(correct_a, correct_b, resamples: int = 2000, confidence: float = 0.95,
                   seed: int = 0) -> PairedComparison:
    """Did a do better than b? `correct_a`, `correct_b`: (seeds, examples) or (examples,) booleans for the
    same examples in the same order. "helped" when the whole interval lies above zero, "hurt" when below."""
    a, b = _as_pairs(correct_a, correct_b)
    difference, low, high = paired_bootstrap(a, b, resamples, confidence, seed)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    verdict = HELPED if low > 0 else HURT if high < 0 else NO_CLEAR_DIFFERENCE
    return PairedComparison(float(a.mean()), float(b.mean()), difference, low, high, confidence,
                            mcnemar_exact(only_a, only_b), only_a, only_b, verdict)


def _as_pairs(correct_a, correct_b) -> tuple[np.ndarray, np.ndarray]:
    """Both as (seeds, examples) boolean arrays of one shape, with at least one example."""
    a, b = np.atleast_2d(np.asarray(correct_a, dtype=bool)), np.atleast_2d(np.asarray(correct_b, dtype=bool))
    if a.shape != b.shape or a.ndim != 2 or a.size == 0:
        raise InputError(f"paired results need the same non-empty (seeds, examples) shape, got {a.shape} and {b.shape}")
    return a, b
