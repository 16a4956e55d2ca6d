"""Paired tests of two classifiers on shared test examples (lmforge.eval.paired): exact McNemar against
the binomial distribution computed independently, the bootstrap interval, and the verdicts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lmforge.errors import InputError
from lmforge.eval.paired import compare_paired, mcnemar_exact, paired_bootstrap


def binomial_two_sided(k: int, n: int) -> float:
    """Two-sided binomial test at p=1/2 by summing every outcome at most as likely as k (an independent oracle)."""
    pmf = [math.comb(n, i) / 2 ** n for i in range(n + 1)]
    return min(1.0, sum(p for p in pmf if p <= pmf[k] * (1 + 1e-12)))


@pytest.mark.parametrize("only_a,only_b", [(0, 0), (1, 0), (5, 5), (3, 12), (12, 3), (40, 61), (0, 9)])
def test_mcnemar_exact_matches_the_two_sided_binomial_test(only_a, only_b):
    n = only_a + only_b
    expected = 1.0 if n == 0 else binomial_two_sided(only_a, n)
    assert mcnemar_exact(only_a, only_b) == pytest.approx(expected, rel=1e-9)


def test_mcnemar_handles_large_counts_and_known_values():
    assert mcnemar_exact(0, 10) == pytest.approx(2 / 1024)  # 2 * (1/2)^10
    assert 0 <= mcnemar_exact(500, 900) < 1e-20 and mcnemar_exact(700, 700) == 1.0
    with pytest.raises(InputError):
        mcnemar_exact(-1, 3)


def test_identical_models_make_no_clear_difference():
    rng = np.random.default_rng(0)
    hits = rng.random((3, 300)) < 0.6
    result = compare_paired(hits, hits)
    assert result.verdict == "no clear difference" and result.difference == 0 and result.p_value == 1.0
    assert result.only_a == result.only_b == 0


def test_a_clearly_better_model_helped_and_the_reverse_hurt():
    rng = np.random.default_rng(1)
    truth_b = rng.random((3, 400)) < 0.4
    truth_a = truth_b | (rng.random((3, 400)) < 0.3)  # a is right wherever b is, and more often
    better = compare_paired(truth_a, truth_b)
    assert better.verdict == "helped" and better.low > 0 and better.p_value < 1e-6
    assert better.difference == pytest.approx(truth_a.mean() - truth_b.mean())
    worse = compare_paired(truth_b, truth_a)
    assert worse.verdict == "hurt" and worse.high < 0
    assert "helped" in better.describe() and "McNemar" in better.describe()


def test_bootstrap_interval_covers_the_difference_and_narrows_with_more_examples():
    rng = np.random.default_rng(2)
    a, b = rng.random((3, 2000)) < 0.55, rng.random((3, 2000)) < 0.5
    mean, low, high = paired_bootstrap(a, b)
    assert low < mean < high
    _, low_small, high_small = paired_bootstrap(a[:, :200], b[:, :200])
    assert high_small - low_small > high - low
    assert paired_bootstrap(a, b, seed=3) == paired_bootstrap(a, b, seed=3)  # seeded


def test_mismatched_or_empty_results_are_refused():
    with pytest.raises(InputError, match="same non-empty"):
        compare_paired(np.ones((3, 10), bool), np.ones((2, 10), bool))
    with pytest.raises(InputError):
        compare_paired([], [])
