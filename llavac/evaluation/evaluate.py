"""Evaluation: predict one part of a split and write metrics, predictions and plots.

Zero-shot evaluation is the same call without an adapter. The output folder holds
``metrics.json`` (per slot: accuracy, weighted and macro F1 with 95 % bootstrap intervals,
per-class precision / recall / F1 / support, the confusion matrix; with ``score`` also ECE,
NLL, Brier, AURC and accuracy / coverage at confidence thresholds; the unparseable count),
``predictions.jsonl`` (with each record's gold labels), ``confusion_<slot>.png``,
``reliability_<slot>.png`` and ``coverage_<slot>.png`` (``score``), modality reliance
(``score``: ``metrics.json``'s ``modality_reliance`` and ``reliance.jsonl``), ``summary.md``,
``report.html`` (the page to look at the errors with), and the ``config.yaml`` /
``manifest.json`` / ``versions.json`` every output folder carries. What counts and what is
left out is explained in :mod:`llavac.evaluation.metrics`, :mod:`llavac.evaluation.report`
and :mod:`llavac.evaluation.reliance`.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from llavac.args import DataArgs, EvalConfig
from llavac.data import load_data
from llavac.data.records import empty_part
from llavac.evaluation.html_report import write_report
from llavac.evaluation.metrics import HEADLINE, plot_confusion
from llavac.evaluation.reliance import RELIANCE_FILE, modality_reliance, reliance_lines
from llavac.evaluation.report import (
    calibration_plots,
    gold_labels,
    slot_reports,
    uncertainty_lines,
    with_gold,
)
from llavac.jsonl import write_jsonl
from llavac.predict import Classifier, write_predictions
from llavac.runs.folder import RunFolder
from llavac.runs.info import provenance_versions, results_hash, write_json, write_run_files
from llavac.runs.leakage import check_overlap


def evaluate(config: EvalConfig, classifier: Classifier | None = None) -> dict:
    """Run the evaluation ``config`` describes and return what ``metrics.json`` holds.

    ``classifier``: an already loaded model to use instead of loading ``config.model``
    (several evaluations of one model then load it once).
    """
    args, data = config.eval, config.data
    split = load_data(data)
    part, records = split.part(args.part, default="test")
    if not records:
        raise empty_part(data.path, part, split.manifest)
    overlap = check_overlap(config.model.adapter, records, part, args.allow_overlap)
    if classifier is None:
        classifier = Classifier.from_args(config.model)

    start = time.perf_counter()
    predictions = classifier.predict(records, args.method, args.batch_size, args.progress)
    seconds = time.perf_counter() - start

    gold = gold_labels(records, classifier.fmt.slots)
    slots = slot_reports(gold, predictions, classifier.temperatures)
    reliance, reliance_pairs = modality_reliance(classifier, records, predictions,
                                                 args.reliance_pairs, args.batch_size,
                                                 args.progress)
    metrics = {
        "method": args.method,
        "prompt": classifier.fmt.name,
        "part": part,
        # From the split itself: an exported split folder knows its procedure and fold.
        "procedure": split.manifest.get("procedure"),
        "fold": split.manifest.get("fold"),
        "records": len(records),
        "unparseable": sum(p.unparseable for p in predictions),
        "seconds": round(seconds, 3),
        "pairs_per_second": round(len(records) / seconds, 2),
        "calibration": calibration_info(classifier, args.method),
        "slots": slots,
        "modality_reliance": reliance,  # None: not measured (generate, or switched off)
        "trained_on_overlap": overlap,  # None: the model names no training records
        "provenance": provenance(config, split.manifest, classifier, part),
    }

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    write_predictions(with_gold(predictions, records), output / "predictions.jsonl")
    if reliance_pairs:
        write_jsonl(reliance_pairs, output / RELIANCE_FILE)
    write_json(metrics, output / "metrics.json")
    write_plots(metrics, gold, predictions, output)
    (output / "summary.md").write_text(summary(metrics, classifier.source, data),
                                       encoding="utf-8")
    write_report(output, records, args.report_max_mb)
    write_run_files(output, config, {"data": split.manifest, "model": classifier.source})
    return metrics


def provenance(config: EvalConfig, manifest: dict, classifier: Classifier, part: str) -> dict:
    """What a result needs to be traced and repeated: the training run's seeds and config
    hash, the split, the model and method, and the versions of llavac and its libraries."""
    # The training run's config and manifest; {} for zero-shot or a bare peft adapter.
    run = RunFolder(config.model.adapter) if config.model.adapter else None
    trained, run_manifest = (run.config(), run.manifest()) if run else ({}, {})
    source = classifier.source
    method = config.eval.method
    evaluation = {"data": dataclasses.asdict(config.data), "part": part, "method": method,
                  "prompt": classifier.fmt.name}
    return {
        "train_seed": trained.get("train", {}).get("seed"),
        # How the run was trained: the objective and the LoRA variant (llavac.studies.techniques).
        "objective": trained.get("train", {}).get("objective", "answer") if trained else None,
        "lora_variant": trained.get("lora", {}).get("variant", "lora") if trained else None,
        # The optimizer step's batch the run trained with, as its manifest recorded it.
        "global_batch_size": run_manifest.get("batch", {}).get("global"),
        "split_seed": manifest.get("seed"),  # random811's shuffle; None for a fixed split
        "config_hash": results_hash(trained or {"model": {"name": source.get("model")}},
                                    evaluation),
        "procedure": manifest.get("procedure"),
        "fold": manifest.get("fold"),
        "part": part,
        "model": source.get("model"),
        "adapter": source.get("adapter"),
        "method": method,
        "prompt": classifier.fmt.name,
        **provenance_versions(),
    }


def calibration_info(classifier: Classifier, method: str) -> dict:
    """Which probabilities the headline calibration figures judge: ``calibrated`` (the run's
    ``calibration.json`` applied; the raw ones are under each slot's ``raw``), ``raw``, or
    None for ``generate`` (no probabilities)."""
    temperatures = classifier.temperatures if method == "score" else None
    headline = None if method != "score" else "calibrated" if temperatures else "raw"
    return {"headline": headline, "temperatures": temperatures}


def write_plots(metrics: dict, gold: dict, predictions: list, output: Path) -> None:
    """Confusion matrices, and reliability / accuracy-coverage plots with probabilities."""
    title = f"{metrics['part']}, {metrics['method']}"
    for slot, values in metrics["slots"].items():
        if values["n"]:
            plot_confusion(values, f"{slot} label ({title})", output / f"confusion_{slot}.png")
    calibration_plots(gold, predictions, f"{title}, {metrics['calibration']['headline']}",
                      output)


def summary(metrics: dict, source: dict, data: DataArgs) -> str:
    """A short markdown report: what was evaluated and one row of scores per slot."""
    what = source.get("adapter") or f"{source.get('model')} (zero-shot)"
    lines = [
        f"# Evaluation of {what}",
        "",
        f"- base model: `{source.get('model')}`, prompt `{metrics['prompt']}`, "
        f"method `{metrics['method']}`",
        f"- data: `{data.path}`, procedure `{metrics['procedure']}`"
        + (f" fold {metrics['fold']}" if metrics["fold"] is not None else "")
        + f", part `{metrics['part']}` "
        f"({metrics['records']} pairs)",
        f"- unparseable answers: {metrics['unparseable']} (counted as wrong)",
        f"- time: {metrics['seconds']:.1f} s ({metrics['pairs_per_second']:.1f} pairs/s)",
        "",
        "| label | n | no gold | " + " | ".join(m.title for m in HEADLINE) + " |",
        "|---|---:|---:|" + "---:|" * len(HEADLINE),
    ]
    for slot, values in metrics["slots"].items():
        if values["n"]:
            lines.append(f"| {slot} | {values['n']} | {values['no_gold']} | " + " | ".join(
                f"{m.read(metrics, slot=slot):.4f}" for m in HEADLINE) + " |")
    return "\n".join(lines + uncertainty_lines(metrics)
                     + reliance_lines(metrics["modality_reliance"])) + "\n"
