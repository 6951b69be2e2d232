"""Named variants of an experiment (``experiment.variants``) and the study that compares them.

A variant is a name and a set of ``key=value`` overrides of the experiment's training
config, written ``"name: key=value key=value"`` (``"paper"`` alone: no override). Every
variant is crossed with the procedures, folds and seeds, so each cell of the study is a
(procedure, variant) over the seeds. The first variant is the reference the others are
compared with, pair by pair on the same test records (``llavac compare``: the paired
bootstrap and McNemar's exact test), e.g. the paper's recipe (LoRA + structured answer)
against the head objective or a LoRA variant:

    llavac experiment --config techniques data.path=/path/to/MVSA_Single
"""

from __future__ import annotations

import statistics
from pathlib import Path

from llavac.config import apply_overrides
from llavac.evaluation.compare import compare_evaluations
from llavac.evaluation.metrics import METRICS

STUDY_METHOD = "score"  # the method the study compares: probabilities, so ECE exists
STUDY_COLUMNS = ("accuracy", "weighted_f1", "ece", "trainable_parameters", "train_seconds",
                 "pairs_per_second")


def parse_variants(entries: list[str]) -> dict[str, list[str]]:
    """``["paper", "head: train.objective=head"]`` -> ``{name: overrides}``, in order."""
    variants: dict[str, list[str]] = {}
    for entry in entries:
        name, _, overrides = entry.partition(":")
        name = name.strip()
        if not name or not name.replace("-", "").replace("_", "").isalnum() or name in variants:
            raise ValueError(f"experiment.variants: {entry!r} needs a new name of letters, "
                             "digits, - or _, then ': key=value ...'")
        bad = [o for o in overrides.split() if "=" not in o]
        if bad:
            raise ValueError(f"experiment.variants: {entry!r}: {bad[0]!r} is not key=value")
        variants[name] = overrides.split()
    return variants


def variant_config(config, variant: str | None):
    """``config`` with ``variant``'s overrides applied (``None``: as it is)."""
    if variant is None:
        return config
    return apply_overrides(config, parse_variants(config.experiment.variants)[variant])


def check_study(config):
    """``config``, once no variant is one that cannot be evaluated as asked (a head run has
    no answer to generate) or that does not parse."""
    for variant in parse_variants(config.experiment.variants):
        trained = variant_config(config, variant)
        if trained.train.objective == "head" and "generate" in config.experiment.methods:
            raise ValueError(f"experiment.variants: '{variant}' trains heads "
                             "(train.objective=head), which generate no answer: set "
                             "experiment.methods=score")
    return config


def techniques_section(rows: list[dict], output: Path) -> str:
    """Markdown: per (procedure, variant) cell the study's figures over its runs, and each
    run paired with the reference variant's run of the same procedure, fold and seed."""
    rows = [row for row in rows if row["method"] == STUDY_METHOD and row["variant"]]
    if not rows:
        return ""
    reference = rows[0]["variant"]
    metrics = [METRICS[name] for name in STUDY_COLUMNS]
    lines = ["", f"## Techniques (multimodal label, `{STUDY_METHOD}`; reference: "
             f"`{reference}`)", "",
             "| procedure | variant | runs | " + " | ".join(m.title for m in metrics)
             + f" | accuracy - {reference} [95 % CI] | McNemar p |",
             "|---|---|---:|" + "---:|" * len(metrics) + "---|---:|"]
    for procedure, variant in dict.fromkeys((r["procedure"], r["variant"]) for r in rows):
        cell = [r for r in rows if (r["procedure"], r["variant"]) == (procedure, variant)]
        figures = [_cell_value(cell, metric) for metric in metrics]
        paired = [_paired(output, row, reference) for row in cell] if variant != reference else []
        lines.append(f"| {procedure} | {variant} | {len(cell)} | " + " | ".join(figures)
                     + " | " + (" / ".join(d for d, _ in paired) or "–") + " | "
                     + (" / ".join(p for _, p in paired) or "–") + " |")
    lines += ["", "Accuracy and weighted F1 in % (one run: its 95 % bootstrap interval; "
              "several: mean ± std); ECE, trainable parameters, training time and pairs/s "
              "are means over the runs. The paired columns give one entry per run."]
    return "\n".join(lines) + "\n"


def _cell_value(cell: list[dict], metric) -> str:
    values = [row[metric.name] for row in cell if row[metric.name] is not None]
    if not values:
        return "–"
    if len(values) == 1 and metric.ci:
        row = cell[0]
        return (f"{metric.show(values[0])} [{metric.show(row[f'{metric.name}_ci_low'])}, "
                f"{metric.show(row[f'{metric.name}_ci_high'])}]")
    if len(values) > 1 and metric.ci:
        return f"{metric.show(statistics.mean(values))} ± {metric.show(statistics.stdev(values))}"
    return metric.show(statistics.mean(values))


def reference_run(run: str, variant: str, reference: str) -> str:
    """The reference variant's run of the same procedure, fold and seed as ``run``."""
    return run.removesuffix(f"-{variant}") + f"-{reference}"


def _paired(output: Path, row: dict, reference: str) -> tuple[str, str]:
    """``(accuracy difference [CI], McNemar p)`` of ``row``'s run against the reference's."""
    a = output / "runs" / reference_run(row["run"], row["variant"], reference) / "eval"
    b = output / "runs" / row["run"] / "eval"
    if not (a / STUDY_METHOD / "metrics.json").is_file():
        return "–", "–"
    figures = compare_evaluations(a / STUDY_METHOD, b / STUDY_METHOD)["slots"]["multimodal"]
    low, high = figures["accuracy_diff_ci"]
    return (f"{100 * figures['accuracy_diff']:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}]",
            f"{figures['mcnemar_p']:.4g}")
