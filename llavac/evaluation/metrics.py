"""Metrics of predicted labels against gold labels, one table per answer slot.

Everything is computed by scikit-learn with ``labels=LABELS``, so every vector and matrix is
in the project's label order. Two rules decide what is counted:

- A record without a gold label for a slot is left out of that slot's metrics and counted
  (``no_gold``): own data may carry only the multimodal label.
- An unparseable generated answer (label ``None``) counts as *wrong*, never dropped: dropping
  it would score a model on the answers it happened to format well. It is a prediction of
  the extra class ``unparseable``, which lowers accuracy and the recall of the gold class
  but is not one of the classes averaged in the F1 scores; the confusion matrix gets an
  ``unparseable`` column when there is one.

Classes are always the three labels, also when one is absent from a small test set: an
absent class scores 0 (``zero_division=0``) and counts in the macro average.

``METRICS`` is the one table of the figures results are judged by (where each is read, how
it is shown, which way is better), which every results table reads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sklearn.metrics import (
    ConfusionMatrixDisplay,
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from llavac.config import ConfigKeyError
from llavac.evaluation import significance
from llavac.labels import LABELS

UNPARSEABLE = "unparseable"


def slot_metrics(gold: Sequence[str | None], predicted: Sequence[str | None]) -> dict:
    """Accuracy, weighted / macro F1, per-class scores and the confusion matrix of one slot."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold labels but {len(predicted)} predictions")
    pairs = [(g, UNPARSEABLE if p is None else p) for g, p in zip(gold, predicted, strict=True)
             if g is not None]
    y_true = [g for g, _ in pairs]
    y_pred = [p for _, p in pairs]
    unparseable = y_pred.count(UNPARSEABLE)
    result = {"n": len(pairs), "no_gold": len(gold) - len(pairs), "unparseable": unparseable}
    if not pairs:
        return result
    labels = list(LABELS)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    matrix_labels = labels + ([UNPARSEABLE] if unparseable else [])
    matrix = confusion_matrix(y_true, y_pred, labels=matrix_labels)
    return {
        **result,
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted",
                                      zero_division=0)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro",
                                   zero_division=0)),
        "per_class": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f),
                    "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
        },
        "confusion_matrix": {"labels": matrix_labels, "matrix": matrix.tolist()},
    }


def plot_confusion(metrics: dict, title: str, path: str | Path) -> Path:
    """The slot's confusion matrix (rows gold, columns predicted) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display is needed or assumed
    import matplotlib.pyplot as plt
    import numpy as np

    matrix = metrics["confusion_matrix"]
    display = ConfusionMatrixDisplay(np.array(matrix["matrix"]),
                                     display_labels=matrix["labels"])
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    display.plot(ax=ax, cmap="Blues", values_format="d", colorbar=False)
    ax.set_title(f"{title}\naccuracy {metrics['accuracy']:.3f}, "
                 f"weighted F1 {metrics['weighted_f1']:.3f}")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def hints(metrics: dict) -> list[str]:
    """What usually causes a degenerate result, for the evaluation's last lines."""
    found = []
    if metrics["unparseable"] > metrics["records"] / 2:
        found.append(f"hint: {metrics['unparseable']} of {metrics['records']} answers did not "
                     "parse; an untrained or barely trained model writes free text. Train "
                     "longer, or evaluate with --method score to read its label preferences.")
    for slot, values in metrics["slots"].items():
        matrix = values.get("confusion_matrix")
        if not matrix:
            continue
        totals = [sum(column) for column in zip(*matrix["matrix"], strict=True)]
        predicted = [label for label, n in zip(matrix["labels"], totals, strict=True) if n]
        if len(predicted) == 1 and predicted[0] != UNPARSEABLE:
            found.append(f"hint: every pair got the {slot} label {predicted[0]!r}; a model that "
                         "has not learned the task yet does this (a tiny random model, too few "
                         "steps, or a learning rate far off).")
            break
    return found


@dataclass(frozen=True)
class Metric:
    """One figure a result can be judged by: where it is read, how it is shown.

    Every table that shows results (``summary.md``, ``results.md`` / ``results.csv``, the
    model card) reads :data:`METRICS`, so a figure added there appears wherever its kind of
    figure does.
    """

    name: str  # its results.csv column, and its key where it is read
    title: str  # its column header
    # Where it is read: "slot" (metrics.json, slots.<slot>.<name>), "evaluation" (metrics.json,
    # top level) or "training" (the training run's manifest.json, at ``path``).
    source: str
    style: str  # "percent" | "decimal" | "count" | "seconds" | "rate": see ``show``
    higher_is_better: bool | None  # None: a cost or a size, not a score
    # Its value over label indices, for slot figures a resample can recompute
    # (llavac.evaluation.significance): such a figure gets a 95 % bootstrap interval beside
    # it (``<name>_ci``), a row in paired comparisons, and can be what a sweep maximises.
    per_example: Callable[[object, object], float] | None = None
    headline: bool = False  # shown wherever accuracy is (summaries, model card, report.html)
    path: tuple[str, ...] = ()  # for "training": the keys inside manifest.json

    @property
    def ci(self) -> str | None:
        """The key of its 95 % bootstrap interval beside it, if it has one."""
        return f"{self.name}_ci" if self.per_example else None

    def read(self, metrics: dict, manifest: dict | None = None, slot: str = "multimodal"):
        """Its value for ``slot`` of an evaluation's ``metrics.json`` (and the training
        run's ``manifest.json``); None where it was not computed (ECE of ``generate``)."""
        if self.source == "slot":
            return (metrics.get("slots") or {}).get(slot, {}).get(self.name)
        if self.source == "evaluation":
            return metrics.get(self.name)
        value = manifest or {}
        for key in self.path:
            value = value.get(key) if isinstance(value, dict) else None
        return value

    def show(self, value) -> str:
        """``value`` as a table shows it; "–" when there is none."""
        if value is None:
            return "–"
        return {"percent": f"{100 * value:.2f}", "decimal": f"{value:.4f}",
                "count": f"{int(value):,}", "seconds": f"{value:.1f}",
                "rate": f"{value:.1f}"}[self.style]


METRICS: dict[str, Metric] = {metric.name: metric for metric in (
    Metric("accuracy", "accuracy", "slot", "percent", True, significance.accuracy,
           headline=True),
    Metric("weighted_f1", "weighted F1", "slot", "percent", True, significance.weighted_f1,
           headline=True),
    Metric("macro_f1", "macro F1", "slot", "percent", True, significance.macro_f1,
           headline=True),
    # Calibration of the probabilities (score only): lower is better.
    Metric("ece", "ECE", "slot", "decimal", False),
    Metric("pairs_per_second", "pairs/s", "evaluation", "rate", True),
    Metric("trainable_parameters", "trainable parameters", "training", "count", None,
           path=("model", "trainable_parameters")),
    Metric("train_seconds", "training time (s)", "training", "seconds", False,
           path=("train_seconds",)),
)}
HEADLINE = tuple(metric for metric in METRICS.values() if metric.headline)
RESAMPLED = tuple(metric for metric in METRICS.values() if metric.per_example)


def sweep_metric(name: str) -> Metric:
    """The metric ``sweep.metric`` names: one a resample recomputes, higher being better."""
    metric = METRICS.get(name)
    if metric not in RESAMPLED or not metric.higher_is_better:
        raise ConfigKeyError("sweep.metric", "sweep.metric: expected one of " + ", ".join(
            m.name for m in RESAMPLED if m.higher_is_better) + f", got {name!r}")
    return metric
