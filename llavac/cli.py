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
    PredictConfig,
    PromptConfig,
    RobustnessConfig,
    ServeConfig,
    SweepConfig,
    TrainConfig,
)
from llavac.config import Flag, add_config_arguments, config_from_args
from llavac.console import default_threads, log

# -- flag tables: one per command, flag -> config key ------------------------------------------

DATA_FLAGS = [
    Flag("--data", "data.path", "exported split folder, MVSA release folder, or own-data file"),
    Flag("--procedure", "data.procedure",
         "with a release folder: cheema10 | random811 | clmlf | qmf | none"),
    Flag("--fold", "data.fold", "cheema10 fold, 1..10"),
    Flag("--split-seed", "data.split_seed", "random811 shuffle seed"),
    Flag("--strict", "data.strict", "a bad record is fatal instead of skipped and counted"),
]
CLASSIFIER_FLAGS = [
    Flag("--model", "model.name", "base model: hub id, local folder or tiny-* name"),
    Flag("--adapter", "model.adapter", "a training run folder or a peft adapter"),
    Flag("--prompt", "model.prompt", "prompt variant: full | multimodal-only | a slot order"),
    Flag("--dtype", "model.dtype", "float32 | bf16 | fp16 | auto"),
    Flag("--device", "model.device", "cpu | cuda | cuda:0 ..."),
    Flag("--image-mode", "model.image_mode",
         "pad | crop | processor; unset: the run's, else the family's"),
    Flag("--system", "model.system",
         "llava_v1 | none | a system sentence; unset: the run's, else the family's"),
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
    Flag("--allow-overlap", "eval.allow_overlap",
         "report a run on records it trained on (refused otherwise)"),
]
PREDICT_FLAGS = [
    *CLASSIFIER_FLAGS,
    Flag("--image", "predict.image", "one image ..."),
    Flag("--text", "predict.text", "... and its text"),
    Flag("--input", "predict.input", "or a JSONL / CSV / Parquet file or exported split"),
    Flag("--out", "predict.out", "write JSONL here instead of stdout"),
    Flag("--method", "predict.method", "score | generate"),
    Flag("--batch-size", "predict.batch_size", "pairs per model call"),
    Flag("--min-confidence", "predict.min_confidence",
         "label a slot 'uncertain' when its top probability is below P"),
    Flag("--resume", "predict.resume", "continue the job in --out: skip the ids it holds"),
    Flag("--overwrite", "predict.overwrite", "replace an existing --out"),
    Flag("--strict", "predict.strict", "the first bad row is fatal (default: skip, report)"),
    Flag("--num-workers", "predict.num_workers", "DataLoader workers opening the images"),
    Flag("--limit", "predict.limit", "only the first N input rows"),
]
CALIBRATE_FLAGS = [
    Flag("--model", "model.name", "base model (default: the one the run names)"),
    Flag("--dtype", "model.dtype", "float32 | bf16 | fp16 | auto"),
    Flag("--device", "model.device", "cpu | cuda | cuda:0 ..."),
    *DATA_FLAGS,
    Flag("--batch-size", "calibrate.batch_size", "pairs per model call"),
]
SERVE_FLAGS = [
    *CLASSIFIER_FLAGS,
    Flag("--method", "serve.method", "score | generate"),
    Flag("--host", "serve.host", "address to bind; beyond loopback an API key is required"),
    Flag("--port", "serve.port", "TCP port"),
    Flag("--api-key", "serve.api_key", "required as 'Authorization: Bearer KEY' (several: "
         "comma-separated; also read from LLAVAC_API_KEY)"),
    Flag("--api-key-file", "serve.api_key_file", "keys, one per line"),
    Flag("--insecure-no-auth", "serve.insecure_no_auth", "allow a non-loopback host without "
         "any key"),
    Flag("--max-queue", "serve.max_queue", "waiting examples; past it: 503 + Retry-After"),
    Flag("--rate-limit", "serve.rate_limit", "requests per second per key; past it: 429"),
    Flag("--shutdown-timeout", "serve.shutdown_timeout", "seconds SIGTERM waits for accepted "
         "requests"),
    Flag("--max-body-mb", "serve.max_body_mb", "largest request body"),
    Flag("--max-text-chars", "serve.max_text_chars", "longest text"),
    Flag("--max-batch-items", "serve.max_batch_items", "longest /v1/classify/batch list"),
    Flag("--max-image-pixels", "serve.max_image_pixels", "largest decoded image"),
    Flag("--max-batch-size", "serve.max_batch_size", "most examples in one model call"),
    Flag("--max-wait-ms", "serve.max_wait_ms", "how long the queue waits to fill a batch"),
    Flag("--log-level", "serve.log_level", "critical | error | warning | info | debug"),
]

