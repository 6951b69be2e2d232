"""The commands: each takes its config, calls one library function and prints the result.

Every function here is named in the command table (``llavac.cli.table``), which builds its
config from ``--config``, flags and ``key=value`` before calling it. Tables go to stdout
through :func:`show` (``-q`` silences them); progress and the ``records:`` / ``wrote`` lines
go to the log.
"""

from __future__ import annotations

import sys
from pathlib import Path

from llavac.args import (
    CalibrateConfig,
    CheckConfig,
    CompareConfig,
    DemoConfig,
    EvalConfig,
    ExperimentConfig,
    ExplainConfig,
    ExportConfig,
    PredictConfig,
    PromptConfig,
    ReportConfig,
    RobustnessConfig,
    ServeConfig,
    SplitExportConfig,
    SweepConfig,
    TrainConfig,
)
from llavac.console import is_main_process, log
from llavac.runs.folder import (
    CALIBRATION_FILE,
    CONFIG_FILE,
    MANIFEST_FILE,
    PEFT_CONFIG_FILE,
    RunFolder,
)


def show(text: str) -> None:
    """A table or summary on stdout, unless ``-q`` asked for warnings and errors only."""
    if log.isEnabledFor(20):  # logging.INFO
        print(text)


def data_check(config: CheckConfig) -> int:
    from llavac.data.check import check_path

    report = check_path(config.check.path)
    if report.error and not config.check.json:
        raise ValueError(report.format_text())  # one error line and exit 2, as any bad input
    print(report.to_json() if config.check.json else report.format_text())
    return report.exit_code


def data_export(config: SplitExportConfig) -> int:
    from llavac.data.export import export_split, format_summary

    data = config.data
    _require_data(data.path)
    split = export_split(data.path, procedure=data.procedure, fold=data.fold,
                         seed=data.split_seed, splits_dir=data.splits_dir,
                         out=config.split.output, strict=data.strict)
    show(format_summary(split.manifest, Path(config.split.output)))
    return 0


