"""The figures of one evaluated slot beyond accuracy and F1: how uncertain they are, and how
far the probabilities behind them can be trusted.

Per slot, ``slot_report`` adds to :func:`llavac.evaluation.metrics.slot_metrics`:

- ``accuracy_ci``, ``weighted_f1_ci``, ``macro_f1_ci`` (every metric of ``RESAMPLED``):
  95 % percentile bootstrap intervals over the examples (``BOOTSTRAP``: 1,000 resamples,
  seed 0, so the same predictions always give the same interval). For ``score`` and
  ``generate`` alike; an unparseable or ``"uncertain"`` label is a wrong answer here, as in
  accuracy.
- with probabilities (``score``): ``ece``, ``nll``, ``brier``, ``aurc`` of the probabilities
  the predictions carry (calibrated when the run has ``calibration.json``), ``raw`` (the
  same four before temperature scaling) when a temperature was applied, and ``selective``:
  accuracy and coverage when only answers at or above a confidence threshold are kept.

The formulas are in :mod:`llavac.evaluation.calibration` and
:mod:`llavac.evaluation.significance`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from llavac.evaluation.calibration import (
    apply_temperature,
    calibration_metrics,
    reliability_diagram,
    risk_coverage_plot,
    selective_table,
)
from llavac.evaluation.metrics import RESAMPLED, slot_metrics
from llavac.evaluation.significance import bootstrap_ci
from llavac.labels import LABELS, slot_labels

BOOTSTRAP = {"n_resamples": 1000, "confidence": 0.95, "seed": 0}
# Confidence thresholds of the selective table: from "any majority" up to "nearly sure".
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def label_indices(labels: Sequence[str | None]) -> np.ndarray:
    """Labels as ``LABELS`` indices; anything else (None: unparseable, ``"uncertain"``) is
    -1, which the significance metrics count as wrong."""
    return np.array([LABELS.index(label) if label in LABELS else -1 for label in labels])


def gold_labels(records: Sequence, slots: Sequence[str]) -> dict[str, list[str | None]]:
    """``{slot: gold labels in record order}`` for the ``slots`` the records are labelled in."""
    gold = {slot: [slot_labels(record)[slot] for record in records] for slot in slots}
    return {slot: labels for slot, labels in gold.items()
            if any(label is not None for label in labels)}


def slot_probabilities(predictions: Sequence, slot: str, keep: Sequence[int]
                       ) -> np.ndarray | None:
    """The ``(len(keep), 3)`` probabilities of ``slot`` in ``LABELS`` order; None when the
    predictions carry none (``generate``)."""
    if any(predictions[i].probabilities is None for i in keep):
        return None
    return np.array([[predictions[i].probabilities[slot][label] for label in LABELS]
                     for i in keep])


def slot_report(gold: Sequence[str | None], predictions: Sequence, slot: str,
                temperature: float | None = None) -> dict:
    """``slot_metrics`` plus bootstrap intervals and, with probabilities, calibration.

    ``temperature``: the one the predictions' probabilities were scaled with; the raw
    figures are recovered exactly by scaling back with ``1 / temperature``.
    """
    values = slot_metrics(gold, [p.label(slot) for p in predictions])
    if not values["n"]:
        return values
    keep = [i for i, label in enumerate(gold) if label is not None]
    y_true = label_indices([gold[i] for i in keep])
    y_pred = label_indices([predictions[i].label(slot) for i in keep])
    for metric in RESAMPLED:
        values[metric.ci] = list(bootstrap_ci(metric.per_example, y_true, y_pred, **BOOTSTRAP))
    probs = slot_probabilities(predictions, slot, keep)
    if probs is not None:
        values.update(calibration_metrics(probs, y_true))
        if temperature is not None:
            values["raw"] = calibration_metrics(apply_temperature(probs, 1 / temperature),
                                                y_true)
        values["selective"] = selective_table(probs, probs.argmax(axis=1) == y_true,
                                              THRESHOLDS)
    return values


def slot_reports(gold: dict[str, list], predictions: Sequence,
                 temperatures: dict[str, float] | None) -> dict[str, dict]:
    """``slot_report`` of every slot in ``gold`` (``gold_labels``), with its temperature."""
    return {slot: slot_report(labels, predictions, slot, (temperatures or {}).get(slot))
            for slot, labels in gold.items()}


def calibration_plots(gold: dict[str, list], predictions: Sequence, title: str,
                      output: Path) -> list[Path]:
    """``reliability_<slot>.png`` and ``coverage_<slot>.png`` (accuracy against coverage)
    for every slot with probabilities."""
    paths = []
    for slot, labels in gold.items():
        keep = [i for i, label in enumerate(labels) if label is not None]
        probs = slot_probabilities(predictions, slot, keep)
        if probs is None:
            continue
        y_true = label_indices([labels[i] for i in keep])
        paths.append(reliability_diagram(probs, y_true, output / f"reliability_{slot}.png",
                                         f"{slot} label ({title})"))
        paths.append(risk_coverage_plot(probs, probs.argmax(axis=1) == y_true,
                                        output / f"coverage_{slot}.png",
                                        f"{slot} label ({title})"))
    return paths


def with_gold(predictions: Sequence, records: Sequence) -> Sequence:
    """``predictions`` carrying each record's gold labels (``gold: {slot: label}``), so that
    ``predictions.jsonl`` can be compared with another (``llavac compare``) without the data."""
    for prediction, record in zip(predictions, records, strict=True):
        prediction.gold = {slot: label for slot, label in slot_labels(record).items()
                           if label is not None}
    return predictions


def _interval(values: list[float]) -> str:
    return f"[{values[0]:.4f}, {values[1]:.4f}]"


def uncertainty_lines(metrics: dict) -> list[str]:
    """The summary's tables: intervals per slot, then calibration and selective figures."""
    slots = {slot: v for slot, v in metrics["slots"].items() if v["n"]}
    lines = ["", "95 % bootstrap intervals "
             f"({BOOTSTRAP['n_resamples']} resamples, seed {BOOTSTRAP['seed']}):", "",
             "| label | " + " | ".join(f"{m.title} 95 % CI" for m in RESAMPLED) + " |",
             "|---|" + "---|" * len(RESAMPLED)]
    lines += [f"| {slot} | " + " | ".join(_interval(v[m.ci]) for m in RESAMPLED) + " |"
              for slot, v in slots.items()]
    scored = {slot: v for slot, v in slots.items() if "ece" in v}
    if not scored:
        return lines
    calibration = metrics["calibration"]
    temperatures = calibration["temperatures"]
    lines += ["", f"Probabilities: **{calibration['headline']}**"
              + (" (temperatures " + ", ".join(f"{s} {t:.3f}" for s, t in temperatures.items())
                 + " from calibration.json; raw figures beside)" if temperatures
                 else " (no calibration.json)"), "",
              "| label | ECE | NLL | Brier | AURC |", "|---|---:|---:|---:|---:|"]
    for slot, v in scored.items():
        raw = v.get("raw")
        lines.append(f"| {slot} | " + " | ".join(
            f"{v[key]:.4f}" + (f" (raw {raw[key]:.4f})" if raw else "")
            for key in ("ece", "nll", "brier", "aurc")) + " |")
    lines += ["", "Answers kept at confidence >= threshold: accuracy (coverage)", "",
              "| threshold | " + " | ".join(scored) + " |",
              "|---:|" + "---:|" * len(scored)]
    for row, threshold in enumerate(THRESHOLDS):
        cells = []
        for v in scored.values():
            kept = v["selective"][row]
            accuracy_text = "–" if kept["accuracy"] is None else f"{kept['accuracy']:.3f}"
            cells.append(f"{accuracy_text} ({kept['coverage']:.2f})")
        lines.append(f"| {threshold:.1f} | " + " | ".join(cells) + " |")
    return lines
