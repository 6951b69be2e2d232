"""The ``llavac`` command line: parses arguments, calls the library, prints what it returns.

Every command that runs a model takes ``--config`` (a YAML file or a preset name), its flags
and ``section.key=value`` overrides, in that order of precedence. Each command's flags are one
table below that maps a flag to its config key, so nothing is mapped twice and ``--help``
names the key of every flag. The library functions take config objects and return results;
printing stays here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llavac.args import (
    CalibrateConfig,
    EvalConfig,
    ExperimentConfig,
    ExplainConfig,
    PredictConfig,
    PromptConfig,
    RobustnessConfig,
    ServeConfig,
    SweepConfig,
    TrainConfig,
)
from llavac.cli import commands
from llavac.cli.flags import (
    CALIBRATE_FLAGS,
    EVAL_FLAGS,
    EXPLAIN_FLAGS,
    PREDICT_FLAGS,
    PROMPT_FLAGS,
    ROBUSTNESS_FLAGS,
    SERVE_FLAGS,
    SWEEP_FLAGS,
    TRAIN_FLAGS,
)
from llavac.config import Flag, add_config_arguments
from llavac.console import default_threads
from llavac.data.procedures import list_procedures


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``llavac: error: ...`` and exit 2, as for bad values."""

    def error(self, message: str):
        self.exit(2, f"llavac: error: {message} (see {self.prog} --help)\n")


def _common() -> argparse.ArgumentParser:
    """Options every command takes."""
    common = Parser(add_help=False)
    group = common.add_argument_group("output and machine")
    group.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    group.add_argument("-v", "--verbose", action="store_true",
                       help="also the libraries' own messages")
    group.add_argument("--threads", type=int, default=None,
                       help=f"torch CPU threads [default: {default_threads()}, all cores but "
                       "one, leaving one for data loading]")
    return common


def _command(subparsers, name: str, help: str, run, **kwargs) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=help, description=help, parents=[_common()],
                                 **kwargs)
    parser.set_defaults(run=run)
    return parser


def _config_command(subparsers, name: str, help: str, cls, flags: list[Flag], run):
    parser = _command(subparsers, name, help, run)
    add_config_arguments(parser, cls, flags)
    return parser


def _overwrite(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a finished result in the output folder")


def _add_data_commands(subparsers) -> None:
    data = subparsers.add_parser("data", help="inspect and split MVSA releases or own data")
    data_commands = data.add_subparsers(dest="data_command", required=True,
                                        parser_class=Parser)

    check = _command(data_commands, "check", "read everything, report what is wrong",
                     commands.data_check_command)
    check.add_argument("path", type=Path, help="MVSA release folder or own-data JSONL / CSV")
    check.add_argument("--json", action="store_true", help="one JSON object instead of text")

    export = _command(data_commands, "export", "write the parts of a split as JSONL",
                      commands.data_export_command)
    export.add_argument("path", type=Path, help="MVSA release folder or own-data JSONL / CSV")
    export.add_argument("--procedure", required=True, type=str.lower,
                        choices=list_procedures(),
                        help="how to split; none: own data as one part named all")
    export.add_argument("--fold", type=int, default=None, help="cheema10 fold, 1..10")
    export.add_argument("--split-seed", "--seed", dest="split_seed", type=int, default=0,
                        help="random811 shuffle seed [default: 0] (--seed is its deprecated "
                        "name)")
    export.add_argument("--splits", type=Path, default=None, metavar="DIR",
                        help="read the original published split files from DIR [default: "
                        "the id lists shipped in llavac/data/splitfiles]")
    export.add_argument("--out", type=Path, required=True, help="output folder")
    export.add_argument("--strict", action="store_true",
                        help="a bad record is fatal [default: skipped and counted]")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="llavac", description="LLaVAC: a vision-language model as a multimodal sentiment "
        "classifier (text, image and multimodal labels).")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    _add_data_commands(subparsers)
    _add_model_commands(subparsers)
    _add_demo_and_serving_commands(subparsers)
    return parser


