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
rebuilt on every invocation from the planned runs that finished with the current settings
(:mod:`llavac.studies.results`); each row carries the provenance of its ``metrics.json`` (seeds,
config hash, versions). With an ``eval_data`` section a run is tested on another source
(cross-dataset), and with ``experiment.compare_with`` (another experiment's output folder,
e.g. the multimodal-only ablation) ``results.md`` also holds the paired comparison.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
from accelerate import PartialState

from llavac.args import (
    ClassifierArgs,
    DataArgs,
    EvalArgs,
    EvalConfig,
    ExperimentConfig,
    TrainConfig,
)
from llavac.config import to_dict
from llavac.console import log
from llavac.data.procedures import get_procedure
from llavac.evaluation import evaluate
from llavac.predict import Classifier
from llavac.runs.folder import RunFolder
from llavac.runs.info import results_hash, results_key
from llavac.studies.results import collect_results, comparison_section, finished_hash, write_results
from llavac.studies.techniques import (
    check_study,
    parse_variants,
    techniques_section,
    variant_config,
)
from llavac.train import train
from llavac.train.recipe import with_input_defaults


@dataclass(frozen=True)
class PlannedRun:
    """One training run of an experiment: a procedure, its fold (if it has folds), a seed."""

    procedure: str
    fold: int | None
    seed: int
    variant: str | None = None  # a name of experiment.variants (llavac.studies.techniques)

    @property
    def name(self) -> str:
        fold = f"-fold{self.fold}" if self.fold is not None else ""
        variant = f"-{self.variant}" if self.variant is not None else ""
        return f"{self.procedure}{fold}-seed{self.seed}{variant}"


def planned_runs(config: ExperimentConfig) -> list[PlannedRun]:
    """The runs of the experiment; an unknown procedure (of ``experiment.procedures`` or
    ``eval_data``) is an error here, before anything is written or trained."""
    args = config.experiment
    if config.eval_data.procedure is not None:
        get_procedure(config.eval_data.procedure, "eval_data.procedure")
    return [
        PlannedRun(procedure, fold, seed, variant)
        for procedure in args.procedures
        for fold in (args.folds if get_procedure(procedure, "experiment.procedures").folds > 1
                     else [None])
        for seed in args.seeds
        for variant in (list(parse_variants(args.variants)) or [None])
    ]


def run_configs(config: ExperimentConfig, run: PlannedRun,
                folder: Path) -> tuple[TrainConfig, list[EvalConfig]]:
    """The run's training config and one evaluation config per method."""
    config = variant_config(config, run.variant)
    data = dataclasses.replace(
        config.data, procedure=run.procedure, fold=run.fold,
        split_seed=run.seed if get_procedure(run.procedure).seeded else config.data.split_seed,
    )
    train_config = TrainConfig(
        model=config.model, data=data, lora=config.lora,
        train=dataclasses.replace(config.train, seed=run.seed, output=str(folder / "train")),
    )
    eval_configs = [
        EvalConfig(
            model=ClassifierArgs(adapter=str(folder / "train")), data=eval_data(config, data),
            eval=EvalArgs(output=str(folder / "eval" / method), part=config.experiment.part,
                          method=method, batch_size=config.experiment.batch_size,
                          progress=config.train.progress,
                          reliance_pairs=config.experiment.reliance_pairs),
        )
        for method in config.experiment.methods
    ]
    return train_config, eval_configs


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


def claim_experiment(config: ExperimentConfig, overwrite: bool) -> None:
    """Refuse an experiment folder made with other settings unless ``overwrite`` (which empties
    it); the same settings resume, which is how an interrupted experiment continues. The
    settings are compared as :func:`run_experiment` saves them: input defaults filled in."""
    output = RunFolder(config.experiment.output)
    if not output.has_config:
        return
    if to_dict(output.typed_config(type(config))) == to_dict(with_input_defaults(config)):
        return
    if not overwrite:
        raise ValueError(f"{output.path} holds an experiment with other settings "
                         f"({output.config_path}): choose another experiment.output, or give "
                         "--overwrite to replace it (the same settings resume it)")
    shutil.rmtree(output.path)


def run_experiment(config: ExperimentConfig) -> Path:
    """Make every run not yet done, then write ``results.csv`` and ``results.md``.

    Under ``torchrun`` every rank trains; evaluation and bookkeeping run on the main
    process while the others wait.
    """
    # This process, or this rank of a torchrun launch. Created before the Trainer so the
    # bookkeeping below runs on one rank; gloo on CPU, and the Trainer's own 30-minute
    # timeout, since the other ranks wait while the main process evaluates a 7B model.
    state = PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(minutes=30))
    runs = planned_runs(config)
    config = check_study(with_input_defaults(config))  # as runs record them; fails early
    output = Path(config.experiment.output)
    if state.is_main_process:
        RunFolder(output).write_config(config)
    digests = {}
    for index, run in enumerate(runs, start=1):
        folder = output / "runs" / run.name
        train_config, eval_configs = run_configs(config, run, folder)
        key = results_key(to_dict(train_config))
        tested = {"methods": config.experiment.methods, "part": config.experiment.part}
        if config.eval_data.path:  # cross-dataset: another test set is another result
            tested["eval_data"] = to_dict(eval_configs[0].data)
        digest = digests[run.name] = results_hash(key, tested)
        if finished_hash(folder) == digest:
            log.info(f"[{index}/{len(runs)}] {run.name}: done before (config {digest}), skipped")
            continue
        trained_folder = RunFolder(folder / "train")
        same_config = trained_folder.has_config and results_key(trained_folder.config()) == key
        trained = trained_folder.finished
        if not (same_config and trained):
            if not same_config and state.is_main_process:
                # Left by another config: its adapter and checkpoints must not be reused.
                shutil.rmtree(folder / "train", ignore_errors=True)
            state.wait_for_everyone()
            log.info(f"[{index}/{len(runs)}] {run.name}: training")
            train(train_config, resume=same_config)  # an interrupted run resumes
        if state.is_main_process:
            log.info(f"[{index}/{len(runs)}] {run.name}: evaluating "
                     f"({', '.join(config.experiment.methods)})")
            evaluate_run(eval_configs)
            (folder / "run.json").write_text(json.dumps({
                **dataclasses.asdict(run), "name": run.name,
                "model": train_config.model.name,
                "config_hash": digest, "methods": config.experiment.methods,
                "train_data": source_name(train_config.data),
                "test_data": source_name(eval_configs[0].data),
            }))
        state.wait_for_everyone()
    if state.is_main_process:
        rows = collect_results(output, digests)
        write_results(rows, output)
        with (output / "results.md").open("a", encoding="utf-8") as f:
            f.write(techniques_section(rows, output))
        if config.experiment.compare_with:
            with (output / "results.md").open("a", encoding="utf-8") as f:
                f.write(comparison_section(output, Path(config.experiment.compare_with),
                                           list(digests), config.experiment.methods))
    return output


def evaluate_run(eval_configs: list[EvalConfig]) -> None:
    """Each method's evaluation of one trained run, the model loaded once."""
    classifier = Classifier.from_args(eval_configs[0].model)
    for eval_config in eval_configs:
        evaluate(eval_config, classifier)

