"""Experiments: train + evaluate over procedures x folds x seeds, and the paper-shaped table.

    llavac experiment --config llavac_p1_cheema10 data.path=/path/to/MVSA_Single

Each run lives in ``<output>/runs/<procedure>[-fold<k>]-seed<s>/`` with its ``train/`` and
``eval/`` folders and, once evaluated, a ``run.json`` holding the hash of the settings that
decide its results. A run whose ``run.json`` matches is skipped; a run interrupted during
training resumes from its last checkpoint; a run folder left by other settings is trained
afresh. So the same command can be repeated until everything is done. ``results.csv`` (one
row per run) and ``results.md`` (mean ± std per procedure beside the paper's numbers) are
rebuilt on every invocation from the planned runs that finished with the current settings.
A procedure with one run (a single split, one seed) shows its 95 % bootstrap interval
instead of a standard deviation. With ``experiment.compare_with`` (another experiment's
output folder, e.g. the multimodal-only ablation), ``results.md`` also holds the paired
comparison (``llavac compare``) of every run the two share, on the multimodal label.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import statistics
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import yaml
from accelerate import PartialState

from llavac.args import (
    ClassifierArgs,
    DataArgs,
    EvalArgs,
    EvalConfig,
    ExperimentArgs,
    ExperimentConfig,
    TrainConfig,
)
from llavac.config import config_hash, save_config, to_dict
from llavac.console import log
from llavac.evaluation import evaluate
from llavac.evaluation.compare import compare_evaluations
from llavac.train import train
from llavac.train.recipe import is_finished, with_input_defaults

# LLaVAC (arXiv 2502.02938), MVSA-Single, multimodal label: accuracy / weighted F1 in %.
PAPER = {
    "cheema10": ("P1: Cheema et al. 10 folds", 76.24, 76.36),
    "random811": ("P2: random 8:1:1 after the Xu & Mao rule", 77.05, 76.76),
    "clmlf": ("P2: the public CLMLF 8:1:1 split", 77.05, 76.76),
    "qmf": ("P3: the QMF split", 85.36, 85.06),
}
RESULT_COLUMNS = ("run", "model", "procedure", "fold", "seed", "config_hash", "train_data",
                  "test_data", "accuracy", "weighted_f1", "macro_f1", "accuracy_ci_low",
                  "accuracy_ci_high", "weighted_f1_ci_low", "weighted_f1_ci_high")


@dataclass(frozen=True)
class Run:
    procedure: str
    fold: int | None
    seed: int

    @property
    def name(self) -> str:
        fold = f"-fold{self.fold}" if self.fold is not None else ""
        return f"{self.procedure}{fold}-seed{self.seed}"


def planned_runs(args: ExperimentArgs) -> list[Run]:
    return [
        Run(procedure, fold, seed)
        for procedure in args.procedures
        for fold in (args.folds if procedure == "cheema10" else [None])
        for seed in args.seeds
    ]


def run_configs(config: ExperimentConfig, run: Run,
                folder: Path) -> tuple[TrainConfig, EvalConfig]:
    data = dataclasses.replace(
        config.data, procedure=run.procedure, fold=run.fold,
        split_seed=run.seed if run.procedure == "random811" else config.data.split_seed,
    )
    train_config = TrainConfig(
        model=config.model, data=data, lora=config.lora,
        train=dataclasses.replace(config.train, seed=run.seed, output=str(folder / "train")),
    )
    eval_config = EvalConfig(
        model=ClassifierArgs(adapter=str(folder / "train")), data=eval_data(config, data),
        eval=EvalArgs(output=str(folder / "eval"), part=config.experiment.part,
                      method=config.experiment.method, batch_size=config.experiment.batch_size,
                      progress=config.train.progress),
    )
    return train_config, eval_config


def eval_data(config: ExperimentConfig, data: DataArgs) -> DataArgs:
    """What a run is tested on: ``data`` (its training data), or the ``eval_data`` section
    (cross-dataset), whose unset procedure / fold are the run's."""
    other = config.eval_data
    if not other.path:
        return data
    return dataclasses.replace(other, procedure=other.procedure or data.procedure,
                               fold=other.fold if other.fold is not None else data.fold)


def source_name(data: DataArgs) -> str:
    """``MVSA_Single (qmf)``: a data source as the results table names it."""
    return f"{Path(data.path).name if data.path else None} ({data.procedure or 'as exported'})"


