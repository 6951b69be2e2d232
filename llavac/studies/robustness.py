"""Prompt robustness: one trained run evaluated under every prompt variant.

    llavac robustness runs/tiny_synthetic --data runs/synthetic --procedure random811 \
        --output runs/robustness

LLaVAC (arXiv 2502.02938) names prompt sensitivity as a limit of the method. This command
asks the same test pairs with each variant of ``llavac/configs/prompt_variants.yaml`` (or
``--variants FILE``) and reports, per variant and slot, the headline scores (accuracy,
weighted and macro F1: ``metrics.HEADLINE``) and the share of predictions that differ from
the ``original`` prompt's (the run's own). The ``original`` row is exactly what ``llavac
evaluate`` reports for the same run, data and method. As ``evaluate``, it refuses to report
a run on records it trained on (``--allow-overlap`` to do so deliberately) and an existing
result without ``--overwrite``.
The output folder holds ``robustness.json`` (a ``variants`` list and the spread between
variants per slot), ``robustness.md``, ``robustness.png`` and the run files.
"""

from __future__ import annotations

from pathlib import Path

from llavac.args import RobustnessConfig
from llavac.data import load_data
from llavac.data.records import empty_part
from llavac.evaluation.metrics import HEADLINE, slot_metrics
from llavac.labels import slot_labels
from llavac.predict import Classifier, Prediction
from llavac.prompt import PromptFormat
from llavac.prompt.variants import ORIGINAL, load_variants
from llavac.runs.info import write_json, write_run_files
from llavac.runs.leakage import check_overlap

_SCORES = tuple(metric.name for metric in HEADLINE)  # the figures shown where accuracy is


def robustness(config: RobustnessConfig) -> dict:
    """Evaluate ``config.model`` under every variant; write and return ``robustness.json``."""
    args = config.robustness
    output = Path(args.output)
    if (output / "robustness.json").is_file() and not args.overwrite:
        raise ValueError(f"{output} already holds a finished result (robustness.json): choose "
                         "another output folder, or give --overwrite to replace it")
    split = load_data(config.data)
    part, records = split.part(args.part, default="test")
    if not records:
        raise empty_part(config.data.path, part, split.manifest)
    check_overlap(config.model.adapter, records, part, args.allow_overlap,
                  key="--allow-overlap (robustness.allow_overlap=true)")
    classifier = Classifier.from_args(config.model)
    variants = load_variants(args.variants, classifier.fmt)
    predictions = {
        name: Classifier(classifier.model, classifier.processor, fmt, classifier.source)
        .predict(records, args.method, args.batch_size, args.progress)
        for name, fmt in variants.items()
    }
    rows = [variant_row(name, fmt, records, predictions[name], predictions[ORIGINAL])
            for name, fmt in variants.items()]
    result = {"method": args.method, "part": part, "records": len(records),
              "model": classifier.source, "variants": rows, "spread": spread(rows)}

    output.mkdir(parents=True, exist_ok=True)
    write_json(result, output / "robustness.json")
    (output / "robustness.md").write_text(markdown(result), encoding="utf-8")
    plot(result, output / "robustness.png")
    write_run_files(output, config, {"data": split.manifest, "model": classifier.source})
    return result


def variant_row(name: str, fmt: PromptFormat, records, predictions: list[Prediction],
                reference: list[Prediction]) -> dict:
    """One variant's scores per slot, and how many of its labels differ from ``reference``'s
    (the original prompt's): per slot, and ``any`` for a pair with at least one."""
    slots = {}
    for slot in fmt.slots:
        gold = [slot_labels(record)[slot] for record in records]
        predicted = [p.label(slot) for p in predictions]
        changed = sum(p != r.label(slot) for p, r in zip(predicted, reference, strict=True))
        metrics = slot_metrics(gold, predicted) if any(g is not None for g in gold) else {}
        slots[slot] = {"n": metrics.get("n", 0),
                       **{key: metrics[key] for key in _SCORES if key in metrics},
                       "changed": changed / len(records)}
    differs = sum(any(p.label(s) != r.label(s) for s in fmt.slots)
                  for p, r in zip(predictions, reference, strict=True))
    return {"name": name, "prompt": fmt.name, "instruction": fmt.instruction,
            "unparseable": sum(p.unparseable for p in predictions),
            "changed_any": differs / len(records), "slots": slots}


def spread(rows: list[dict]) -> dict:
    """Per slot and score, the best minus the worst variant: how much the wording matters."""
    result = {}
    for slot in dict.fromkeys(slot for row in rows for slot in row["slots"]):
        scores = [row["slots"][slot] for row in rows
                  if all(key in row["slots"].get(slot, {}) for key in _SCORES)]
        if scores:
            result[slot] = {key: max(s[key] for s in scores) - min(s[key] for s in scores)
                            for key in _SCORES}
    return result


def markdown(result: dict) -> str:
    """A table: one row per variant, the headline scores per slot, share changed."""
    slots = list(result["spread"])
    head = " | ".join(f"{slot} {metric.title}" for slot in slots for metric in HEADLINE)
    lines = [
        f"# Prompt robustness of {result['model'].get('adapter') or result['model']['model']}",
        "",
        f"- {result['records']} pairs of the {result['part']} part, method `{result['method']}`",
        "- changed: share of pairs with a label that differs from the `original` prompt's",
        "",
        f"| variant | {head} | changed | unparseable |",
        "|---|" + "---:|" * (len(_SCORES) * len(slots) + 2),
    ]
    for row in result["variants"]:
        cells = " | ".join(_cell(row["slots"].get(slot, {}), key) for slot in slots
                           for key in _SCORES)
        lines.append(f"| {row['name']} | {cells} | {row['changed_any']:.4f} | "
                     f"{row['unparseable']} |")
    cells = " | ".join(f"{result['spread'][slot][key]:.4f}" for slot in slots
                       for key in _SCORES)
    lines.append(f"| **spread** (max − min) | {cells} | | |")
    return "\n".join(lines) + "\n"


def _cell(values: dict, key: str) -> str:
    return f"{values[key]:.4f}" if key in values else "–"


def plot(result: dict, path: Path) -> Path:
    """Accuracy per slot (bars) for each variant (groups)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display is needed or assumed
    import matplotlib.pyplot as plt

    slots = list(result["spread"])
    names = [row["name"] for row in result["variants"]]
    width = 0.8 / max(len(slots), 1)
    fig, ax = plt.subplots(figsize=(1.2 + 1.3 * len(names), 3.8))
    for k, slot in enumerate(slots):
        values = [row["slots"].get(slot, {}).get("accuracy", 0.0) for row in result["variants"]]
        ax.bar([i + k * width for i in range(len(names))], values, width, label=slot)
    ax.set_xticks([i + width * (len(slots) - 1) / 2 for i in range(len(names))], names,
                  rotation=20, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"Accuracy per prompt variant ({result['part']}, {result['method']})")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
