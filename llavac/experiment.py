"""Experiments: train + evaluate over procedures x folds x seeds, and the paper-shaped table.

    llavac experiment --config llavac_p1_cheema10 data.path=/path/to/MVSA_Single

Each run lives in ``<output>/runs/<procedure>[-fold<k>]-seed<s>/`` with its ``train/`` folder,
one ``eval/<method>/`` folder per method of ``experiment.methods`` (the paper's ``generate``
+ strict parser, and ``score``) and, once evaluated, a ``run.json`` holding the hash of the
settings that decide its results (llavac's version included). A run whose ``run.json``
matches is skipped; a run interrupted during training resumes from its last complete
checkpoint; a run folder left by other settings is trained afresh. So the same command can be
repeated until everything is done. ``results.csv`` (one row per run and method) and
``results.md`` (mean ± std per procedure and method beside the paper's numbers) are
rebuilt on every invocation from the planned runs that finished with the current settings;
each row carries the provenance of its ``metrics.json`` (seeds, config hash, versions).
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
    EvalArgs,
    EvalConfig,
    ExperimentArgs,
    ExperimentConfig,
    TrainConfig,
)
from llavac.config import save_config, to_dict
from llavac.evaluation import evaluate
from llavac.predict import Classifier
from llavac.runinfo import RESULT_LIBRARIES, results_hash, results_key
from llavac.train import train
from llavac.train.recipe import is_finished

# LLaVAC (arXiv 2502.02938), MVSA-Single, multimodal label: accuracy / weighted F1 in %.
PAPER = {
    "cheema10": ("P1: Cheema et al. 10 folds", 76.24, 76.36),
    "random811": ("P2: random 8:1:1 after the Xu & Mao rule", 77.05, 76.76),
    "clmlf": ("P2: the public CLMLF 8:1:1 split", 77.05, 76.76),
    "qmf": ("P3: the QMF split", 85.36, 85.06),
}
# One row per run and method: the multimodal label's scores and the result's provenance.
RESULT_COLUMNS = ("run", "method", "accuracy", "weighted_f1", "macro_f1", "unparseable",
                  "records", "procedure", "fold", "part", "train_seed", "split_seed",
                  "config_hash", "model", "adapter", "prompt", "llavac_version", "git_commit",
                  *(f"{name}_version" for name in RESULT_LIBRARIES))


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
                folder: Path) -> tuple[TrainConfig, list[EvalConfig]]:
    """The run's training config and one evaluation config per method."""
    data = dataclasses.replace(
        config.data, procedure=run.procedure, fold=run.fold,
        split_seed=run.seed if run.procedure == "random811" else config.data.split_seed,
    )
    train_config = TrainConfig(
        model=config.model, data=data, lora=config.lora,
        train=dataclasses.replace(config.train, seed=run.seed, output=str(folder / "train")),
    )
    eval_configs = [
        EvalConfig(
            model=ClassifierArgs(adapter=str(folder / "train")), data=data,
            eval=EvalArgs(output=str(folder / "eval" / method), part=config.experiment.part,
                          method=method, batch_size=config.experiment.batch_size,
                          progress=config.train.progress),
        )
        for method in config.experiment.methods
    ]
    return train_config, eval_configs


def run_experiment(config: ExperimentConfig) -> Path:
    """Make every run not yet done, then write ``results.csv`` and ``results.md``.

    Under ``torchrun`` every rank trains; evaluation and bookkeeping run on the main
    process while the others wait.
    """
    # This process, or this rank of a torchrun launch. Created before the Trainer so the
    # bookkeeping below runs on one rank; gloo on CPU, and the Trainer's own 30-minute
    # timeout, since the other ranks wait while the main process evaluates a 7B model.
    state = PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(minutes=30))
    output = Path(config.experiment.output)
    if state.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        save_config(config, output / "config.yaml")
    runs = planned_runs(config.experiment)
    digests = {}
    for index, run in enumerate(runs, start=1):
        folder = output / "runs" / run.name
        train_config, eval_configs = run_configs(config, run, folder)
        key = results_key(to_dict(train_config))
        digest = digests[run.name] = results_hash(key, {"methods": config.experiment.methods,
                                                        "part": config.experiment.part})
        if _finished_run(folder) == digest:
            print(f"[{index}/{len(runs)}] {run.name}: done before (config {digest}), skipped")
            continue
        saved = _saved_config(folder / "train")
        same_config = saved is not None and results_key(saved) == key
        trained = is_finished(folder / "train")
        if not (same_config and trained):
            if not same_config and state.is_main_process:
                # Left by another config: its adapter and checkpoints must not be reused.
                shutil.rmtree(folder / "train", ignore_errors=True)
            state.wait_for_everyone()
            print(f"[{index}/{len(runs)}] {run.name}: training")
            train(train_config, resume=same_config)  # an interrupted run resumes
        if state.is_main_process:
            print(f"[{index}/{len(runs)}] {run.name}: evaluating "
                  f"({', '.join(config.experiment.methods)})")
            evaluate_run(eval_configs)
            (folder / "run.json").write_text(json.dumps({
                **dataclasses.asdict(run), "name": run.name, "model": config.model.name,
                "config_hash": digest, "methods": config.experiment.methods,
            }))
        state.wait_for_everyone()
    if state.is_main_process:
        write_results(collect_results(output, digests), output)
        print((output / "results.md").read_text(encoding="utf-8"))
    return output


