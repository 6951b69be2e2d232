"""Calibration metrics against hand-worked numbers, temperature scaling against a known
temperature, and the two plots as readable PNGs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image
from scipy.special import softmax
from sklearn.metrics import log_loss

from llavac.evaluation.calibration import (
    apply_temperature,
    aurc,
    brier_score,
    calibration_metrics,
    expected_calibration_error,
    fit_temperature,
    fit_temperature_from_probs,
    negative_log_likelihood,
    reliability_bins,
    reliability_diagram,
    risk_coverage,
    risk_coverage_plot,
    selective_table,
)

# Four answers, columns (negative, neutral, positive):
#   row  probs               gold  argmax  confidence  correct  15-bin index
#   0    .10  .22  .68       2     2       .68         yes      ceil(10.2) - 1 = 10
#   1    .18  .10  .72       1     2       .72         no       ceil(10.8) - 1 = 10
#   2    .88  .07  .05       0     0       .88         yes      ceil(13.2) - 1 = 13
#   3    .04  .92  .04       1     1       .92         yes      ceil(13.8) - 1 = 13
PROBS = np.array([[0.10, 0.22, 0.68], [0.18, 0.10, 0.72], [0.88, 0.07, 0.05],
                  [0.04, 0.92, 0.04]])
GOLD = np.array([2, 1, 0, 1])
CONFIDENCE = np.array([0.68, 0.72, 0.88, 0.92])
CORRECT = np.array([True, False, True, True])


def test_ece_by_hand():
    # Bin 10: accuracy 1/2, mean confidence .70, gap .20, weight 2/4 -> .10
    # Bin 13: accuracy 2/2, mean confidence .90, gap .10, weight 2/4 -> .05
    # ECE = .15 (one global bin would give |.75 - .80| = .05).
    assert expected_calibration_error(PROBS, GOLD) == pytest.approx(0.15)


def test_reliability_bins_by_hand():
    bins = reliability_bins(PROBS, GOLD)
    assert len(bins["edges"]) == 16 and len(bins["count"]) == 15
    assert [i for i, c in enumerate(bins["count"]) if c] == [10, 13]
    assert bins["count"][10] == 2 and bins["count"][13] == 2
    assert bins["accuracy"][10] == pytest.approx(0.5)
    assert bins["confidence"][13] == pytest.approx(0.9)
    assert bins["accuracy"][0] is None and bins["confidence"][0] is None


def test_bin_is_open_below_closed_above():
    # 0.4 closes bin 5 = (1/3, 0.4]; 0.41 opens bin 6 = (0.4, 7/15]; 1.0 closes bin 14.
    probs = [[0.40, 0.30, 0.30], [0.41, 0.30, 0.29], [1.0, 0.0, 0.0]]
    assert [i for i, c in enumerate(reliability_bins(probs, [0, 0, 0])["count"]) if c] \
        == [5, 6, 14]
    # So 0.4 shares a bin with 0.35: one bin, |1/2 - .375| = .125; with 0.41 instead the
    # two sit in separate bins: .5 * |1 - .41| + .5 * |0 - .35| = .47.
    assert expected_calibration_error([[0.40, 0.30, 0.30], [0.35, 0.33, 0.32]], [0, 1]) \
        == pytest.approx(0.125)
    assert expected_calibration_error([[0.41, 0.30, 0.29], [0.35, 0.33, 0.32]], [0, 1]) \
        == pytest.approx(0.47)


def test_nll_by_hand():
    # -(ln .68 + ln .10 + ln .88 + ln .92) / 4 = (.38566 + 2.30259 + .12783 + .08338) / 4
    #                                         = .72487
    assert negative_log_likelihood(PROBS, GOLD) == pytest.approx(0.724866, abs=1e-6)
    assert negative_log_likelihood(PROBS, GOLD) == pytest.approx(
        -(math.log(0.68) + math.log(0.10) + math.log(0.88) + math.log(0.92)) / 4)


def test_nll_clips_zero_probability():
    # p(gold) = 0 is clipped to 1e-12: -ln 1e-12 = 27.631, finite.
    assert negative_log_likelihood([[1.0, 0.0, 0.0]], [1]) == pytest.approx(27.631021, abs=1e-5)


def test_nll_agrees_with_sklearn():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet([1.0, 1.0, 1.0], size=200)
    gold = rng.integers(0, 3, size=200)
    assert negative_log_likelihood(probs, gold) == pytest.approx(
        log_loss(gold, probs, labels=[0, 1, 2]), rel=1e-9)


def test_brier_by_hand():
    # row 0: .10^2 + .22^2 + (.68 - 1)^2 = .0100 + .0484 + .1024 = .1608
    # row 1: .18^2 + (.10 - 1)^2 + .72^2 = .0324 + .8100 + .5184 = 1.3608
    # row 2: (.88 - 1)^2 + .07^2 + .05^2 = .0144 + .0049 + .0025 = .0218
    # row 3: .04^2 + (.92 - 1)^2 + .04^2 = .0016 + .0064 + .0016 = .0096
    # mean = 1.5530 / 4 = .38825
    assert brier_score(PROBS, GOLD) == pytest.approx(0.38825)


def test_brier_matches_one_hot_on_random_data():
    rng = np.random.default_rng(2)
    probs = rng.dirichlet([2.0, 1.0, 0.5], size=100)
    gold = rng.integers(0, 3, size=100)
    expected = np.mean([sum((probs[i, k] - (k == gold[i])) ** 2 for k in range(3))
                        for i in range(100)])
    assert brier_score(probs, gold) == pytest.approx(expected)


def test_risk_coverage_and_aurc_by_hand():
    # Most confident first: .92 right, .88 right, .72 wrong, .68 right.
    # Risks at coverage 1/4..4/4: 0/1, 0/2, 1/3, 1/4; AURC = (1/3 + 1/4) / 4 = 7/48.
    coverage, risk = risk_coverage(CONFIDENCE, CORRECT)
    np.testing.assert_allclose(coverage, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(risk, [0.0, 0.0, 1 / 3, 1 / 4])
    assert aurc(CONFIDENCE, CORRECT) == pytest.approx(7 / 48)
    assert aurc(PROBS, CORRECT) == pytest.approx(7 / 48)  # probabilities: row max taken


def test_aurc_ties_keep_input_order():
    # Equal confidence: the stable sort keeps input order, so the wrong answer listed first
    # is ranked first (risks 1, 1/2) and listed second is ranked second (risks 0, 1/2).
    assert aurc([0.9, 0.9], [False, True]) == pytest.approx(0.75)
    assert aurc([0.9, 0.9], [True, False]) == pytest.approx(0.25)
    # Long enough for numpy's default quicksort to reorder ties: 100 answers at .9 interleaved
    # with 100 at .6, the third .9 listed (index 5) wrong. Stable: it is ranked third.
    confidence = np.tile([0.6, 0.9], 100)
    correct = np.arange(200) != 5
    np.testing.assert_allclose(risk_coverage(confidence, correct)[1][:4], [0, 0, 1 / 3, 1 / 4])


def test_selective_table():
    rows = selective_table(CONFIDENCE, CORRECT, thresholds=(0.5, 0.72, 0.9, 0.95))
    assert rows[0] == {"threshold": 0.5, "coverage": 1.0, "accuracy": 0.75, "kept": 4}
    # >= keeps the answer at exactly .72 (with .88 and .92): 2 of 3 right.
    assert rows[1]["kept"] == 3 and rows[1]["accuracy"] == pytest.approx(2 / 3)
    assert rows[2] == {"threshold": 0.9, "coverage": 0.25, "accuracy": 1.0, "kept": 1}
    assert rows[3] == {"threshold": 0.95, "coverage": 0.0, "accuracy": None, "kept": 0}


def test_calibration_metrics_keys_and_values():
    metrics = calibration_metrics(PROBS, GOLD)
    assert set(metrics) == {"ece", "nll", "brier", "aurc"}
    assert all(type(v) is float for v in metrics.values())
    assert metrics["ece"] == pytest.approx(0.15) and metrics["aurc"] == pytest.approx(7 / 48)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="gold"):
        brier_score(PROBS, [0, 1, 2])
    with pytest.raises(ValueError, match="indices"):
        brier_score(PROBS, [0, 1, 2, 3])
    with pytest.raises(ValueError, match="ints"):
        brier_score(PROBS, ["negative"] * 4)
    with pytest.raises(ValueError, match="equal length"):
        aurc(CONFIDENCE, CORRECT[:3])


def _synthetic(n: int, seed: int, scale: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """True logits z and gold labels drawn from softmax(z)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, scale, size=(n, 3))
    cumulative = np.cumsum(softmax(logits, axis=1), axis=1)
    gold = (rng.random((n, 1)) > cumulative).sum(axis=1)
    return logits, np.minimum(gold, 2)


