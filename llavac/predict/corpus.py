"""Prediction over a corpus: streamed, written as it goes, resumable, prefetched.

    predict_corpus(PredictConfig) -> CorpusSummary

Two engines run the same job. ``local`` (this module): the input is read a row at a time
(``llavac.data.stream``), images are opened and preprocessed in DataLoader workers
(``loader``), and each finished batch is appended to ``predict.output`` and flushed, in input
order (``outfile``). Memory stays flat whatever the corpus' length; only the ids seen so far
are kept, to catch duplicates and skip done rows. ``ray`` (``ray_job``): the same rows,
batches and outcomes as Ray Data blocks over a cluster, committed block by block into a
folder (``blocks``).

A bad row (missing or unreadable image, missing or non-string text, a repeated id, ...) is
skipped, written with its id and reason to the errors file and counted; ``strict`` makes the
first one fatal. With ``resume`` what an earlier run of the same job finished is skipped,
after a check that its recorded settings are this job's.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from llavac.args import PredictArgs, PredictConfig
from llavac.console import Progress
from llavac.data.stream import count_rows, stream_records
from llavac.models import image_limits
from llavac.predict import outfile
from llavac.predict.classifier import Classifier, job_settings
from llavac.predict.loader import (
    PairStream,
    default_workers,
    held_heap,
    model_threads,
)
from llavac.predict.summary import CorpusSummary, strict_error


def predict_corpus(config: PredictConfig, classifier: Classifier | None = None) -> CorpusSummary:
    """Predict every row of ``config.predict.input`` (see the module docstring) with the
    engine ``predict.engine`` names. ``classifier`` (local engine) skips loading
    ``config.model``."""
    job = config.predict
    if job.input is None:
        raise ValueError("no input: give --input FILE (JSONL, CSV, Parquet or a split folder)")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("predict --input runs as one process, not under torchrun: for several "
                         "GPUs or machines use --engine ray (on one machine, a local Ray "
                         "gives each GPU a model)")
    _check_engine_keys(job)
    if job.engine == "ray":
        # Imported here: Ray loads only for the Ray engine (it adds seconds to start-up).
        from llavac.predict.ray_job import predict_on_ray

        return predict_on_ray(config)
    out = Path(job.output).resolve() if job.output is not None else None
    _check_args(job, out)
    # The first row: a CSV header without an image column fails here, before anything is
    # written or loaded, so the fixed rerun finds no output to refuse.
    next(stream_records(job.input, limit=1), None)
    classifier = classifier or Classifier.from_args(config.model)
    if out is not None:
        _prepare(job, out, job_settings(config, classifier))
    return _run(classifier, job, out)


# Keys that only one engine reads, with their defaults: set for the other, they are an error.
_ENGINE_KEYS = {"ray": {"ray_address": None, "concurrency": None, "out_format": "jsonl"},
                "local": {"num_workers": None}}


def _check_engine_keys(job: PredictArgs) -> None:
    for engine, keys in _ENGINE_KEYS.items():
        for key, default in keys.items():
            if job.engine != engine and getattr(job, key) != default:
                raise ValueError(f"predict.{key}: only with --engine {engine} (predict.engine "
                                 f"is {job.engine})")


def _check_args(job: PredictArgs, out: Path | None) -> None:
    """Refuse to touch an earlier job's output unless told how (before loading any model)."""
    if job.resume and job.overwrite:
        raise ValueError("--resume and --overwrite exclude each other")
    if out is None and (job.resume or job.overwrite):
        raise ValueError("--resume and --overwrite need --output FILE")
    if out is not None and not (job.resume or job.overwrite) and out.exists():
        raise ValueError(f"{out} exists: pass --resume to continue that job or --overwrite "
                         "to replace it")


def _prepare(job: PredictArgs, out: Path, settings: dict) -> None:
    """Clear (overwrite) or check (resume) the earlier output; write the sidecar."""
    meta = outfile.meta_path(out)
    if job.overwrite:
        for path in (out, outfile.errors_path(out), meta):
            path.unlink(missing_ok=True)
    elif job.resume and out.exists():
        outfile.check_settings(meta, settings)
        outfile.repair(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    outfile.write_settings(meta, settings)


class _Sink:
    """Where outcomes go: predictions appended to ``OUT``, problems to the errors file
    (rewritten: a resume meets every skipped row again), or stdout / stderr."""

    def __init__(self, out: Path | None):
        self.out = out.open("a", encoding="utf-8") if out else sys.stdout
        self.errors = outfile.errors_path(out).open("w", encoding="utf-8") if out else None

    def write(self, prediction: str | None, problem: str | None) -> None:
        """A row's line (``CorpusSummary.settle``), where it belongs."""
        if prediction is not None:
            self.out.write(prediction + "\n")
        if problem is not None:
            print(problem, file=self.errors or sys.stderr)

    def flush(self) -> None:
        self.out.flush()
        if self.errors:
            self.errors.flush()

    def close(self) -> None:
        self.flush()
        for stream in (self.out, self.errors):
            if stream not in (None, sys.stdout):
                stream.close()


def _run(classifier: Classifier, job: PredictArgs, out: Path | None) -> CorpusSummary:
    """Every row, outcome by outcome in input order, flushed after every batch."""
    done: frozenset[str] = frozenset()
    if job.resume and out is not None:
        done = frozenset(outfile.done_ids(out))
    limits = image_limits(classifier.processor, job.max_image_pixels, "predict.max_image_pixels")
    stream = PairStream(lambda: stream_records(job.input, job.limit, done), classifier.processor,
                        classifier.fmt, job.batch_size, job.bucket, limits)
    workers = job.num_workers if job.num_workers is not None else default_workers()
    summary = CorpusSummary(out=str(out) if out else None, method=job.method,
                            errors=str(outfile.errors_path(out)) if out else None)
    sink = _Sink(out)
    progress = Progress(count_rows(job.input, job.limit), f"predicting ({job.method})",
                        unit="row", enabled=job.progress, every=job.progress_every)
    start = time.perf_counter()
    try:
        with model_threads(classifier.model, workers), held_heap():
            for ready in classifier.predict_stream(stream, job.method, workers):
                _settle(ready, job, sink, summary)
                summary.elapsed_s = time.perf_counter() - start
                progress.update(len(ready), f"{sum(summary.skipped.values())} skipped")
    finally:
        sink.close()
        progress.close()
    return summary


def _settle(ready: list, job: PredictArgs, sink: _Sink, summary: CorpusSummary) -> None:
    """Write and count a model batch's outcomes, in input order; flush them."""
    for row, outcome in ready:
        prediction, problem = summary.settle(row, outcome, job.min_confidence)
        sink.write(prediction, problem)
        if problem is not None and job.strict:
            raise strict_error(outcome)
    sink.flush()
