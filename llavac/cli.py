"""The ``llavac`` command line: parses arguments and calls the library, nothing more.

Every subcommand is a thin shell over one library function, so the library is used from
Python exactly as from the shell.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _data_check(args: argparse.Namespace) -> int:
    from llavac.data.check import check_path

    report = check_path(args.path)
    print(report.to_json() if args.json else report.format_text())
    return report.exit_code


def _data_export(args: argparse.Namespace) -> int:
    from llavac.data.export import export_split

    export_split(
        args.path,
        procedure=args.procedure,
        fold=args.fold,
        seed=args.seed,
        splits_dir=args.splits,
        out=args.out,
        strict=args.strict,
    )
    return 0


def _overrides(args: argparse.Namespace, flags: dict) -> list[str]:
    """The flags that were given, as ``key=value`` overrides; explicit overrides come last
    and so win."""
    return [f"{key}={value}" for key, value in flags.items() if value is not None] + args.overrides


def _train(args: argparse.Namespace) -> int:
    from llavac.config import load_config
    from llavac.train import TrainConfig, train

    overrides = _overrides(args, {
        "model.name": args.model, "data.path": args.data, "data.procedure": args.procedure,
        "data.fold": args.fold, "train.output": args.output, "train.max_steps": args.max_steps,
        "train.save_steps": args.save_steps, "train.seed": args.seed,
    })
    config = load_config(TrainConfig, args.config, overrides)
    output = train(config, resume=args.resume)
    print(f"trained: {output}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from llavac.predict import predict_command

    return predict_command(model=args.model, adapter=args.adapter, image=args.image,
                           text=args.text, input=args.input, method=args.method,
                           batch_size=args.batch_size, out=args.out, prompt=args.prompt)


def _evaluate(args: argparse.Namespace) -> int:
    from llavac.config import load_config
    from llavac.evaluate import EvalConfig, evaluate

    overrides = _overrides(args, {
        "model": args.model, "adapter": args.adapter, "data.path": args.data,
        "data.procedure": args.procedure, "data.fold": args.fold, "output": args.output,
        "method": args.method, "batch_size": args.batch_size, "part": args.part,
    })
    config = load_config(EvalConfig, args.config, overrides)
    evaluate(config)
    print((Path(config.output) / "summary.md").read_text(encoding="utf-8"))
    return 0


def _experiment(args: argparse.Namespace) -> int:
    from llavac.config import load_config
    from llavac.experiment import ExperimentConfig, run_experiment

    run_experiment(load_config(ExperimentConfig, args.config, args.overrides))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from llavac.demo import run_demo

    run_demo(args.output, args.data, args.model, args.procedure, args.overrides)
    return 0


def _add_data_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="exported split folder, release folder, or own-data file")
    parser.add_argument("--procedure",
                        help="with a release folder: cheema10 | random811 | clmlf | qmf")
    parser.add_argument("--fold", type=int, help="cheema10 fold, 1..10")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llavac", description="LLaVAC: a vision-language model as a multimodal sentiment "
        "classifier (text, image and multimodal labels).")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="inspect and split MVSA releases or own data")
    data_commands = data.add_subparsers(dest="data_command", required=True)

    check = data_commands.add_parser("check", help="read everything, report what is wrong")
    check.add_argument("path", type=Path, help="MVSA release folder or own-data JSONL / CSV")
    check.add_argument("--json", action="store_true", help="one JSON object instead of text")
    check.set_defaults(run=_data_check)

    export = data_commands.add_parser("export", help="write train / validation / test JSONL")
    export.add_argument("path", type=Path, help="MVSA release folder or own-data JSONL / CSV")
    export.add_argument("--procedure", required=True,
                        help="cheema10 | random811 | clmlf | qmf | none (own data as one test set)")
    export.add_argument("--fold", type=int, default=None, help="cheema10 fold, 1..10")
    export.add_argument("--seed", type=int, default=0, help="random811 split seed")
    export.add_argument("--splits", type=Path, default=None,
                        help="read the original published split files from DIR")
    export.add_argument("--out", type=Path, required=True)
    export.add_argument("--strict", action="store_true", help="a bad record is fatal")
    export.set_defaults(run=_data_export)

    fit = commands.add_parser("train", help="LoRA fine-tuning (the paper's recipe by default)")
    fit.add_argument("--config", help="a YAML file or a preset name from llavac/configs")
    fit.add_argument("--model", help="hub id, local path or tiny-* name")
    _add_data_flags(fit)
    fit.add_argument("--output", help="output folder")
    fit.add_argument("--max-steps", type=int, help="stop after N optimizer steps")
    fit.add_argument("--save-steps", type=int, help="checkpoint every N steps")
    fit.add_argument("--seed", type=int, help="training seed")
    fit.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    fit.add_argument("overrides", nargs="*", metavar="key=value",
                     help="config overrides, e.g. train.lr=1e-4 lora.r=64")
    fit.set_defaults(run=_train)

    predict = commands.add_parser("predict", help="label image + text pairs")
    predict.add_argument("--model", help="base model (optional with a training-run --adapter)")
    predict.add_argument("--adapter", help="a training-run folder or a peft adapter")
    predict.add_argument("--image", help="one image ...")
    predict.add_argument("--text", help="... and its text")
    predict.add_argument("--input", help="or an own-data JSONL / CSV file or exported split")
    predict.add_argument("--method", default="score", choices=["score", "generate"],
                         help="score the label candidates (default) or generate and parse")
    predict.add_argument("--batch-size", type=int, default=16)
    predict.add_argument("--prompt", help="prompt variant (default: the run's, else full)")
    predict.add_argument("--out", help="write JSONL here instead of stdout")
    predict.set_defaults(run=_predict)

    evaluation = commands.add_parser("evaluate", help="metrics, predictions and plots")
    evaluation.add_argument("--config", help="a YAML file of llavac.evaluate.EvalConfig")
    evaluation.add_argument("--model", help="base model; zero-shot without --adapter")
    evaluation.add_argument("--adapter", help="a training-run folder or a peft adapter")
    _add_data_flags(evaluation)
    evaluation.add_argument("--part", help="train | validation | test (default test)")
    evaluation.add_argument("--method", choices=["score", "generate"])
    evaluation.add_argument("--batch-size", type=int)
    evaluation.add_argument("--output", help="output folder")
    evaluation.add_argument("overrides", nargs="*", metavar="key=value")
    evaluation.set_defaults(run=_evaluate)

    experiment = commands.add_parser("experiment", help="train + evaluate procedures x folds "
                                     "x seeds; results.csv and the paper-shaped table")
    experiment.add_argument("--config", required=True, help="a YAML file or preset name")
    experiment.add_argument("overrides", nargs="*", metavar="key=value")
    experiment.set_defaults(run=_experiment)

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