def _add_model_commands(subparsers) -> None:
    """Training, prediction and evaluation: the commands that run a model on data."""
    fit = _config_command(subparsers, "train", "LoRA fine-tuning (the paper's recipe by default)",
                          TrainConfig, TRAIN_FLAGS, commands.train_command)
    fit.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    _overwrite(fit)
    _config_command(subparsers, "predict", "label image + text pairs", PredictConfig,
                    PREDICT_FLAGS, commands.predict_command)
    _config_command(subparsers, "prompt", "show one example exactly as the model sees it",
                    PromptConfig, PROMPT_FLAGS, commands.prompt_command)
    _overwrite(_config_command(subparsers, "evaluate", "metrics, predictions and plots on one "
                               "split part", EvalConfig, EVAL_FLAGS, commands.evaluate_command))
    calibrate = _config_command(
        subparsers, "calibrate", "temperature scaling: fit one temperature per slot on the "
        "validation part (by NLL) and write RUN/calibration.json, which predict, evaluate and "
        "serve apply", CalibrateConfig, CALIBRATE_FLAGS, commands.calibrate_command)
    calibrate.usage = "llavac calibrate RUN [options] [key=value ...]  (RUN: a training run)"
    compare = _command(subparsers, "compare", "paired comparison of two evaluation folders "
                       "(bootstrap, McNemar)", commands.compare_command)
    compare.add_argument("eval_a", type=Path, metavar="EVAL_A", help="an evaluate output folder")
    compare.add_argument("eval_b", type=Path, metavar="EVAL_B", help="another, same test ids")
    compare.add_argument("--json", action="store_true", help="one JSON object instead of text")
    _overwrite(_config_command(subparsers, "experiment", "train + evaluate procedures x folds x "
                               "seeds; results.csv and the paper-shaped table",
                               ExperimentConfig, [], commands.experiment_command))
    robust = _config_command(
        subparsers, "robustness", "one trained run under every prompt variant: how much its "
        "labels move (llavac robustness RUN --data D --output O)", RobustnessConfig,
        ROBUSTNESS_FLAGS, commands.robustness_command)
    robust.usage = "llavac robustness RUN [--data D] [--output O] [flags] [key=value ...]"
    _config_command(subparsers, "sweep", "Optuna hyperparameter search on the validation "
                    "part; same flags and overrides as train", SweepConfig, SWEEP_FLAGS,
                    commands.sweep_command)
    _add_explanation_commands(subparsers)


def _add_explanation_commands(subparsers) -> None:
    """Looking at the errors and at what drove the labels."""
    report = _command(subparsers, "report", "rebuild report.html (metrics, reliability, the "
                      "pairs as pictures) in an evaluation folder, or in every one below a "
                      "folder", commands.report_command)
    report.add_argument("folder", type=Path, metavar="RUN_OR_EVAL_DIR",
                        help="an evaluate output folder, or a demo / experiment folder")
    _overwrite(_config_command(
        subparsers, "explain", "what drove each label of a pair, by occlusion: modality "
        "shifts, word and image-region importances (JSON + heatmap PNGs)", ExplainConfig,
        EXPLAIN_FLAGS, commands.explain_command))


def _add_demo_and_serving_commands(subparsers) -> None:
    demo = _command(subparsers, "demo", "the whole pipeline on a synthetic release",
                    commands.demo_command)
    demo.add_argument("--output", default="runs/demo", help="output folder [default: "
                      "runs/demo]")
    demo.add_argument("--data", help="a real release folder instead of the synthetic one")
    demo.add_argument("--model", default="tiny-llava", help="base model [default: tiny-llava]")
    demo.add_argument("--procedure", default="random811", type=str.lower,
                      help="cheema10 | random811 | clmlf | qmf | none [default: random811]")
    _overwrite(demo)
    demo.add_argument("overrides", nargs="*", metavar="key=value",
                      help="training config overrides")

    _config_command(subparsers, "serve", "HTTP API and web page around one model (API keys, "
                    "backpressure, /metrics, draining on SIGTERM)", ServeConfig, SERVE_FLAGS,
                    commands.serve_command)
    export = _command(subparsers, "export", "a training run as one folder that plain "
                      "transformers loads: merged model, processor, model card",
                      commands.export_command)
    export.add_argument("run_folder", type=Path, metavar="RUN", help="a training run folder")
    export.add_argument("--output", type=Path, required=True, help="the folder to write")
    export.add_argument("--overwrite", action="store_true",
                        help="replace an earlier export in --output (nothing else)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse fills the key=value positionals from one run of arguments only: overrides
    # after options (``calibrate RUN --data D key=value``) come back here, and belong to them
    # (as does the RUN of calibrate and robustness, which share the positionals).
    if extra:
        if not hasattr(args, "overrides") or any(item.startswith("-") for item in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    try:
        if args.threads is not None and args.threads < 1:
            raise ValueError(f"--threads: expected a number >= 1, got {args.threads}")
        from llavac.console import configure

        configure(args.quiet, args.verbose, args.threads)
        return args.run(args)
    except (FileNotFoundError, ValueError) as error:
        # Bad input is the user's to fix: one clear line, no traceback.
        print(f"llavac: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("llavac: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
