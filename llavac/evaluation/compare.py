"""Paired comparison of two evaluations of the same test pairs.

    llavac compare EVAL_A EVAL_B [--json]

On 450-519 test pairs one accuracy point is about five pairs, well inside sampling noise, so
two systems are compared *paired*, on the same examples (Dror et al. 2018, "The
Hitchhiker's Guide to Testing Statistical Significance in NLP"). Per slot:

- accuracy, weighted and macro F1 (every metric of ``metrics.RESAMPLED``) of A and of B;
- the difference B - A of each with a paired-bootstrap 95 % interval and p-value
  (Berg-Kirkpatrick et al. 2012; 1,000 resamples, seed 0);
- ``mcnemar_p``: the exact two-sided McNemar test on the pairs exactly one system gets
  right (binomial, p = 0.5; 1 when there are none).

Both folders are ``llavac evaluate`` outputs: their ``predictions.jsonl`` carry the gold
labels, so no data is read. They must hold the same ids with the same gold labels, or the
comparison is refused. A slot is compared when both evaluations scored it (the
multimodal-only prompt scores only ``multimodal``); an unparseable answer counts as wrong.
"""

from __future__ import annotations

import json
from pathlib import Path

from llavac.evaluation.metrics import RESAMPLED
from llavac.evaluation.report import BOOTSTRAP, label_indices
from llavac.evaluation.significance import mcnemar_exact, paired_bootstrap_diff
from llavac.labels import SLOT_FIELDS, SLOTS


def read_evaluation(folder: str | Path) -> tuple[dict[str, dict], list[str]]:
    """``({id: prediction row}, evaluated slots)`` of an ``llavac evaluate`` folder."""
    folder = Path(folder)
    predictions, metrics = folder / "predictions.jsonl", folder / "metrics.json"
    for path in (predictions, metrics):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found; is {folder} an llavac evaluate "
                                    "output folder?")
    rows = {}
    for number, line in enumerate(predictions.read_text(encoding="utf-8").splitlines(), 1):
        row = json.loads(line)
        if "gold" not in row:
            raise ValueError(f"{predictions}:{number}: no 'gold' labels (written by an older "
                             "llavac evaluate); evaluate again to compare")
        if row["id"] in rows:
            raise ValueError(f"{predictions}:{number}: id {row['id']!r} appears twice")
        rows[row["id"]] = row
    slots = json.loads(metrics.read_text(encoding="utf-8"))["slots"]
    return rows, [slot for slot in SLOTS if slots.get(slot, {}).get("n")]


def _check_same_pairs(a: dict, b: dict, name_a: str, name_b: str) -> None:
    """ValueError naming the first differing id or gold label."""
    only_a, only_b = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
    if only_a or only_b:
        raise ValueError(
            f"{name_a} and {name_b} hold different test ids ({len(only_a)} only in A, e.g. "
            f"{only_a[:3]}; {len(only_b)} only in B, e.g. {only_b[:3]}): a paired comparison "
            "needs the same pairs")
    for id in a:
        if a[id]["gold"] != b[id]["gold"]:
            raise ValueError(f"{name_a} and {name_b} disagree on the gold labels of id {id!r} "
                             f"({a[id]['gold']} vs {b[id]['gold']}): not the same test data")


def compare_slot(gold: list, pred_a: list, pred_b: list) -> dict:
    """The figures of one slot: each system's scores, the paired differences, McNemar."""
    y_true, a, b = label_indices(gold), label_indices(pred_a), label_indices(pred_b)
    result: dict = {"n": len(gold)}
    for metric in RESAMPLED:
        name, per_example = metric.name, metric.per_example
        diff = paired_bootstrap_diff(per_example, y_true, a, b, **BOOTSTRAP)
        result |= {f"{name}_a": per_example(y_true, a), f"{name}_b": per_example(y_true, b),
                   f"{name}_diff": diff["diff"], f"{name}_diff_ci": list(diff["ci"]),
                   f"{name}_diff_p": diff["p_value"]}
    mcnemar = mcnemar_exact(a == y_true, b == y_true)
    return result | {"a_only_right": mcnemar["b"], "b_only_right": mcnemar["c"],
                     "mcnemar_p": mcnemar["p"]}


def compare_evaluations(eval_a: str | Path, eval_b: str | Path) -> dict:
    """``{"a", "b", "n", "bootstrap", "slots": {slot: figures or None}}``; B - A throughout.

    A slot is None when either evaluation did not score it.
    """
    (rows_a, slots_a), (rows_b, slots_b) = read_evaluation(eval_a), read_evaluation(eval_b)
    _check_same_pairs(rows_a, rows_b, str(eval_a), str(eval_b))
    slots = {}
    for slot in SLOTS:
        ids = [id for id in rows_a if slot in rows_a[id]["gold"]]
        if slot not in slots_a or slot not in slots_b or not ids:
            slots[slot] = None
            continue
        field = SLOT_FIELDS[slot]
        slots[slot] = compare_slot([rows_a[id]["gold"][slot] for id in ids],
                                   [rows_a[id][field] for id in ids],
                                   [rows_b[id][field] for id in ids])
    return {"a": str(eval_a), "b": str(eval_b), "n": len(rows_a), "bootstrap": BOOTSTRAP,
            "slots": slots}


def _pct(value: float) -> str:
    return f"{100 * value:.2f}"


def format_comparison(result: dict) -> str:
    """A small markdown table: one row per slot and metric, B - A with its interval."""
    lines = [f"A: {result['a']}", f"B: {result['b']}",
             f"{result['n']} paired test ids; differences are B - A in points, 95 % paired "
             f"bootstrap ({result['bootstrap']['n_resamples']} resamples)", "",
             "| label | metric | A | B | B - A | 95 % CI | bootstrap p | McNemar p |",
             "|---|---|---:|---:|---:|---|---:|---:|"]
    for slot, figures in result["slots"].items():
        if figures is None:
            lines.append(f"| {slot} | not scored by both | | | | | | |")
            continue
        for metric in RESAMPLED:
            name = metric.name
            low, high = figures[f"{name}_diff_ci"]
            mcnemar = f"{figures['mcnemar_p']:.4g}" if name == "accuracy" else ""
            lines.append(
                f"| {slot} | {metric.title} | {_pct(figures[f'{name}_a'])} | "
                f"{_pct(figures[f'{name}_b'])} | {100 * figures[f'{name}_diff']:+.2f} | "
                f"[{100 * low:+.2f}, {100 * high:+.2f}] | {figures[f'{name}_diff_p']:.3f} | "
                f"{mcnemar} |")
    return "\n".join(lines) + "\n"

