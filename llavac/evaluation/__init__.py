"""Evaluation: metrics of predictions against gold labels, and the outputs a result needs.

    evaluate(EvalConfig) -> metrics (also metrics.json, predictions.jsonl, plots, summary.md)
    slot_metrics(gold, predicted) -> accuracy, weighted / macro F1, per class, confusion
    report.slot_report(gold, predictions, slot) -> + bootstrap CIs, ECE / NLL / Brier / AURC
    calibrate.calibrate(CalibrateConfig) -> RUN/calibration.json (a temperature per slot)
    compare.compare_evaluations(eval_a, eval_b) -> paired bootstrap + exact McNemar per slot

This stage imports down (data, models, predict), never sideways into training.
"""

from llavac.evaluation.evaluate import evaluate
from llavac.evaluation.metrics import slot_metrics

__all__ = ["evaluate", "slot_metrics"]