PROMPT_FLAGS = [
    *[flag for flag in CLASSIFIER_FLAGS if flag.key not in ("model.dtype", "model.device")],
    Flag("--text", "prompt.text", "the text of the example"),
    Flag("--image", "prompt.image", "its image (else a blank square stands in)"),
    Flag("--answer", "prompt.answer", "an answer, e.g. 'positive, neutral, positive': "
         "shows the tokens training puts the loss on"),
]

ROBUSTNESS_FLAGS = [
    *CLASSIFIER_FLAGS,
    *DATA_FLAGS,
    Flag("--variants", "robustness.variants", "prompt variants YAML (default: the shipped set)"),
    Flag("--part", "robustness.part", "train | validation | test | all"),
    Flag("--method", "robustness.method", "score | generate"),
    Flag("--batch-size", "robustness.batch_size", "pairs per model call"),
    Flag("--output", "robustness.output", "output folder"),
]
SWEEP_FLAGS = [
    *(flag for flag in TRAIN_FLAGS if flag.key != "train.output"),  # each trial has its own
    Flag("--output", "sweep.output", "output folder (study.db, trials/, best.yaml)"),
    Flag("--trials", "sweep.trials", "finished trials the study should hold in all"),
    Flag("--storage", "sweep.storage", "Optuna storage URL shared by several machines"),
    Flag("--space", "sweep.space", "search-space YAML (default: the shipped one)"),
    Flag("--metric", "sweep.metric", "validation multimodal accuracy | weighted_f1"),
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
    from llavac.hub import DEFAULT_MODEL_SIZES, require_reachable
    from llavac.runinfo import claim_output

    config = config_from_args(TrainConfig, args, TRAIN_FLAGS)
    _require_data(config.data.path)
    claim_output(config.train.output, "manifest.json", args.overwrite, resume=args.resume)
    if config.model.name in DEFAULT_MODEL_SIZES:
        size = DEFAULT_MODEL_SIZES[config.model.name]
        log.info(f"model: {config.model.name} (the paper's base model; {size} to download "
                 "unless cached; --model names another)")
    require_reachable(config.model.name)
    from llavac.train import train  # torch and transformers: only once the arguments hold

    output = train(config, resume=args.resume)
    _report_records(output / "manifest.json", "train")
    _wrote(output, "adapter/ or model/, processor/, config.yaml, manifest.json, log.jsonl, "
                   "loss.png, checkpoints/")
    return 0


def _require_data(path: str | None) -> None:
    if path is None:
        raise ValueError("--data: no data given (an exported split folder, an MVSA release "
                         "folder or an own-data file)")
    if not Path(path).exists():
        raise FileNotFoundError(f"--data {path}: no such file or folder")


def _report_records(manifest_path: Path, part: str) -> None:
    """The one line on records used and skipped, from a run's or evaluation's manifest."""
    import json

    from llavac.data.records import usage_line

    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    used = manifest.get("train_records") or manifest.get("records")
    log.info(usage_line(manifest["data"], used, part))


def _wrote(folder: Path, what: str) -> None:
    log.info(f"wrote {folder}: {what}")


def _evaluate(args: argparse.Namespace) -> int:
    from llavac.evaluation import evaluate
    from llavac.evaluation.metrics import hints
    from llavac.runinfo import claim_output

    config = config_from_args(EvalConfig, args, EVAL_FLAGS)
    _require_data(config.data.path)
    claim_output(config.eval.output, "metrics.json", args.overwrite)
    metrics = evaluate(config)
    output = Path(config.eval.output)
    print((output / "summary.md").read_text(encoding="utf-8"))
    for hint in hints(metrics):
        log.info(hint)
    _report_records(output / "manifest.json", metrics["part"])
    _wrote(output, "metrics.json, predictions.jsonl, summary.md, confusion_*.png, config.yaml")
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
        if not Path(job.input).exists():
            raise FileNotFoundError(f"--input {job.input}: no such file or folder")
        summary = predict_corpus(config)
        if summary.out is not None:
            log.info(f"wrote {summary.out} (skipped rows: {summary.errors})")
        log.info(summary.line())
        if job.method == "generate":
            log.info(f"unparseable answers: {summary.unparseable} of {summary.predicted}")
        return 0
    prediction = Classifier.from_args(config.model).classify(
        [(open_rgb(job.image), job.text)], job.method, min_confidence=job.min_confidence)[0]
    prediction.id = Path(job.image).name
    if job.out is not None:
        write_predictions([prediction], job.out)
    else:
        print(prediction.to_json())
    if prediction.unparseable:
        print("unparseable answer", file=sys.stderr)
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from llavac.evaluation.calibrate import calibrate

    # RUN shares the positionals with the key=value overrides, so that it may stand before
    # or after the options (argparse cannot split two positionals around options).
    runs = [item for item in args.overrides if "=" not in item]
    if len(runs) != 1:
        raise ValueError(f"calibrate: name one training run folder (RUN), got {runs}")
    args.overrides = [item for item in args.overrides if "=" in item]
    config = config_from_args(CalibrateConfig, args, CALIBRATE_FLAGS)
    config.model.adapter = runs[0]
    result = calibrate(config)
    fitted = result["fitted_on"]
    print(f"wrote {Path(runs[0]) / 'calibration.json'} (fitted on {fitted['n']} "
          f"{fitted['part']} pairs)")
    for slot, temperature in result["temperatures"].items():
        print(f"  {slot}: T = {temperature:.4f}, validation NLL "
              f"{result['nll_before'][slot]:.4f} -> {result['nll_after'][slot]:.4f}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    import json

    from llavac.evaluation.compare import compare_evaluations, format_comparison

    result = compare_evaluations(args.eval_a, args.eval_b)
    print(json.dumps(result, indent=2) if args.json else format_comparison(result))
    return 0


def _prompt(args: argparse.Namespace) -> int:
    from llavac.predict.view import view_prompt

    view = view_prompt(config_from_args(PromptConfig, args, PROMPT_FLAGS))
    print(f"model:   {view.model} ({view.family}), prompt {view.prompt}")
    print(f"inputs:  image_mode={view.image_mode}, system={view.system}")
    print(f"tokens:  {view.tokens} ({view.image_tokens} image)")
    if view.image is not None:
        print(f"image:   {_image_line(view.image)}")
    print("-" * 72 + f"\n{view.text}\n" + "-" * 72)
    if view.trained is not None:
        print(f"trained: {len(view.trained)} tokens {view.trained}")
        print(f"         = {view.trained_text!r}; every other token is label -100")
    return 0


def _image_line(facts: dict) -> str:
    """``640x360 -> padded to 640x640 (left 0, top 140, ...; fill 122,116,104) -> 336x336``."""
    width, height = facts["size"]
    line = f"{width}x{height}"
    if facts["padding"] is not None:
        left, top, right, bottom = facts["padding"]
        side = width + left + right
        fill = ",".join(map(str, facts["fill"]))
        line += (f" -> padded to {side}x{side} (left {left}, top {top}, right {right}, "
                 f"bottom {bottom}; fill {fill})")
    pixels = "x".join(map(str, facts["pixels"]))
    return f"{line} -> {pixels} pixels ({facts['image_mode']})"


def _experiment(args: argparse.Namespace) -> int:
    from llavac.experiment import claim_experiment, run_experiment

    config = config_from_args(ExperimentConfig, args, [])
    claim_experiment(config, args.overwrite)
    output = run_experiment(config)
    print((output / "results.md").read_text(encoding="utf-8"))
    _wrote(output, "results.csv, results.md, runs/<run>/train and eval")
    return 0


def _robustness(args: argparse.Namespace) -> int:
    from llavac.robustness import robustness

    # RUN is the one positional without "=" (argparse cannot put a positional before the
    # key=value overrides once flags come between them).
    runs = [item for item in args.overrides if "=" not in item]
    if len(runs) > 1 or (runs and args.adapter):
        raise ValueError(f"give one training run folder (RUN or --adapter), got {runs}")
    args.adapter = runs[0] if runs else args.adapter
    args.overrides = [item for item in args.overrides if "=" in item]
    config = config_from_args(RobustnessConfig, args, ROBUSTNESS_FLAGS)
    robustness(config)
    print((Path(config.robustness.output) / "robustness.md").read_text(encoding="utf-8"))
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from llavac.sweep import run_sweep

    config = config_from_args(SweepConfig, args, SWEEP_FLAGS)
    study = run_sweep(config)
    print(f"{len(study.trials)} trials in {config.sweep.output}; best value "
          f"{study.best_value:.4f} (trial {study.best_trial.number}): "
          f"{Path(config.sweep.output) / 'best.yaml'}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from llavac.demo import run_demo
    from llavac.runinfo import claim_output

    claim_output(args.output, "eval/metrics.json", args.overwrite)
    run_demo(args.output, args.data, args.model, args.procedure, args.overrides)
    return 0


def _serve(args: argparse.Namespace) -> int:
    import logging

    from llavac.serve import serve

    config = config_from_args(ServeConfig, args, SERVE_FLAGS)
    if not config.model.name and not config.model.adapter:
        raise ValueError("give --model (a model, or a folder llavac export wrote), or --adapter "
                         "with a training run folder")
    logging.basicConfig(level=config.serve.log_level.upper(),
                        format="%(levelname)s %(name)s: %(message)s")
    serve(config)
    return 0


def _export(args: argparse.Namespace) -> int:
    from llavac.export import export_run

    print(f"exported: {export_run(args.run_folder, args.output, overwrite=args.overwrite)}")
    return 0


# -- the parser ----------------------------------------------------------------------------------


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


def _command(commands, name: str, help: str, run, **kwargs) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, help=help, description=help, parents=[_common()],
                                 **kwargs)
    parser.set_defaults(run=run)
    return parser


def _config_command(commands, name: str, help: str, cls, flags: list[Flag], run):
    parser = _command(commands, name, help, run)
    add_config_arguments(parser, cls, flags)
    return parser


def _overwrite(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a finished result in the output folder")


def _add_data_commands(commands) -> None:
    data = commands.add_parser("data", help="inspect and split MVSA releases or own data")
    data_commands = data.add_subparsers(dest="data_command", required=True,
                                        parser_class=Parser)

    check = _command(data_commands, "check", "read everything, report what is wrong",
                     _data_check)
    check.add_argument("path", type=Path, help="MVSA release folder or own-data JSONL / CSV")
    check.add_argument("--json", action="store_true", help="one JSON object instead of text")

    export = _command(data_commands, "export", "write the parts of a split as JSONL",
                      _data_export)
    export.add_argument("path", type=Path, help="MVSA release folder or own-data JSONL / CSV")
    export.add_argument("--procedure", required=True, type=str.lower,
                        choices=["cheema10", "random811", "clmlf", "qmf", "none"],
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
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    _add_data_commands(commands)

    fit = _config_command(commands, "train", "LoRA fine-tuning (the paper's recipe by default)",
                          TrainConfig, TRAIN_FLAGS, _train)
    fit.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    _overwrite(fit)
    _config_command(commands, "predict", "label image + text pairs", PredictConfig,
                    PREDICT_FLAGS, _predict)
    _config_command(commands, "prompt", "show one example exactly as the model sees it",
                    PromptConfig, PROMPT_FLAGS, _prompt)
    _overwrite(_config_command(commands, "evaluate", "metrics, predictions and plots on one "
                               "split part", EvalConfig, EVAL_FLAGS, _evaluate))
    calibrate = _config_command(
        commands, "calibrate", "temperature scaling: fit one temperature per slot on the "
        "validation part (by NLL) and write RUN/calibration.json, which predict, evaluate and "
        "serve apply", CalibrateConfig, CALIBRATE_FLAGS, _calibrate)
    calibrate.usage = "llavac calibrate RUN [options] [key=value ...]  (RUN: a training run)"
    compare = _command(commands, "compare", "paired comparison of two evaluation folders "
                       "(bootstrap, McNemar)", _compare)
    compare.add_argument("eval_a", type=Path, metavar="EVAL_A", help="an evaluate output folder")
    compare.add_argument("eval_b", type=Path, metavar="EVAL_B", help="another, same test ids")
    compare.add_argument("--json", action="store_true", help="one JSON object instead of text")
    _overwrite(_config_command(commands, "experiment", "train + evaluate procedures x folds x "
                               "seeds; results.csv and the paper-shaped table",
                               ExperimentConfig, [], _experiment))
    robust = _config_command(
        commands, "robustness", "one trained run under every prompt variant: how much its "
        "labels move (llavac robustness RUN --data D --output O)", RobustnessConfig,
        ROBUSTNESS_FLAGS, _robustness)
    robust.usage = "llavac robustness RUN [--data D] [--output O] [flags] [key=value ...]"
    _config_command(commands, "sweep", "Optuna hyperparameter search on the validation part; "
                    "same flags and overrides as train", SweepConfig, SWEEP_FLAGS, _sweep)

    demo = _command(commands, "demo", "the whole pipeline on a synthetic release", _demo)
    demo.add_argument("--output", default="runs/demo", help="output folder [default: "
                      "runs/demo]")
    demo.add_argument("--data", help="a real release folder instead of the synthetic one")
    demo.add_argument("--model", default="tiny-llava", help="base model [default: tiny-llava]")
    demo.add_argument("--procedure", default="random811", type=str.lower,
                      help="cheema10 | random811 | clmlf | qmf | none [default: random811]")
    _overwrite(demo)
    demo.add_argument("overrides", nargs="*", metavar="key=value",
                      help="training config overrides")

    _config_command(commands, "serve", "HTTP API and web page around one model (API keys, "
                    "backpressure, /metrics, draining on SIGTERM)", ServeConfig, SERVE_FLAGS,
                    _serve)
    export = _command(commands, "export", "a training run as one folder that plain "
                      "transformers loads: merged model, processor, model card", _export)
    export.add_argument("run_folder", type=Path, metavar="RUN", help="a training run folder")
    export.add_argument("--output", type=Path, required=True, help="the folder to write")
    export.add_argument("--overwrite", action="store_true", help="replace a non-empty --output")

    return parser


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
