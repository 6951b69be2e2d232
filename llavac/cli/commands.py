"""The commands: each builds its config, calls one library function and prints the result."""

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
from llavac.config import config_from_args
from llavac.console import is_main_process, log


def data_check_command(args: argparse.Namespace) -> int:
    from llavac.data.check import check_path

    report = check_path(args.path)
    print(report.to_json() if args.json else report.format_text())
    return report.exit_code


def data_export_command(args: argparse.Namespace) -> int:
    from llavac.data.export import export_split

    export_split(args.path, procedure=args.procedure.lower(), fold=args.fold,
                 seed=args.split_seed, splits_dir=args.splits, out=args.out, strict=args.strict)
    return 0


def train_command(args: argparse.Namespace) -> int:
    from llavac.hub import DEFAULT_MODEL_SIZES, require_reachable

    config = config_from_args(TrainConfig, args, TRAIN_FLAGS)
    _require_data(config.data.path)
    if config.model.name in DEFAULT_MODEL_SIZES:
        size = DEFAULT_MODEL_SIZES[config.model.name]
        log.info(f"model: {config.model.name} (the paper's base model; {size} to download "
                 "unless cached; --model names another)")
    require_reachable(config.model.name)
    from llavac.train import train  # torch and transformers: only once the arguments hold

    # train() claims the output folder first: an interrupted or finished run there is
    # refused unless --resume or --overwrite says what to do with it.
    output = train(config, resume=args.resume, overwrite=args.overwrite)
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


def _report_records(manifest_path: Path, part: str, used: int | None = None) -> None:
    """The one line on records used and skipped, from a run's or evaluation's manifest
    (``used``: the count, where the manifest does not hold it)."""
    import json

    from llavac.data.records import usage_line

    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    used = manifest.get("train_records") if used is None else used
    log.info(usage_line(manifest["data"], used, part))


def _wrote(folder: Path, what: str) -> None:
    log.info(f"wrote {folder}: {what}")


def evaluate_command(args: argparse.Namespace) -> int:
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
    _report_records(output / "manifest.json", metrics["part"], metrics["records"])
    _wrote(output, "metrics.json, predictions.jsonl, summary.md, report.html, "
                   "confusion_*.png, config.yaml")
    return 0


def report_command(args: argparse.Namespace) -> int:
    from llavac.evaluation.html_report import rebuild_reports

    for path in rebuild_reports(args.folder):
        log.info(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


def explain_command(args: argparse.Namespace) -> int:
    from llavac.explain.job import EXPLANATIONS, format_explanation, run_explain
    from llavac.runinfo import claim_output

    config = config_from_args(ExplainConfig, args, EXPLAIN_FLAGS)
    job = config.explain
    if job.input is not None and not Path(job.input).exists():
        raise FileNotFoundError(f"--input {job.input}: no such file or folder")
    claim_output(job.output, EXPLANATIONS, args.overwrite)
    summary = run_explain(config)
    for pair in summary.explained:
        print(format_explanation(pair, job.top_words))
    skipped = ", ".join(f"{reason} {n}" for reason, n in sorted(summary.skipped.items()))
    log.info(f"explained {len(summary.explained)}, skipped "
             f"{sum(summary.skipped.values())}" + (f" ({skipped})" if skipped else ""))
    _wrote(Path(job.output), f"{EXPLANATIONS}, heatmaps/<id>_<slot>.png")
    return 0


def predict_command(args: argparse.Namespace) -> int:
    from llavac.data import open_rgb
    from llavac.models import image_limits
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
        log.info(summary.line())
        if summary.wrote() is not None:
            log.info(summary.wrote())
        return 0
    classifier = Classifier.from_args(config.model)
    limits = image_limits(classifier.processor, job.max_image_pixels, "predict.max_image_pixels")
    prediction = classifier.classify([(open_rgb(job.image, limits), job.text)], job.method,
                                     min_confidence=job.min_confidence)[0]
    prediction.id = Path(job.image).name
    if job.out is not None:
        write_predictions([prediction], job.out)
    else:
        print(prediction.to_json())
    if prediction.unparseable:
        print("unparseable answer", file=sys.stderr)
    return 0


def calibrate_command(args: argparse.Namespace) -> int:
    from llavac.evaluation.calibrate import calibrate
    from llavac.runs.folder import CALIBRATION_FILE

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
    print(f"wrote {Path(runs[0]) / CALIBRATION_FILE} (fitted on {fitted['n']} "
          f"{fitted['part']} pairs)")
    for slot, temperature in result["temperatures"].items():
        print(f"  {slot}: T = {temperature:.4f}, validation NLL "
              f"{result['nll_before'][slot]:.4f} -> {result['nll_after'][slot]:.4f}")
    return 0


def compare_command(args: argparse.Namespace) -> int:
    import json

    from llavac.evaluation.compare import compare_evaluations, format_comparison

    result = compare_evaluations(args.eval_a, args.eval_b)
    print(json.dumps(result, indent=2) if args.json else format_comparison(result))
    return 0


def prompt_command(args: argparse.Namespace) -> int:
    from llavac.predict.view import collapsed_ids, view_prompt

    config = config_from_args(PromptConfig, args, PROMPT_FLAGS)
    view = view_prompt(config)
    print(f"model:   {view.model} ({view.family}), prompt {view.prompt}")
    print(f"inputs:  image_mode={view.image_mode}, system={view.system}, "
          f"images by {view.image_processor}")
    print(f"tokens:  {view.tokens} ({view.image_tokens} image)")
    if view.image is not None:
        print(f"image:   {_image_line(view.image)}")
    print("-" * 72 + f"\n{view.text}\n" + "-" * 72)
    if config.prompt.ids:
        print(f"ids:     {collapsed_ids(view.ids)}")
    if view.trained is not None:
        print(f"trained: {len(view.trained)} tokens {view.trained}")
        if config.prompt.ids:
            print(f"         ids {view.trained_ids}")
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


def experiment_command(args: argparse.Namespace) -> int:
    from llavac.experiment import claim_experiment, run_experiment

    config = config_from_args(ExperimentConfig, args, [])
    if is_main_process():  # under torchrun: one rank checks the folder and reports
        claim_experiment(config, args.overwrite)
    output = run_experiment(config)
    if is_main_process():
        print((output / "results.md").read_text(encoding="utf-8"))
        _wrote(output, "results.csv, results.md, runs/<run>/train and eval")
    return 0


def robustness_command(args: argparse.Namespace) -> int:
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


def sweep_command(args: argparse.Namespace) -> int:
    from llavac.sweep import run_sweep

    config = config_from_args(SweepConfig, args, SWEEP_FLAGS)
    study = run_sweep(config)
    print(f"{len(study.trials)} trials in {config.sweep.output}; best value "
          f"{study.best_value:.4f} (trial {study.best_trial.number}): "
          f"{Path(config.sweep.output) / 'best.yaml'}")
    return 0


def demo_command(args: argparse.Namespace) -> int:
    from llavac.demo import run_demo
    from llavac.runinfo import claim_output

    claim_output(args.output, "eval/metrics.json", args.overwrite)
    run_demo(args.output, args.data, args.model, args.procedure, args.overrides)
    return 0


def serve_command(args: argparse.Namespace) -> int:
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


def export_command(args: argparse.Namespace) -> int:
    from llavac.export import export_run

    print(f"exported: {export_run(args.run_folder, args.output, overwrite=args.overwrite)}")
    return 0


