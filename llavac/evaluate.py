"""Evaluation: predict one part of a split and write metrics, predictions and plots.

Zero-shot evaluation is the same call without an adapter. The output folder holds
``metrics.json`` (per slot: accuracy, weighted and macro F1, per-class precision / recall /
F1 / support, the confusion matrix; the unparseable count), ``predictions.jsonl``,
``confusion_<slot>.png``, ``summary.md``, and the ``config.yaml`` / ``manifest.json`` /
``versions.json`` every output folder carries. What counts and what is left out is
explained in :mod:`llavac.metrics`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from llavac.data import load_split
from llavac.data.load import PART_NAMES as PARTS
from llavac.labels import slot_labels
from llavac.metrics import plot_confusion, slot_metrics
from llavac.predict import Classifier, write_predictions
from llavac.runinfo import write_json, write_run_files
from llavac.train.args import DataArgs


@dataclass
class EvalConfig:
    """One evaluation; saved as ``config.yaml`` in its output folder, loadable as a preset."""

    model: str | None = None  # base model; None: the one the adapter's run config names
    adapter: str | None = None  # a training run folder or a peft adapter; None: zero-shot
    data: DataArgs = field(default_factory=DataArgs)
    part: str = "test"  # train | validation | test
    output: str = "runs/eval"
    method: str = "score"  # score | generate
    batch_size: int = 16
    prompt: str | None = None  # None: the adapter run's prompt, else "full"
    dtype: str | None = None  # None: the run's model.dtype, else the checkpoint's own
    progress: bool = True


def evaluate(config: EvalConfig, classifier: Classifier | None = None) -> dict:
    """Run the evaluation ``config`` describes and return what ``metrics.json`` holds.

    ``classifier``: an already loaded model to use instead of loading ``config.model`` /
    ``config.adapter`` (several evaluations of one model then load it once).
    """
    if config.part not in PARTS:
        raise ValueError(f"part must be one of {', '.join(PARTS)}, not {config.part!r}")
    data = config.data
    split = load_split(data.path, procedure=data.procedure, fold=data.fold,
                       seed=data.split_seed, splits_dir=data.splits_dir, strict=data.strict)
    records = getattr(split, config.part)
    if not records:
        raise ValueError(f"{data.path}: the {config.part} part is empty")
    if classifier is None:
        classifier = Classifier.from_pretrained(config.model, config.adapter, config.prompt,
                                                config.dtype)

    start = time.perf_counter()
    predictions = classifier.predict(records, config.method, config.batch_size,
                                     config.progress)
    seconds = time.perf_counter() - start

    slots = {}
    for slot in classifier.fmt.slots:
        gold = [slot_labels(record)[slot] for record in records]
        if any(label is not None for label in gold):  # the data has this label
            slots[slot] = slot_metrics(gold, [p.label(slot) for p in predictions])
    metrics = {
        "method": config.method,
        "prompt": classifier.fmt.name,
        "part": config.part,
        # From the split itself: an exported split folder knows its procedure and fold.
        "procedure": split.manifest.get("procedure"),
        "fold": split.manifest.get("fold"),
        "records": len(records),
        "unparseable": sum(p.unparseable for p in predictions),
        "seconds": round(seconds, 3),
        "pairs_per_second": round(len(records) / seconds, 2),
        "slots": slots,
    }

    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    write_predictions(predictions, output / "predictions.jsonl")
    write_json(metrics, output / "metrics.json")
    for slot, values in slots.items():
        if values["n"]:
            plot_confusion(values, f"{slot} label ({config.part}, {config.method})",
                           output / f"confusion_{slot}.png")
    (output / "summary.md").write_text(summary(metrics, classifier.source, data),
                                       encoding="utf-8")
    write_run_files(output, config, {"data": split.manifest, "model": classifier.source})
    return metrics


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
        "| label | n | no gold | accuracy | weighted F1 | macro F1 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for slot, values in metrics["slots"].items():
        if values["n"]:
            lines.append(f"| {slot} | {values['n']} | {values['no_gold']} | "
                         f"{values['accuracy']:.4f} | "
                         f"{values['weighted_f1']:.4f} | {values['macro_f1']:.4f} |")
    return "\n".join(lines) + "\n"