# What changes how a run goes but not its numbers: left out of the key that decides
# whether a finished run is reused, so raising num_workers does not retrain a 7B model.
_NOT_RESULTS = ("output", "progress", "num_workers", "logging_steps", "save_steps",
                "save_total_limit", "report_to")


def results_key(train_config: dict) -> dict:
    """The part of a (saved or planned) training config that decides its results."""
    train_args = {k: v for k, v in train_config["train"].items() if k not in _NOT_RESULTS}
    return {**train_config, "train": train_args}


def claim_experiment(config: ExperimentConfig, overwrite: bool) -> None:
    """Refuse an experiment folder made with other settings unless ``overwrite`` (which empties
    it); the same settings resume, which is how an interrupted experiment continues."""
    output = Path(config.experiment.output)
    saved = output / "config.yaml"
    if not saved.is_file():
        return
    if yaml.safe_load(saved.read_text(encoding="utf-8")) == to_dict(config):
        return
    if not overwrite:
        raise ValueError(f"{output} holds an experiment with other settings ({saved}): choose "
                         "another experiment.output, or give --overwrite to replace it (the "
                         "same settings resume it)")
    shutil.rmtree(output)


def run_experiment(config: ExperimentConfig) -> Path:
    """Make every run not yet done, then write ``results.csv`` and ``results.md``.

    Under ``torchrun`` every rank trains; evaluation and bookkeeping run on the main
    process while the others wait.
    """
    # This process, or this rank of a torchrun launch. Created before the Trainer so the
    # bookkeeping below runs on one rank; gloo on CPU, and the Trainer's own 30-minute
    # timeout, since the other ranks wait while the main process evaluates a 7B model.
    state = PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(minutes=30))
    config = with_input_defaults(config)  # as each run records them, so finished runs match
    output = Path(config.experiment.output)
    if state.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        save_config(config, output / "config.yaml")
    runs = planned_runs(config.experiment)
    digests = {}
    for index, run in enumerate(runs, start=1):
        folder = output / "runs" / run.name
        train_config, eval_config = run_configs(config, run, folder)
        key = results_key(to_dict(train_config))
        tested = {"method": eval_config.eval.method, "part": eval_config.eval.part}
        if config.eval_data.path:  # cross-dataset: another test set is another result
            tested["eval_data"] = to_dict(eval_config.data)
        digest = digests[run.name] = config_hash(key, tested)
        if _finished_run(folder) == digest:
            log.info(f"[{index}/{len(runs)}] {run.name}: done before (config {digest}), skipped")
            continue
        saved = _saved_config(folder / "train")
        same_config = saved is not None and results_key(saved) == key
        trained = is_finished(folder / "train")
        if not (same_config and trained):
            if not same_config and state.is_main_process:
                # Left by another config: its adapter and checkpoints must not be reused.
                shutil.rmtree(folder / "train", ignore_errors=True)
            state.wait_for_everyone()
            log.info(f"[{index}/{len(runs)}] {run.name}: training")
            train(train_config, resume=same_config)  # an interrupted run resumes
        if state.is_main_process:
            log.info(f"[{index}/{len(runs)}] {run.name}: evaluating")
            evaluate(eval_config)
            (folder / "run.json").write_text(json.dumps({
                **dataclasses.asdict(run), "name": run.name, "model": config.model.name,
                "config_hash": digest, "train_data": source_name(train_config.data),
                "test_data": source_name(eval_config.data),
            }))
        state.wait_for_everyone()
    if state.is_main_process:
        write_results(collect_results(output, digests), output)
        if config.experiment.compare_with:
            with (output / "results.md").open("a", encoding="utf-8") as f:
                f.write(comparison_section(output, Path(config.experiment.compare_with),
                                           list(digests)))
    return output


def _finished_run(folder: Path) -> str | None:
    """The config hash of a run folder whose evaluation finished, else None."""
    done = folder / "run.json"
    return json.loads(done.read_text())["config_hash"] if done.is_file() else None


def _saved_config(folder: Path) -> dict | None:
    path = folder / "config.yaml"
    return yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None


