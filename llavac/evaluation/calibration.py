"""How far a classifier's probabilities can be trusted: calibration, selective prediction,
temperature scaling.

Accuracy and F1 judge the argmax; these functions judge the probabilities behind it, which is
what a user who thresholds, ranks or abstains relies on.

- **ECE** (expected calibration error, top-label; Guo et al. 2017, "On Calibration of Modern
  Neural Networks") is the count-weighted gap between accuracy and mean confidence over
  equal-width confidence bins. **NLL** and the multi-class **Brier score** are the two proper
  scoring rules: unlike ECE they cannot be gamed by a constant confidence.
- **Risk-coverage** and **AURC** (Geifman, Uziel & El-Yaniv 2019, "Bias-Reduced Uncertainty
  Estimation for Deep Neural Classifiers") ask whether the confidence *ranks* examples well:
  keep the most confident share of the examples and measure the error among them.
- **Temperature scaling** (Guo et al. 2017) divides the logits by one scalar T fitted on held-out
  data to minimise NLL. It leaves the argmax, hence accuracy and F1, unchanged.

Conventions: ``probs`` is an ``(n, k)`` array whose columns follow ``llavac.labels.LABELS``;
``gold`` holds column indices; ``correct`` is boolean. Arrays or lists are accepted; metrics come
back as plain floats and dicts, ready for JSON.

llavac's ``score`` method returns probabilities normalised over the candidate labels. Their logs
are valid logits (``softmax(log p) = p``), so ``fit_temperature_from_probs`` and
``apply_temperature`` work on those probabilities directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

# Applying a temperature is prediction's (every calibrated prediction does it); fitting one is
# here, and apply_temperature is re-exported beside it for the reports that compare both.
from llavac.predict.temperature import EPS, log_probs
from llavac.predict.temperature import apply_temperature as apply_temperature

# Temperature search interval: T in [1/100, 100] covers any realistic miscalibration while
# keeping the search finite when the data push T towards 0 (every answer right) or infinity.
TEMPERATURE_RANGE = (1e-2, 1e2)  # where fit_temperature searches T
_LOG_T_BOUNDS = tuple(float(np.log(t)) for t in TEMPERATURE_RANGE)


def _probs_gold(probs: ArrayLike, gold: ArrayLike, name: str = "probs"
                ) -> tuple[np.ndarray, np.ndarray]:
    """``probs`` as an (n, k) float64 array and ``gold`` as n ints in [0, k), or ValueError."""
    probs = np.asarray(probs, dtype=np.float64)
    gold = np.asarray(gold)
    if probs.ndim != 2 or probs.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (n, k) array, got shape {probs.shape}")
    if gold.shape != (probs.shape[0],):
        raise ValueError(f"gold has shape {gold.shape}, expected ({probs.shape[0]},)")
    if not np.issubdtype(gold.dtype, np.integer):
        raise ValueError("gold must hold column indices (ints); map label words with "
                         "LABELS.index")
    if gold.min() < 0 or gold.max() >= probs.shape[1]:
        raise ValueError(f"gold indices must lie in [0, {probs.shape[1]})")
    return probs, gold


def _confidence_correct(confidence: ArrayLike, correct: ArrayLike
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Confidences (the row max when given (n, k) probabilities) and booleans of equal length."""
    confidence = np.asarray(confidence, dtype=np.float64)
    if confidence.ndim == 2:
        confidence = confidence.max(axis=1)
    correct = np.asarray(correct, dtype=bool)
    if confidence.ndim != 1 or confidence.shape != correct.shape or confidence.size == 0:
        raise ValueError(f"confidence {confidence.shape} and correct {correct.shape} must be "
                         "non-empty and of equal length")
    return confidence, correct