def test_a_temperature_pushed_to_its_search_bound_is_flagged():
    from llavac.evaluation.calibrate import at_search_bound

    logits, gold = _synthetic(2_000, seed=3)
    assert not at_search_bound(fit_temperature(2.5 * logits, gold))
    # Every answer right: sharper is always better (T -> 0); every answer the least likely
    # label: flatter is always better (T -> large). Both stop at the search's bounds.
    assert at_search_bound(fit_temperature(logits, np.argmax(logits, axis=1)))
    assert at_search_bound(fit_temperature(logits, np.argmin(logits, axis=1)))


def test_fit_temperature_recovers_known_temperature():
    # Logits 2.5 times too sharp: softmax(2.5 z / T) is the true distribution at T = 2.5.
    logits, gold = _synthetic(20_000, seed=3)
    assert fit_temperature(2.5 * logits, gold) == pytest.approx(2.5, rel=0.05)
    assert fit_temperature(0.5 * logits, gold) == pytest.approx(0.5, rel=0.05)
    assert fit_temperature_from_probs(softmax(2.5 * logits, axis=1), gold) \
        == pytest.approx(2.5, rel=0.05)


@pytest.mark.parametrize("sharpen", [0.3, 1.0, 4.0])
def test_fitting_never_raises_nll(sharpen):
    logits, gold = _synthetic(2_000, seed=4)
    probs = softmax(sharpen * logits, axis=1)
    scaled = apply_temperature(probs, fit_temperature_from_probs(probs, gold))
    assert negative_log_likelihood(scaled, gold) <= negative_log_likelihood(probs, gold) + 1e-9