def collect_results(output: Path, digests: dict[str, str]) -> list[dict]:
    """One row per planned run finished with its current config (runs of other configs
    left in the folder are not mixed in), multimodal metrics on the evaluated part."""
    rows = []
    for name, digest in digests.items():
        if _finished_run(output / "runs" / name) != digest:
            continue
        run = json.loads((output / "runs" / name / "run.json").read_text())
        metrics = json.loads((output / "runs" / name / "eval" / "metrics.json").read_text())
        multimodal = metrics["slots"]["multimodal"]
        rows.append({
            "run": run["name"], "model": run["model"], "procedure": run["procedure"],
            "fold": run["fold"], "seed": run["seed"], "config_hash": run["config_hash"],
            "train_data": run.get("train_data"), "test_data": run.get("test_data"),
            "accuracy": multimodal["accuracy"], "weighted_f1": multimodal["weighted_f1"],
            "macro_f1": multimodal["macro_f1"],
            **_interval_columns(multimodal),
        })
    return rows


def _interval_columns(slot: dict) -> dict:
    """The 95 % bootstrap intervals of a slot's metrics as four CSV columns."""
    columns = {}
    for metric in ("accuracy", "weighted_f1"):
        low, high = slot[f"{metric}_ci"]
        columns |= {f"{metric}_ci_low": low, f"{metric}_ci_high": high}
    return columns


def _mean_std(rows: list[dict], metric: str) -> str:
    """Mean ± std over several runs; one run: its value and 95 % bootstrap interval."""
    percent = [100 * row[metric] for row in rows]
    if len(rows) == 1:
        return (f"{percent[0]:.2f} [{100 * rows[0][f'{metric}_ci_low']:.2f}, "
                f"{100 * rows[0][f'{metric}_ci_high']:.2f}]")
    return f"{statistics.mean(percent):.2f} ± {statistics.stdev(percent):.2f}"


def write_results(rows: list[dict], output: Path) -> None:
    with (output / "results.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=RESULT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "| procedure | model | train data | test data | runs | accuracy | weighted F1 "
        "| paper accuracy | paper weighted F1 |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for procedure in dict.fromkeys(row["procedure"] for row in rows):
        group = [row for row in rows if row["procedure"] == procedure]
        title, paper_acc, paper_f1 = PAPER.get(procedure, (procedure, None, None))
        paper = (f"{paper_acc:.2f} | {paper_f1:.2f}" if paper_acc is not None else "– | –")
        models = ", ".join(sorted({row["model"] for row in group}))
        sources = [", ".join(sorted({str(row[k]) for row in group}))
                   for k in ("train_data", "test_data")]
        lines.append(
            f"| {title} | {models} | {sources[0]} | {sources[1]} | {len(group)} | "
            f"{_mean_std(group, 'accuracy')} | {_mean_std(group, 'weighted_f1')} | {paper} |"
        )
    note = ("\nMultimodal label, mean ± std over folds / seeds, in %; a procedure with one "
            "run shows its 95 % bootstrap interval [low, high] instead. Paper: LLaVAC with "
            "LLaVA-1.5-7B (arXiv 2502.02938).\n")
    (output / "results.md").write_text("\n".join(lines) + "\n" + note, encoding="utf-8")


def comparison_section(output: Path, other: Path, names: list[str]) -> str:
    """Markdown: this experiment (A) against ``other`` (B, e.g. the multimodal-only
    ablation), paired on every run both evaluated, multimodal label, B - A in points."""
    title = ["", f"## Paired comparison with `{other}` (B - A, multimodal label)", ""]
    shared = [name for name in names
              if all((folder / "runs" / name / "eval" / "metrics.json").is_file()
                     for folder in (output, other))]
    if not shared:
        return "\n".join(title + ["No run evaluated in both experiments yet."]) + "\n"
    lines = title + ["| run | accuracy A | accuracy B | B - A [95 % CI] | McNemar p "
                     "| weighted F1 B - A [95 % CI] |", "|---|---:|---:|---|---:|---|"]
    for name in shared:
        figures = compare_evaluations(output / "runs" / name / "eval",
                                      other / "runs" / name / "eval")["slots"]["multimodal"]
        lines.append(f"| {name} | {100 * figures['accuracy_a']:.2f} | "
                     f"{100 * figures['accuracy_b']:.2f} | {_diff(figures, 'accuracy')} | "
                     f"{figures['mcnemar_p']:.4g} | {_diff(figures, 'weighted_f1')} |")
    return "\n".join(lines) + "\n"


def _diff(figures: dict, metric: str) -> str:
    low, high = figures[f"{metric}_diff_ci"]
    return f"{100 * figures[f'{metric}_diff']:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}]"
