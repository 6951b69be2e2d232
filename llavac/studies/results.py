"""An experiment's results: ``results.csv`` (one row per run and method, with provenance) and
``results.md`` (the paper-shaped table), rebuilt from the finished runs' ``metrics.json``.

The table sets the ``generate`` numbers (the paper's way: generate, then the strict parser)
beside the paper's, with the count of unparseable answers, and gives ``score`` its own
columns. A procedure with several runs shows mean ± std over folds / seeds; one run shows
its 95 % bootstrap interval. ``comparison_section`` adds the paired comparison (``llavac
compare``) with another experiment, e.g. the multimodal-only ablation.
"""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

from llavac.data.procedures import PROCEDURES
from llavac.evaluation.compare import compare_evaluations
from llavac.evaluation.metrics import METRICS
from llavac.runs.info import RESULT_LIBRARIES

# One row per run and method: the multimodal label's figures (every one of METRICS, with
# the intervals of those that have one), what sets them in context (training steps, the
# majority-class rate of the test part) and the result's provenance.
RESULT_COLUMNS = ("run", "variant", "method", *METRICS, "unparseable", "records",
                  *(f"{m.name}_ci_{end}" for m in METRICS.values() if m.ci
                    for end in ("low", "high")),
                  "train_steps", "majority_rate", "procedure", "fold", "part", "train_data",
                  "test_data", "train_seed", "split_seed", "config_hash", "model", "adapter",
                  "prompt", "llavac_version", "git_commit",
                  *(f"{name}_version" for name in RESULT_LIBRARIES))


def finished_hash(folder: Path) -> str | None:
    """The config hash of a run folder whose evaluation finished, else None."""
    done = folder / "run.json"
    return json.loads(done.read_text())["config_hash"] if done.is_file() else None


def collect_results(output: Path, digests: dict[str, str]) -> list[dict]:
    """One row per planned run finished with its current config (runs of other configs
    left in the folder are not mixed in) and method: multimodal metrics on the evaluated
    part and the provenance its ``metrics.json`` names."""
    rows = []
    for name, digest in digests.items():
        folder = output / "runs" / name
        if finished_hash(folder) != digest:
            continue
        run = json.loads((folder / "run.json").read_text())
        manifest = _json(folder / "train" / "manifest.json")
        for method in run["methods"]:
            metrics = json.loads((folder / "eval" / method / "metrics.json").read_text())
            rows.append(result_row(name, run, metrics, manifest))
    return rows


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def result_row(name: str, run: dict, metrics: dict, manifest: dict | None = None) -> dict:
    """A ``results.csv`` row: the run, its multimodal figures, intervals and provenance;
    ``manifest``: its training run's (trainable parameters, training time and steps)."""
    multimodal = metrics["slots"]["multimodal"]
    row = {"run": name, "variant": run.get("variant"), **metrics["provenance"],
           "unparseable": metrics["unparseable"], "records": metrics["records"],
           "train_data": run.get("train_data"), "test_data": run.get("test_data"),
           "train_steps": (manifest or {}).get("train_steps"),
           "majority_rate": majority_rate(multimodal)}
    for metric in METRICS.values():
        row[metric.name] = metric.read(metrics, manifest)
        if metric.ci and multimodal.get(metric.ci):
            row[f"{metric.name}_ci_low"], row[f"{metric.name}_ci_high"] = multimodal[metric.ci]
    return {column: row.get(column) for column in RESULT_COLUMNS}


def majority_rate(slot: dict) -> float | None:
    """The accuracy of always answering the test part's most common gold label."""
    support = [values["support"] for values in (slot.get("per_class") or {}).values()]
    return max(support) / sum(support) if support and sum(support) else None


def _mean_std(rows: list[dict], metric: str) -> str:
    """Mean ± std over several runs; one run: its value and 95 % bootstrap interval."""
    if not rows:
        return "–"
    percent = [100 * row[metric] for row in rows]
    if len(rows) == 1:
        return (f"{percent[0]:.2f} [{100 * rows[0][f'{metric}_ci_low']:.2f}, "
                f"{100 * rows[0][f'{metric}_ci_high']:.2f}]")
    return f"{statistics.mean(percent):.2f} ± {statistics.stdev(percent):.2f}"


def _method_cells(group: list[dict], method: str, unparseable: bool) -> list[str]:
    """Accuracy and weighted F1 of ``method`` over a procedure's runs (+ unparseable count)."""
    rows = [row for row in group if row["method"] == method]
    cells = [_mean_std(rows, "accuracy"), _mean_std(rows, "weighted_f1")]
    if unparseable:
        cells.append(f"{sum(r['unparseable'] for r in rows)} / {sum(r['records'] for r in rows)}"
                     if rows else "–")
    return cells


