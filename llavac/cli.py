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

from llavac.args import EvalConfig, ExperimentConfig, PredictConfig, TrainConfig
from llavac.config import Flag, add_config_arguments, config_from_args

# -- flag tables: one per command, flag -> config key ------------------------------------------

DATA_FLAGS = [
    Flag("--data", "data.path", "exported split folder, MVSA release folder, or own-data file"),
    Flag("--procedure", "data.procedure",
         "with a release folder: cheema10 | random811 | clmlf | qmf | none"),
    Flag("--fold", "data.fold", "cheema10 fold, 1..10"),
    Flag("--split-seed", "data.split_seed", "random811 shuffle seed"),
]
CLASSIFIER_FLAGS = [
    Flag("--model", "model.name", "base model: hub id, local folder or tiny-* name"),
    Flag("--adapter", "model.adapter", "a training run folder or a peft adapter"),
    Flag("--prompt", "model.prompt", "prompt variant: full | multimodal-only | a slot order"),
    Flag("--dtype", "model.dtype", "float32 | bf16 | fp16 | auto"),
    Flag("--device", "model.device", "cpu | cuda | cuda:0 ..."),
]
TRAIN_FLAGS = [
    Flag("--model", "model.name", "hub id, local path or tiny-* name"),
    *DATA_FLAGS,
    Flag("--output", "train.output", "output folder"),
    Flag("--method", "train.method", "lora | full"),
    Flag("--max-steps", "train.max_steps", "stop after N optimizer steps"),
    Flag("--save-steps", "train.save_steps", "checkpoint every N steps"),
    Flag("--seed", "train.seed", "training seed (data order, dropout, LoRA init)"),
]
EVAL_FLAGS = [
    *CLASSIFIER_FLAGS,
    *DATA_FLAGS,
    Flag("--part", "eval.part", "train | validation | test | all"),
    Flag("--method", "eval.method", "score | generate"),
    Flag("--batch-size", "eval.batch_size", "pairs per model call"),
    Flag("--output", "eval.output", "output folder"),
]
PREDICT_FLAGS = [
    *CLASSIFIER_FLAGS,
    Flag("--image", "predict.image", "one image ..."),
    Flag("--text", "predict.text", "... and its text"),
    Flag("--input", "predict.input", "or a JSONL / CSV / Parquet file or exported split"),
    Flag("--out", "predict.out", "write JSONL here instead of stdout"),
    Flag("--method", "predict.method", "score | generate"),
    Flag("--batch-size", "predict.batch_size", "pairs per model call"),
    Flag("--resume", "predict.resume", "continue the job in --out: skip the ids it holds"),
    Flag("--overwrite", "predict.overwrite", "replace an existing --out"),
    Flag("--strict", "predict.strict", "the first bad row is fatal (default: skip, report)"),
    Flag("--num-workers", "predict.num_workers", "DataLoader workers opening the images"),
    Flag("--limit", "predict.limit", "only the first N input rows"),
]


# -- commands ------------------------------------------------------------------------------------


def _data_check(args: argparse.Namespace) -> int:
    from llavac.data.check import check_path

    report = check_path(args.path)
    print(report.to_json() if args.json else report.format_text())
    return report.exit_code


def _data_export(args: argparse.Namespace) -> int:
    from llavac.data.export import export_split

    export_split(args.path, procedure=args.procedure.lower(), fold=args.fold,
                 seed=args.split_seed, splits_dir=args.splits, out=args.out, strict=args.strict)
    return 0