def _top_label(probs: ArrayLike, gold: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Top-label confidence and whether the argmax is the gold label."""
    probs, gold = _probs_gold(probs, gold)
    return probs.max(axis=1), probs.argmax(axis=1) == gold


def reliability_bins(probs: ArrayLike, gold: ArrayLike, n_bins: int = 15) -> dict:
    """Per-bin count, accuracy and mean confidence over ``n_bins`` equal-width bins.

    Bin ``b`` is ``(b / n_bins, (b + 1) / n_bins]``: a confidence c goes into
    ``ceil(c * n_bins) - 1``, so a confidence on an edge belongs to the bin it closes
    (0.4 with 15 bins lands in (0.333, 0.4]). Empty bins have accuracy and confidence None.
    Returns ``{"edges": n_bins + 1 floats, "count", "accuracy", "confidence": n_bins each}``.
    """
    confidence, correct = _top_label(probs, gold)
    bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    hits = np.bincount(bins, weights=correct, minlength=n_bins)
    conf_sum = np.bincount(bins, weights=confidence, minlength=n_bins)
    return {
        "edges": np.linspace(0.0, 1.0, n_bins + 1).tolist(),
        "count": count.tolist(),
        "accuracy": [float(h / c) if c else None for h, c in zip(hits, count, strict=True)],
        "confidence": [float(s / c) if c else None for s, c in zip(conf_sum, count, strict=True)],
    }


def expected_calibration_error(probs: ArrayLike, gold: ArrayLike, n_bins: int = 15) -> float:
    """Top-label ECE: sum over non-empty bins of (count / n) * |accuracy - mean confidence|.

    Bins as in ``reliability_bins``; 15 bins follows Guo et al. (2017).
    """
    bins = reliability_bins(probs, gold, n_bins)
    n = sum(bins["count"])
    return float(sum(c / n * abs(a - m) for c, a, m in
                     zip(bins["count"], bins["accuracy"], bins["confidence"], strict=True) if c))


def negative_log_likelihood(probs: ArrayLike, gold: ArrayLike) -> float:
    """Mean of -log p(gold), probabilities clipped below at ``EPS``.

    Written out rather than sklearn's ``log_loss``: that one clips at the dtype's machine
    epsilon, warns on rows that miss 1 by float32 rounding, and renamed its arguments in 1.9.
    """
    probs, gold = _probs_gold(probs, gold)
    p_gold = probs[np.arange(len(gold)), gold]
    return float(-np.mean(np.log(np.clip(p_gold, EPS, 1.0))))


def brier_score(probs: ArrayLike, gold: ArrayLike) -> float:
    """Multi-class Brier score: mean over examples of sum_k (p_k - onehot_k)^2, in [0, 2]."""
    probs, gold = _probs_gold(probs, gold)
    onehot = np.eye(probs.shape[1])[gold]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def risk_coverage(confidence: ArrayLike, correct: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The risk-coverage curve: ``(coverage, risk)``, two float arrays of length n.

    ``confidence`` is (n,) confidences or (n, k) probabilities (the row max is taken).
    Examples are sorted by confidence, most confident first; at coverage i / n the risk is the
    error rate among the first i. Ties are broken by input order (a stable sort), so the curve
    and AURC are deterministic; with ties they depend on that order, as any ranking must.
    """
    confidence, correct = _confidence_correct(confidence, correct)
    order = np.argsort(-confidence, kind="stable")
    kept = np.arange(1, len(order) + 1)
    errors = np.cumsum(~correct[order])
    return kept / len(order), errors / kept


def aurc(confidence: ArrayLike, correct: ArrayLike) -> float:
    """Area under the risk-coverage curve: the mean risk over coverages 1/n, ..., n/n.

    The discrete definition of Geifman et al. (2019). Lower is better; it mixes the error rate
    with how well the confidence ranks errors last.
    """
    return float(np.mean(risk_coverage(confidence, correct)[1]))


def selective_table(confidence: ArrayLike, correct: ArrayLike,
                    thresholds: Sequence[float] = (0.5, 0.6, 0.7, 0.8, 0.9)) -> list[dict]:
    """Coverage and accuracy when only answers with confidence >= each threshold are kept.

    One row per threshold: ``{"threshold", "coverage", "accuracy", "kept"}``; accuracy is None
    when no answer clears the threshold.
    """
    confidence, correct = _confidence_correct(confidence, correct)
    rows = []
    for threshold in thresholds:
        keep = confidence >= threshold
        kept = int(keep.sum())
        rows.append({"threshold": float(threshold), "coverage": kept / len(keep),
                     "accuracy": float(correct[keep].mean()) if kept else None, "kept": kept})
    return rows


def calibration_metrics(probs: ArrayLike, gold: ArrayLike) -> dict:
    """``{"ece", "nll", "brier", "aurc"}`` of one slot's probabilities, as floats."""
    confidence, correct = _top_label(probs, gold)
    return {
        "ece": expected_calibration_error(probs, gold),
        "nll": negative_log_likelihood(probs, gold),
        "brier": brier_score(probs, gold),
        "aurc": aurc(confidence, correct),
    }


def _mean_nll(logits: np.ndarray, gold: np.ndarray, temperature: float) -> float:
    return float(-np.mean(log_softmax(logits / temperature, axis=1)[np.arange(len(gold)), gold]))


def fit_temperature(logits: ArrayLike, gold: ArrayLike) -> float:
    """The T > 0 that minimises the mean NLL of ``softmax(logits / T)`` against ``gold``.

    Searched over log T in [log 0.01, log 100] by bounded Brent (deterministic). The NLL is
    convex in 1 / T, so it has a single minimum on that interval and the search finds it; a
    result on a bound means the data push T further (e.g. every answer right: T -> 0).
    """
    logits, gold = _probs_gold(logits, gold, name="logits")
    result = minimize_scalar(lambda log_t: _mean_nll(logits, gold, np.exp(log_t)),
                             bounds=_LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-6})
    return float(np.exp(result.x))