def _table_row(procedure: str, variant: str | None, reference: str | None,
               group: list[dict]) -> str:
    # LLaVAC's own figures (arXiv 2502.02938) are the procedure's, in its registry entry.
    entry = PROCEDURES.get(procedure)
    title = entry.title if entry else procedure
    paper_acc, paper_f1 = entry.paper if entry and entry.paper else (None, None)
    paper = [f"{paper_acc:.2f}", f"{paper_f1:.2f}"] if paper_acc is not None else ["–"] * 2
    prompts = sorted({row["prompt"] for row in group})
    if prompts != ["full"]:  # the paper's numbers are for the full prompt
        title, paper = f"{title}, {' / '.join(prompts)} prompt", ["–"] * 2
    if variant is not None:  # the paper's numbers are its recipe's: the reference variant's
        title, paper = f"{title}, {variant}", paper if variant == reference else ["–"] * 2
    names = [", ".join(sorted({str(row[key]) for row in group}))
             for key in ("model", "train_data", "test_data", "train_steps")]
    majority = [100 * row["majority_rate"] for row in group if row["majority_rate"] is not None]
    runs = len({row["run"] for row in group})
    cells = [title, *names, f"{statistics.mean(majority):.2f}" if majority else "–", str(runs),
             *_method_cells(group, "generate", True), *paper,
             *_method_cells(group, "score", False)]
    return "| " + " | ".join(cells) + " |"


def write_results(rows: list[dict], output: Path) -> None:
    with (output / "results.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=RESULT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "| procedure | model | train data | test data | steps | majority class | runs "
        "| generate accuracy | generate weighted F1 | unparseable | paper accuracy "
        "| paper weighted F1 | score accuracy | score weighted F1 |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    reference = rows[0]["variant"] if rows else None  # the first variant planned
    for procedure, variant in dict.fromkeys((row["procedure"], row["variant"]) for row in rows):
        lines.append(_table_row(procedure, variant, reference, [
            r for r in rows if (r["procedure"], r["variant"]) == (procedure, variant)]))
    note = ("\nMultimodal label, in %: mean ± std over folds / seeds, or for one run its 95 % "
            "bootstrap interval [low, high]. `generate`: the paper's way (generate, then the "
            "strict parser; an unparseable answer counts as wrong), set beside the paper's "
            "numbers. `score`: the label candidates' probabilities (never unparseable). "
            "`steps`: the optimizer steps each run trained; `majority class`: the accuracy "
            "of always answering the test part's most common label, the floor a model that "
            "learnt nothing reaches. Paper: LLaVAC with LLaVA-1.5-7B (arXiv "
            "2502.02938); a run of another model, or of far fewer steps, is not its setting.\n")
    (output / "results.md").write_text("\n".join(lines) + "\n" + note, encoding="utf-8")


def comparison_section(output: Path, other: Path, names: list[str],
                       methods: list[str]) -> str:
    """Markdown: this experiment (A) against ``other`` (B, e.g. the multimodal-only
    ablation), paired on every run and method both evaluated, multimodal label, B - A."""
    title = ["", f"## Paired comparison with `{other}` (B - A, multimodal label)", ""]
    pairs = [(name, method) for name in names for method in methods
             if all((folder / "runs" / name / "eval" / method / "metrics.json").is_file()
                    for folder in (output, other))]
    if not pairs:
        return "\n".join(title + ["No run evaluated in both experiments yet."]) + "\n"
    lines = title + ["| run | method | accuracy A | accuracy B | B - A [95 % CI] | McNemar p "
                     "| weighted F1 B - A [95 % CI] |", "|---|---|---:|---:|---|---:|---|"]
    for name, method in pairs:
        figures = compare_evaluations(output / "runs" / name / "eval" / method,
                                      other / "runs" / name / "eval" / method)
        figures = figures["slots"]["multimodal"]
        lines.append(f"| {name} | {method} | {100 * figures['accuracy_a']:.2f} | "
                     f"{100 * figures['accuracy_b']:.2f} | {_diff(figures, 'accuracy')} | "
                     f"{figures['mcnemar_p']:.4g} | {_diff(figures, 'weighted_f1')} |")
    return "\n".join(lines) + "\n"


def _diff(figures: dict, metric: str) -> str:
    low, high = figures[f"{metric}_diff_ci"]
    return f"{100 * figures[f'{metric}_diff']:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}]"