def _train(args: argparse.Namespace) -> int:
    from llavac.train import train

    config = config_from_args(TrainConfig, args, TRAIN_FLAGS)
    print(f"trained: {train(config, resume=args.resume)}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from llavac.evaluation import evaluate

    config = config_from_args(EvalConfig, args, EVAL_FLAGS)
    evaluate(config)
    print((Path(config.eval.output) / "summary.md").read_text(encoding="utf-8"))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from llavac.data import open_rgb
    from llavac.predict import Classifier, write_predictions
    from llavac.predict.corpus import predict_corpus

    config = config_from_args(PredictConfig, args, PREDICT_FLAGS)
    job = config.predict
    if (job.input is None) == (job.image is None or job.text is None):
        raise ValueError("give either --image and --text, or --input FILE")
    if job.input is not None:
        summary = predict_corpus(config)
        if summary.out is not None:
            print(f"wrote {summary.out} (skipped rows: {summary.errors})", file=sys.stderr)
        print(summary.line(), file=sys.stderr)
        if job.method == "generate":
            print(f"unparseable answers: {summary.unparseable} of {summary.predicted}",
                  file=sys.stderr)
        return 0
    prediction = Classifier.from_args(config.model).classify(
        [(open_rgb(job.image), job.text)], job.method)[0]
    prediction.id = Path(job.image).name
    if job.out is not None:
        write_predictions([prediction], job.out)
    else:
        print(prediction.to_json())
    if prediction.unparseable:
        print("unparseable answer", file=sys.stderr)
    return 0


def _experiment(args: argparse.Namespace) -> int:
    from llavac.experiment import run_experiment

    run_experiment(config_from_args(ExperimentConfig, args, []))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from llavac.demo import run_demo

    run_demo(args.output, args.data, args.model, args.procedure, args.overrides)
    return 0


# -- the parser ----------------------------------------------------------------------------------


def _config_command(commands, name: str, help: str, cls, flags: list[Flag], run):
    parser = commands.add_parser(name, help=help, description=help)
    add_config_arguments(parser, cls, flags)
    parser.set_defaults(run=run)
    return parser


def _add_data_commands(commands) -> None:
    data = commands.add_parser("data", help="inspect and split MVSA releases or own data")
    data_commands = data.add_subparsers(dest="data_command", required=True)

    check = data_commands.add_parser("check", help="read everything, report what is wrong")
    check.add_argument("path", type=Path, help="MVSA release folder or own-data JSONL / CSV")
    check.add_argument("--json", action="store_true", help="one JSON object instead of text")
    check.set_defaults(run=_data_check)

    export = data_commands.add_parser("export", help="write train / validation / test JSONL")
    export.add_argument("path", type=Path, help="MVSA release folder or own-data JSONL / CSV")
    export.add_argument("--procedure", required=True,
                        help="cheema10 | random811 | clmlf | qmf | none (own data, one part)")
    export.add_argument("--fold", type=int, default=None, help="cheema10 fold, 1..10")
    export.add_argument("--split-seed", "--seed", dest="split_seed", type=int, default=0,
                        help="random811 shuffle seed (--seed is its deprecated name)")
    export.add_argument("--splits", type=Path, default=None,
                        help="read the original published split files from DIR")
    export.add_argument("--out", type=Path, required=True)
    export.add_argument("--strict", action="store_true", help="a bad record is fatal")
    export.set_defaults(run=_data_export)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llavac", description="LLaVAC: a vision-language model as a multimodal sentiment "
        "classifier (text, image and multimodal labels).")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_data_commands(commands)

    fit = _config_command(commands, "train", "LoRA fine-tuning (the paper's recipe by default)",
                          TrainConfig, TRAIN_FLAGS, _train)
    fit.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    _config_command(commands, "predict", "label image + text pairs", PredictConfig,
                    PREDICT_FLAGS, _predict)
    _config_command(commands, "evaluate", "metrics, predictions and plots on one split part",
                    EvalConfig, EVAL_FLAGS, _evaluate)
    _config_command(commands, "experiment", "train + evaluate procedures x folds x seeds; "
                    "results.csv and the paper-shaped table", ExperimentConfig, [], _experiment)

    demo = commands.add_parser("demo", help="the whole pipeline on a synthetic release")
    demo.add_argument("--output", default="runs/demo")
    demo.add_argument("--data", help="a real release folder instead of the synthetic one")
    demo.add_argument("--model", default="tiny-llava")
    demo.add_argument("--procedure", default="random811")
    demo.add_argument("overrides", nargs="*", metavar="key=value",
                      help="training config overrides")
    demo.set_defaults(run=_demo)

    from llavac.serve.__main__ import add_arguments, run  # argparse only: no model code

    serve = commands.add_parser("serve", help="HTTP API and web page around one model")
    add_arguments(serve)
    serve.set_defaults(run=run)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (FileNotFoundError, ValueError) as error:
        # Bad input is the user's to fix: one clear line, no traceback.
        print(f"llavac: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