def train(config: TrainConfig) -> int:
    from llavac.hub import DEFAULT_MODEL_SIZES, require_reachable

    _require_data(config.data.path)
    if config.model.name in DEFAULT_MODEL_SIZES:
        size = DEFAULT_MODEL_SIZES[config.model.name]
        log.info(f"model: {config.model.name} (the paper's base model; {size} to download "
                 "unless cached; --model names another)")
    require_reachable(config.model.name)
    from llavac.train import train as train_run  # torch, transformers: once the arguments hold

    # train() claims the output folder first: an interrupted or finished run there is
    # refused unless --resume or --overwrite says what to do with it.
    output = train_run(config, resume=config.train.resume, overwrite=config.train.overwrite)
    _report_records(output / MANIFEST_FILE, "train")
    _wrote(output, f"adapter/ or model/, processor/, {CONFIG_FILE}, {MANIFEST_FILE}, log.jsonl, "
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


def evaluate(config: EvalConfig) -> int:
    from llavac.evaluation import evaluate as evaluate_run
    from llavac.evaluation.metrics import hints
    from llavac.runs.info import claimed_output

    _require_data(config.data.path)
    with claimed_output(config.eval.output, "metrics.json", config.eval.overwrite):
        metrics = evaluate_run(config)
    output = Path(config.eval.output)
    show((output / "summary.md").read_text(encoding="utf-8"))
    for hint in hints(metrics):
        log.info(hint)
    _report_records(output / MANIFEST_FILE, metrics["part"], metrics["records"])
    _wrote(output, "metrics.json, predictions.jsonl, summary.md, report.html, "
                   f"confusion_*.png, {CONFIG_FILE}")
    return 0


def report(config: ReportConfig) -> int:
    from llavac.evaluation.html_report import rebuild_reports

    for path in rebuild_reports(config.report.folder):
        log.info(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


def explain(config: ExplainConfig) -> int:
    from llavac.explain.job import EXPLANATIONS, format_explanation, run_explain
    from llavac.runs.info import claimed_output

    job = config.explain
    if job.input is not None and not Path(job.input).exists():
        raise FileNotFoundError(f"--input {job.input}: no such file or folder")
    with claimed_output(job.output, EXPLANATIONS, job.overwrite):
        summary = run_explain(config)
    for pair in summary.explained:
        show(format_explanation(pair, job.top_words))
    skipped = ", ".join(f"{reason} {n}" for reason, n in sorted(summary.skipped.items()))
    log.info(f"explained {len(summary.explained)}, skipped "
             f"{sum(summary.skipped.values())}" + (f" ({skipped})" if skipped else ""))
    _wrote(Path(job.output), f"{EXPLANATIONS}, heatmaps/<id>_<slot>.png")
    return 0


def predict(config: PredictConfig) -> int:
    from llavac.data import open_rgb
    from llavac.models import image_limits
    from llavac.predict import Classifier, write_predictions
    from llavac.predict.corpus import predict_corpus

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
    if job.output is not None:
        write_predictions([prediction], job.output)
    else:
        print(prediction.to_json())
    if prediction.unparseable:
        print("unparseable answer", file=sys.stderr)
    return 0


def calibrate(config: CalibrateConfig) -> int:
    from llavac.evaluation.calibrate import calibrate as fit_temperatures

    _require_data(config.data.path)
    result = fit_temperatures(config)
    fitted = result["fitted_on"]
    _wrote(Path(config.model.adapter) / CALIBRATION_FILE,
           f"fitted on {fitted['n']} {fitted['part']} pairs")
    show("\n".join(f"  {slot}: T = {temperature:.4f}, validation NLL "
                    f"{result['nll_before'][slot]:.4f} -> {result['nll_after'][slot]:.4f}"
                    for slot, temperature in result["temperatures"].items()))
    return 0


def compare(config: CompareConfig) -> int:
    import json

    from llavac.evaluation.compare import compare_evaluations, format_comparison

    result = compare_evaluations(config.compare.eval_a, config.compare.eval_b)
    print(json.dumps(result, indent=2) if config.compare.json else format_comparison(result))
    return 0


def prompt(config: PromptConfig) -> int:
    from llavac.predict.view import collapsed_ids, view_prompt

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


def experiment(config: ExperimentConfig) -> int:
    from llavac.studies.experiment import claim_experiment, run_experiment

    _require_data(config.data.path)  # before the experiment's folder and config.yaml exist
    if is_main_process():  # under torchrun: one rank checks the folder and reports
        claim_experiment(config, config.experiment.overwrite)
    output = run_experiment(config)
    if is_main_process():
        show((output / "results.md").read_text(encoding="utf-8"))
        _wrote(output, "results.csv, results.md, runs/<run>/train and eval")
    return 0


def robustness(config: RobustnessConfig) -> int:
    from llavac.studies.robustness import robustness as run_robustness

    _require_data(config.data.path)
    result = run_robustness(config)
    output = Path(config.robustness.output)
    show((output / "robustness.md").read_text(encoding="utf-8"))
    _report_records(output / MANIFEST_FILE, result["part"], result["records"])
    _wrote(output, f"robustness.json, robustness.md, robustness.png, {CONFIG_FILE}")
    return 0


def sweep(config: SweepConfig) -> int:
    from llavac.studies.sweep import run_sweep

    _require_data(config.data.path)
    study = run_sweep(config)
    output = Path(config.sweep.output)
    show(f"{len(study.trials)} trials in {output}; best value {study.best_value:.4f} "
         f"(trial {study.best_trial.number}): {output / 'best.yaml'}")
    _wrote(output, f"study.db, trials/, trials.csv, best.yaml, history.png, {CONFIG_FILE}")
    return 0


def demo(config: DemoConfig) -> int:
    from llavac.runs.info import claimed_output
    from llavac.studies.demo import check_procedure, run_demo

    if config.demo.data is not None:
        _require_data(config.demo.data)
    check_procedure(config)
    with claimed_output(config.demo.output, "eval/metrics.json", config.demo.overwrite):
        summary = run_demo(config)
    show(summary)
    return 0


def serve(config: ServeConfig) -> int:
    import logging

    from llavac.serve import serve as run_server

    if not config.model.name and not config.model.adapter:
        raise ValueError("give --model (a model, or a folder llavac export wrote), or --adapter "
                         "with a training run folder")
    if config.model.adapter is not None:
        _require_adapter(config.model.adapter)  # before the port opens, not once it has
    logging.basicConfig(level=config.serve.log_level.upper(),
                        format="%(levelname)s %(name)s: %(message)s")
    run_server(config)
    return 0


def _require_adapter(path: str) -> None:
    folder = RunFolder(path)
    if not folder.path.is_dir():
        raise FileNotFoundError(f"--adapter {path}: no such folder")
    if not (folder.has_config or folder.is_bare_adapter):
        raise FileNotFoundError(f"--adapter {path}: neither a training run folder "
                                f"({CONFIG_FILE}) nor a peft adapter ({PEFT_CONFIG_FILE})")


def export(config: ExportConfig) -> int:
    from llavac.runs.export import export_run

    job = config.export
    _wrote(export_run(job.run, job.output, overwrite=job.overwrite),
           "merged model, processor, model card")
    return 0