def test_apply_temperature():
    rng = np.random.default_rng(5)
    probs = rng.dirichlet([1.0, 2.0, 3.0], size=50)
    np.testing.assert_allclose(apply_temperature(probs, 1.0), probs, rtol=1e-9)
    softer = apply_temperature(probs, 2.0)
    assert np.all(softer.max(axis=1) < probs.max(axis=1))
    np.testing.assert_array_equal(softer.argmax(axis=1), probs.argmax(axis=1))
    # By hand: (.8, .2) at T = 2 -> sqrt .8 : sqrt .2 = 2 : 1 -> (2/3, 1/3).
    np.testing.assert_allclose(apply_temperature([[0.8, 0.2]], 2.0), [[2 / 3, 1 / 3]])
    with pytest.raises(ValueError):
        apply_temperature(probs, 0.0)


def _assert_png(path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size[0] > 300 and image.size[1] > 300
    assert path.stat().st_size > 10_000


def test_plots_write_readable_pngs(tmp_path):
    logits, gold = _synthetic(500, seed=6)
    probs = softmax(1.8 * logits, axis=1)
    path = reliability_diagram(probs, gold, tmp_path / "reliability.png", "text slot")
    assert path == tmp_path / "reliability.png"
    _assert_png(path)
    correct = probs.argmax(axis=1) == gold
    _assert_png(risk_coverage_plot(probs, correct, tmp_path / "risk.png", "text slot"))
    # One example: a single filled bin and a one-point curve still draw.
    _assert_png(reliability_diagram(PROBS[:1], GOLD[:1], tmp_path / "one.png", "one"))
    _assert_png(risk_coverage_plot([0.7], [True], tmp_path / "one_risk.png", "one"))
