"""The command table: every ``llavac`` command declared once.

Each row names the command, its help, its config class, its flags and positionals (each sets
one config key, ``llavac.cli.flags``) and the function it runs (``llavac.cli.commands``). The
parser, ``--help`` and the dispatch are all built from these rows, so a command cannot take a
flag that its config lacks, nor run with a config its parser did not build.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from llavac import args
from llavac.cli import commands
from llavac.cli.flags import (
    CALIBRATE_FLAGS,
    CHECK_FLAGS,
    CHECK_PATH,
    COMPARE_EVALS,
    COMPARE_FLAGS,
    DEMO_FLAGS,
    EVAL_FLAGS,
    EXPERIMENT_FLAGS,
    EXPLAIN_FLAGS,
    EXPORT_FLAGS,
    EXPORT_RUN,
    PREDICT_FLAGS,
    PROMPT_FLAGS,
    REPORT_FOLDER,
    ROBUSTNESS_FLAGS,
    RUN,
    SERVE_FLAGS,
    SPLIT_EXPORT_FLAGS,
    SPLIT_PATH,
    SWEEP_FLAGS,
    TRAIN_FLAGS,
    Flag,
    folder_flags,
)


@dataclass(frozen=True)
class Command:
    """One command: ``name`` (``data export`` for a sub-command), what it does, the config
    class it reads, its flags and positionals, and the function that runs it."""

    name: str
    help: str
    config: type
    run: Callable[[object], int]
    flags: tuple[Flag, ...] = ()
    positionals: tuple[Flag, ...] = ()
    # A preset beneath --config, chosen from the config the command line gives without one
    # (the demo trains a tiny model with the tiny preset); None: the class's defaults.
    preset: Callable[[object], str | None] | None = None


def _demo_preset(config: args.DemoConfig) -> str | None:
    from llavac.models import is_tiny_name

    return "tiny_synthetic" if is_tiny_name(config.demo.model) else None


# Runs before RUN, or RUN alone: robustness takes the run as RUN or as --adapter.
RUN_OR_ADAPTER = Flag("RUN", "model.adapter", "a training run folder (or --adapter)")

COMMANDS = (
    Command("data check", "read everything, report what is wrong", args.CheckConfig,
            commands.data_check, (*CHECK_FLAGS,), (CHECK_PATH,)),
    Command("data export", "write the parts of a split as JSONL", args.SplitExportConfig,
            commands.data_export, (*SPLIT_EXPORT_FLAGS,), (SPLIT_PATH,)),
    Command("train", "LoRA fine-tuning (the paper's recipe by default)", args.TrainConfig,
            commands.train, (*TRAIN_FLAGS, *folder_flags("train", resume=True))),
    Command("predict", "label image + text pairs", args.PredictConfig, commands.predict,
            (*PREDICT_FLAGS,)),
    Command("prompt", "show one example exactly as the model sees it", args.PromptConfig,
            commands.prompt, (*PROMPT_FLAGS,)),
    Command("evaluate", "metrics, predictions and plots on one split part", args.EvalConfig,
            commands.evaluate, (*EVAL_FLAGS,)),
    Command("calibrate", "temperature scaling: fit one temperature per slot on the "
            "validation part (by NLL) and write RUN/calibration.json, which predict, evaluate "
            "and serve apply", args.CalibrateConfig, commands.calibrate, (*CALIBRATE_FLAGS,),
            (RUN,)),
    Command("compare", "paired comparison of two evaluation folders (bootstrap, McNemar)",
            args.CompareConfig, commands.compare, (*COMPARE_FLAGS,), (*COMPARE_EVALS,)),
    Command("experiment", "train + evaluate procedures x folds x seeds; results.csv and the "
            "paper-shaped table", args.ExperimentConfig, commands.experiment,
            (*EXPERIMENT_FLAGS,)),
    Command("robustness", "one trained run under every prompt variant: how much its labels "
            "move", args.RobustnessConfig, commands.robustness, (*ROBUSTNESS_FLAGS,),
            (RUN_OR_ADAPTER,)),
    Command("sweep", "Optuna hyperparameter search on the validation part; same flags and "
            "overrides as train", args.SweepConfig, commands.sweep, (*SWEEP_FLAGS,)),
    Command("report", "rebuild report.html (metrics, reliability, the pairs as pictures) in "
            "an evaluation folder, or in every one below a folder", args.ReportConfig,
            commands.report, (), (REPORT_FOLDER,)),
    Command("explain", "what drove each label of a pair, by occlusion: modality shifts, word "
            "and image-region importances (JSON + heatmap PNGs)", args.ExplainConfig,
            commands.explain, (*EXPLAIN_FLAGS,)),
    Command("demo", "the whole pipeline on a synthetic release; key=value sets training "
            "keys too", args.DemoConfig, commands.demo, (*DEMO_FLAGS,), preset=_demo_preset),
    Command("serve", "HTTP API and web page around one model (API keys, backpressure, "
            "/metrics, draining on SIGTERM)", args.ServeConfig, commands.serve,
            (*SERVE_FLAGS,)),
    Command("export", "a training run as one folder that plain transformers loads: merged "
            "model, processor, model card", args.ExportConfig, commands.export,
            (*EXPORT_FLAGS,), (EXPORT_RUN,)),
)

# Sub-command groups and their help (``llavac data check``).
GROUPS = {"data": "inspect and split MVSA releases or own data"}
