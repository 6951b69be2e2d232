"""Bootstrap intervals, the paired bootstrap and exact McNemar against known answers."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from llavac.evaluation.significance import (
    accuracy,
    bootstrap_ci,
    macro_f1,
    mcnemar_exact,
    paired_bootstrap_diff,
    weighted_f1,
)


def _labels(n: int, right: int) -> tuple[np.ndarray, np.ndarray]:
    """Gold all 0; the first ``right`` predictions 0 (right), the rest 1 (wrong)."""
    return np.zeros(n, dtype=int), (np.arange(n) >= right).astype(int)


def test_mcnemar_exact_values():
    # b = 1, c = 5: 2 * P(X <= 1), X ~ Binomial(6, 1/2) = 2 * (1 + 6) / 64 = 0.21875.
    a = [True, False, False, False, False, False, True]
    b = [False, True, True, True, True, True, True]
    assert mcnemar_exact(a, b) == {"b": 1, "c": 5, "p": pytest.approx(0.21875, abs=1e-12)}
    # No discordant pair: no evidence of a difference.
    assert mcnemar_exact([True, False], [True, False]) == {"b": 0, "c": 0, "p": 1.0}
    # b = 0, c = 10: 2 * (1/2)^10 = 2 / 1024.
    result = mcnemar_exact([False] * 10, [True] * 10)
    assert (result["b"], result["c"]) == (0, 10)
    assert result["p"] == pytest.approx(2 / 1024, abs=1e-15)


def test_mcnemar_is_symmetric_in_the_systems():
    a, b = [True, False, False, False, True], [False, True, True, False, True]
    forward, backward = mcnemar_exact(a, b), mcnemar_exact(b, a)
    assert (forward["b"], forward["c"]) == (backward["c"], backward["b"]) == (1, 2)
    assert forward["p"] == backward["p"] == pytest.approx(1.0)


def test_fast_metrics_agree_with_sklearn():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 3, size=300)
    y_pred = np.where(rng.random(300) < 0.6, y_true, rng.integers(-1, 3, size=300))
    assert -1 in y_pred  # -1: an unparseable answer, wrong and no class's prediction
    labels = [0, 1, 2]
    assert accuracy(y_true, y_pred) == pytest.approx(accuracy_score(y_true, y_pred))
    for average, ours in (("weighted", weighted_f1), ("macro", macro_f1)):
        expected = f1_score(y_true, y_pred, labels=labels, average=average, zero_division=0)
        assert ours(y_true, y_pred) == pytest.approx(expected)
    # Class 2 absent from gold and predictions: its F1 is 0, counted in the macro mean.
    y_true, y_pred = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])
    assert macro_f1(y_true, y_pred) == pytest.approx(
        f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))


def test_bootstrap_is_reproducible_and_seed_dependent():
    y_true, y_pred = _labels(200, 150)
    first = bootstrap_ci(accuracy, y_true, y_pred, n_resamples=300, seed=7)
    assert bootstrap_ci(accuracy, y_true, y_pred, n_resamples=300, seed=7) == first
    assert bootstrap_ci(accuracy, y_true, y_pred, n_resamples=300, seed=8) != first


def test_bootstrap_accuracy_ci_matches_normal_approximation():
    # 400 of 500 right: the CI should contain 0.8 and be about 2 * 1.96 * sqrt(.8 * .2 / 500)
    # = 0.0701 wide.
    y_true, y_pred = _labels(500, 400)
    low, high = bootstrap_ci(accuracy, y_true, y_pred)
    assert low < 0.8 < high
    assert high - low == pytest.approx(2 * 1.96 * math.sqrt(0.8 * 0.2 / 500), abs=0.015)


def test_bootstrap_narrower_at_lower_confidence():
    y_true, y_pred = _labels(500, 400)
    low95, high95 = bootstrap_ci(accuracy, y_true, y_pred, confidence=0.95)
    low80, high80 = bootstrap_ci(accuracy, y_true, y_pred, confidence=0.80)
    assert low95 < low80 < high80 < high95


def test_bootstrap_of_weighted_f1_is_fast():
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 3, size=519)
    y_pred = np.where(rng.random(519) < 0.7, y_true, rng.integers(0, 3, size=519))
    start = time.perf_counter()
    low, high = bootstrap_ci(weighted_f1, y_true, y_pred, n_resamples=1000)
    assert time.perf_counter() - start < 1.0  # ~0.05 s measured; sklearn's f1_score: ~4 s
    assert low < weighted_f1(y_true, y_pred) < high


def test_paired_bootstrap_identical_systems():
    y_true, y_pred = _labels(100, 70)
    result = paired_bootstrap_diff(accuracy, y_true, y_pred, y_pred.copy())
    assert result == {"diff": 0.0, "ci": (0.0, 0.0), "p_value": 1.0, "n_resamples": 1000}


def test_paired_bootstrap_b_better():
    # A right on 350 of 500, B right on the same 350 and 30 more: diff = B - A = 30/500.
    y_true, pred_a = _labels(500, 350)
    _, pred_b = _labels(500, 380)
    result = paired_bootstrap_diff(accuracy, y_true, pred_a, pred_b)
    assert result["diff"] == pytest.approx(0.06)
    assert 0 < result["ci"][0] < 0.06 < result["ci"][1]
    assert result["p_value"] < 0.01
    # Swapping the systems flips the sign of the difference and of the interval.
    swapped = paired_bootstrap_diff(accuracy, y_true, pred_b, pred_a)
    assert swapped["diff"] == pytest.approx(-0.06)
    assert swapped["ci"][1] < 0
    assert swapped["p_value"] == result["p_value"]


def test_paired_bootstrap_small_difference_is_not_significant():
    # 12 items only A gets right, 14 only B: diff = 2/500, far from significant
    # (exact McNemar on 12 vs 14 gives p = 0.85).
    y_true = np.zeros(500, dtype=int)
    pred_a, pred_b = np.ones(500, dtype=int), np.ones(500, dtype=int)
    pred_a[:312], pred_b[:300], pred_b[312:326] = 0, 0, 0
    result = paired_bootstrap_diff(accuracy, y_true, pred_a, pred_b, seed=3)
    assert result["diff"] == pytest.approx(2 / 500)
    assert result["ci"][0] < 0 < result["ci"][1]
    assert result["p_value"] > 0.5


def test_unequal_lengths_are_refused():
    with pytest.raises(ValueError, match="one length"):
        bootstrap_ci(accuracy, [0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match="one length"):
        mcnemar_exact([], [])