def evaluate_run(eval_configs: list[EvalConfig]) -> None:
    """Each method's evaluation of one trained run, the model loaded once."""
    classifier = Classifier.from_args(eval_configs[0].model)
    for eval_config in eval_configs:
        evaluate(eval_config, classifier)


def _finished_run(folder: Path) -> str | None:
    """The config hash of a run folder whose evaluation finished, else None."""
    done = folder / "run.json"
    return json.loads(done.read_text())["config_hash"] if done.is_file() else None


def _saved_config(folder: Path) -> dict | None:
    path = folder / "config.yaml"
    return yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None


def collect_results(output: Path, digests: dict[str, str]) -> list[dict]:
    """One row per planned run finished with its current config (runs of other configs
    left in the folder are not mixed in) and method: multimodal metrics on the evaluated
    part and the provenance its ``metrics.json`` names."""
    rows = []
    for name, digest in digests.items():
        folder = output / "runs" / name
        if _finished_run(folder) != digest:
            continue
        for method in json.loads((folder / "run.json").read_text())["methods"]:
            metrics = json.loads((folder / "eval" / method / "metrics.json").read_text())
            rows.append(result_row(name, metrics))
    return rows


def result_row(run: str, metrics: dict) -> dict:
    """A ``results.csv`` row: the run, its multimodal scores and their provenance."""
    multimodal = metrics["slots"]["multimodal"]
    row = {"run": run, **metrics["provenance"], "unparseable": metrics["unparseable"],
           "records": metrics["records"]}
    row.update({k: multimodal[k] for k in ("accuracy", "weighted_f1", "macro_f1")})
    return {column: row.get(column) for column in RESULT_COLUMNS}


def _mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    percent = [100 * v for v in values]
    std = statistics.stdev(percent) if len(percent) > 1 else 0.0
    return f"{statistics.mean(percent):.2f} ± {std:.2f}"


def _method_cells(group: list[dict], method: str, unparseable: bool) -> list[str]:
    """Accuracy and weighted F1 of ``method`` over a procedure's runs (+ unparseable count)."""
    rows = [row for row in group if row["method"] == method]
    cells = [_mean_std([r["accuracy"] for r in rows]), _mean_std([r["weighted_f1"] for r in rows])]
    if unparseable:
        cells.append(f"{sum(r['unparseable'] for r in rows)} / {sum(r['records'] for r in rows)}"
                     if rows else "–")
    return cells


def write_results(rows: list[dict], output: Path) -> None:
    with (output / "results.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=RESULT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "| procedure | model | runs | generate accuracy | generate weighted F1 | unparseable "
        "| paper accuracy | paper weighted F1 | score accuracy | score weighted F1 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for procedure in dict.fromkeys(row["procedure"] for row in rows):
        group = [row for row in rows if row["procedure"] == procedure]
        title, paper_acc, paper_f1 = PAPER.get(procedure, (procedure, None, None))
        paper = [f"{paper_acc:.2f}", f"{paper_f1:.2f}"] if paper_acc is not None else ["–"] * 2
        prompts = sorted({row["prompt"] for row in group})
        if prompts != ["full"]:  # the paper's numbers are for the full prompt
            title, paper = f"{title}, {' / '.join(prompts)} prompt", ["–"] * 2
        models = ", ".join(sorted({row["model"] for row in group}))
        runs = len({row["run"] for row in group})
        cells = [title, models, str(runs), *_method_cells(group, "generate", True), *paper,
                 *_method_cells(group, "score", False)]
        lines.append("| " + " | ".join(cells) + " |")
    note = ("\nMultimodal label, mean ± std over folds / seeds, in %. `generate`: the paper's "
            "way (generate, then the strict parser; an unparseable answer counts as wrong), set "
            "beside the paper's numbers. `score`: the label candidates' probabilities (never "
            "unparseable). Paper: LLaVAC with LLaVA-1.5-7B (arXiv 2502.02938).\n")
    (output / "results.md").write_text("\n".join(lines) + "\n" + note, encoding="utf-8")