def fit_temperature_from_probs(probs: ArrayLike, gold: ArrayLike) -> float:
    """``fit_temperature`` on ``log(probs)``, for models that return probabilities."""
    return fit_temperature(log_probs(probs), gold)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display is needed or assumed
    import matplotlib.pyplot as plt

    return plt


def reliability_diagram(probs: ArrayLike, gold: ArrayLike, path: str | Path, title: str,
                        n_bins: int = 15) -> Path:
    """PNG: accuracy per confidence bin against the diagonal, bin counts below, ECE on top."""
    plt = _pyplot()
    bins = reliability_bins(probs, gold, n_bins)
    edges, count = np.array(bins["edges"]), np.array(bins["count"])
    filled = count > 0
    left, width = edges[:-1][filled], 1.0 / n_bins
    accuracy = np.array([a for a in bins["accuracy"] if a is not None])
    confidence = np.array([c for c in bins["confidence"] if c is not None])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5, 5.6), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1]})
    top.bar(left, accuracy, width=width, align="edge", color="#4c72b0", edgecolor="white",
            label="accuracy")
    # The gap from each bar to its mean confidence is what ECE sums, weighted by count.
    top.bar(left, confidence - accuracy, bottom=accuracy, width=width, align="edge",
            fill=False, hatch="///", edgecolor="#c44e52", lw=0.8, label="gap to confidence")
    top.plot([0, 1], [0, 1], ls="--", color="0.3", lw=1, label="perfect calibration")
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy")
    # Above the axes, where no bar can be hidden behind it.
    top.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=8,
               frameon=False)
    top.set_title(f"{title}\nECE {expected_calibration_error(probs, gold, n_bins):.3f} "
                  f"(n = {count.sum()}, {n_bins} bins)", fontsize=10, pad=22)
    bottom.bar(edges[:-1], count, width=width, align="edge", color="0.55", edgecolor="white")
    for x, c in zip(left, count[filled], strict=True):
        bottom.text(x + width / 2, c, str(c), ha="center", va="bottom", fontsize=7)
    bottom.set(ylim=(0, count.max() * 1.3), xlabel="confidence (top-label probability)",
               ylabel="count")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def risk_coverage_plot(confidence: ArrayLike, correct: ArrayLike, path: str | Path,
                       title: str) -> Path:
    """PNG: selective accuracy (accuracy of the most confident share) against coverage."""
    plt = _pyplot()
    coverage, risk = risk_coverage(confidence, correct)
    fig, ax = plt.subplots(figsize=(5, 3.8))
    ax.plot(coverage, 1.0 - risk, color="#4c72b0", lw=1.5, label="most confident first")
    ax.axhline(1.0 - risk[-1], ls="--", color="0.4", lw=1,
               label=f"all answers ({1.0 - risk[-1]:.3f})")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="coverage",
           ylabel="accuracy on covered answers")
    ax.set_title(f"{title}\nAURC {float(np.mean(risk)):.3f} (n = {len(risk)})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8, frameon=False)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
