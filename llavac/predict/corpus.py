"""Prediction over a corpus: streamed, written as it goes, resumable, prefetched, sharded.

    predict_corpus(PredictConfig) -> CorpusSummary

The input is read a row at a time (``llavac.data.stream``), images are opened and
preprocessed in DataLoader workers (``loader``), and each finished batch is appended to
``predict.out`` and flushed, in input order (``outfile``). Memory stays flat whatever the
corpus' length; only the ids seen so far are kept, to catch duplicates and skip done rows.

A bad row (missing or unreadable image, missing or non-string text, a repeated id, ...) is
skipped, written with its id and reason to ``OUT.errors.jsonl`` and counted; ``strict`` makes
the first one fatal. With ``resume`` the ids already in ``OUT`` are skipped, after a check
that ``OUT.meta.json`` names the same job. Under ``torchrun`` each rank predicts rows
``rank, rank + world, ...`` into ``OUT.part-RANK`` and the main process merges the parts.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from llavac.args import ClassifierArgs, PredictArgs, PredictConfig
from llavac.console import Progress
from llavac.data.records import Problem
from llavac.data.stream import count_rows, stream_records
from llavac.predict import outfile
from llavac.predict.classifier import Classifier, Prediction
from llavac.predict.loader import DONE, PairStream, release_memory
from llavac.predict.shards import Shard, default_workers


@dataclass
class CorpusSummary:
    """What a corpus job did (summed over shards)."""

    predicted: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # by reason
    already_done: int = 0  # rows an earlier run predicted (resume)
    unparseable: int = 0  # generated answers that do not parse (method generate)
    elapsed_s: float = 0.0
    out: str | None = None
    errors: str | None = None

    @property
    def pairs_per_s(self) -> float:
        return self.predicted / self.elapsed_s if self.elapsed_s else 0.0

    def line(self) -> str:
        """The one summary line the command prints."""
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(self.skipped.items()))
        skipped = sum(self.skipped.values())
        parts = [f"predicted {self.predicted}",
                 f"skipped {skipped}" + (f" ({reasons})" if reasons else ""),
                 f"already done {self.already_done}"]
        if self.unparseable:
            parts.append(f"unparseable {self.unparseable}")
        parts += [f"{self.elapsed_s:.1f} s", f"{self.pairs_per_s:.1f} pairs/s"]
        return ", ".join(parts)

    @classmethod
    def total(cls, shards: list[CorpusSummary]) -> CorpusSummary:
        skipped: Counter = Counter()
        for shard in shards:
            skipped.update(shard.skipped)
        first = shards[0]
        return cls(sum(s.predicted for s in shards), dict(skipped),
                   sum(s.already_done for s in shards), sum(s.unparseable for s in shards),
                   max(s.elapsed_s for s in shards), first.out, first.errors)


def job_settings(classifier: Classifier, job: PredictArgs, shard: Shard) -> dict:
    """What decides the labels of a job, as the classifier resolved it (the sidecar)."""
    source = classifier.source
    adapter = source.get("adapter")
    return {
        "model": source.get("model") or source.get("name_or_path"),
        "adapter": str(Path(adapter).resolve()) if adapter else None,
        "seed": source.get("seed"),
        "dtype": source.get("dtype"),
        "prompt": source["prompt"],
        "method": job.method,
        "input": str(Path(job.input).resolve()),
        "world_size": shard.world,
    }


@dataclass(frozen=True)
class _Files:
    out: Path | None  # None: predictions to stdout, problems to stderr
    target: Path | None  # out, or this rank's part of it
    errors: Path | None

    @classmethod
    def of(cls, job: PredictArgs, shard: Shard) -> _Files:
        if job.out is None:
            if job.resume or job.overwrite or shard.sharded:
                raise ValueError("--resume, --overwrite and sharded runs need --out FILE")
            return cls(None, None, None)
        out = Path(job.out).resolve()
        if not shard.sharded:
            return cls(out, out, outfile.errors_path(out))
        return cls(out, outfile.part_path(out, shard.rank),
                   outfile.part_path(outfile.errors_path(out), shard.rank))

    def existing(self) -> list[Path]:
        """Predictions an earlier job left: ``OUT`` and shard parts."""
        return [p for p in (self.out, *outfile.parts(self.out)) if p.exists()]


def _check_args(job: PredictArgs, files: _Files) -> None:
    """Refuse to touch an earlier job's output unless told how (before loading any model)."""
    if job.resume and job.overwrite:
        raise ValueError("--resume and --overwrite exclude each other")
    if files.out is not None and not (job.resume or job.overwrite) and files.existing():
        raise ValueError(f"{files.out} exists: pass --resume to continue that job or "
                         "--overwrite to replace it")


def _prepare(job: PredictArgs, files: _Files, settings: dict) -> None:
    """Main process: clear (overwrite) or check (resume) the earlier output; write the sidecar."""
    meta = outfile.meta_path(files.out)
    errors = outfile.errors_path(files.out)
    if job.overwrite:
        for path in [*files.existing(), *outfile.parts(errors), errors, meta]:
            path.unlink(missing_ok=True)
    elif job.resume and files.existing():
        outfile.check_settings(meta, settings)
        outfile.repair(files.out)
    files.out.parent.mkdir(parents=True, exist_ok=True)
    outfile.write_settings(meta, settings)


def _device(args: ClassifierArgs, shard: Shard) -> ClassifierArgs:
    """Each local rank on its own GPU (``cuda`` or nothing means ``cuda:LOCAL_RANK``)."""
    if shard.sharded and torch.cuda.is_available() and args.device in (None, "cuda"):
        return dataclasses.replace(args, device=f"cuda:{shard.local_rank}")
    return args


def predict_corpus(config: PredictConfig, classifier: Classifier | None = None) -> CorpusSummary:
    """Predict every row of ``config.predict.input`` (see the module docstring); the summary
    counts the whole job over all shards. ``classifier`` skips loading ``config.model``."""
    job = config.predict
    if job.input is None:
        raise ValueError("no input: give --input FILE (JSONL, CSV, Parquet or a split folder)")
    shard = Shard.from_env()
    files = _Files.of(job, shard)
    _check_args(job, files)
    shard.start()
    try:
        classifier = classifier or Classifier.from_args(_device(config.model, shard))
        settings = job_settings(classifier, job, shard)
        error = None
        if shard.main and files.out is not None:
            try:
                _prepare(job, files, settings)
            except (ValueError, FileNotFoundError) as problem:
                error = str(problem)
        error = shard.from_main(error)  # every rank stops when the main one refuses
        if error is not None:
            raise ValueError(error)
        # gathering waits for every rank, so every part is complete before the merge
        summary = CorpusSummary.total(shard.gather(_run(classifier, job, shard, files)))
        if shard.main and shard.sharded:
            outfile.merge_parts(files.out)
            outfile.merge_errors(outfile.errors_path(files.out))
        return summary
    finally:
        shard.stop()


class _Sink:
    """Where outcomes go: predictions appended to ``OUT`` (or its part), problems to the
    errors file (rewritten: a resume meets every skipped row again), or stdout / stderr."""

    def __init__(self, files: _Files, shard: Shard):
        self.sharded = shard.sharded
        self.out = files.target.open("a", encoding="utf-8") if files.target else sys.stdout
        self.errors = files.errors.open("w", encoding="utf-8") if files.errors else None

    def prediction(self, row: int, prediction: Prediction) -> None:
        self.out.write((f"{row}\t" if self.sharded else "") + prediction.to_json() + "\n")

    def problem(self, row: int, problem: Problem) -> None:
        line = json.dumps({"row": row, **dataclasses.asdict(problem)}, ensure_ascii=False)
        print(line, file=self.errors or sys.stderr)

    def flush(self) -> None:
        self.out.flush()
        if self.errors:
            self.errors.flush()

    def close(self) -> None:
        self.flush()
        for stream in (self.out, self.errors):
            if stream not in (None, sys.stdout):
                stream.close()


def _shard_rows(job: PredictArgs, shard: Shard) -> int:
    rows = count_rows(job.input, job.limit)
    return rows // shard.world + (shard.rank < rows % shard.world)


def _run(classifier: Classifier, job: PredictArgs, shard: Shard, files: _Files) -> CorpusSummary:
    """This rank's shard, outcome by outcome in input order, flushed after every batch."""
    done: frozenset[str] = frozenset()
    if job.resume:
        outfile.repair(files.target)
        done = frozenset(outfile.done_ids(*dict.fromkeys((files.out, files.target))))
    stream = PairStream(lambda: stream_records(job.input, job.limit, done), classifier.processor,
                        classifier.fmt, job.batch_size, job.bucket, shard.rank, shard.world)
    workers = job.num_workers if job.num_workers is not None else default_workers(shard)
    summary = CorpusSummary(out=str(files.out) if files.out else None,
                            errors=str(outfile.errors_path(files.out)) if files.out else None)
    skipped: Counter = Counter()
    sink = _Sink(files, shard)
    progress = Progress(_shard_rows(job, shard), f"predicting ({job.method})", unit="row",
                        enabled=job.progress and shard.main, every=job.progress_every)
    start, batches = time.perf_counter(), 0
    try:
        for ready in classifier.predict_stream(stream, job.method, workers):
            for ordinal, outcome in ready:
                row = ordinal * shard.world + shard.rank
                if outcome is DONE:
                    summary.already_done += 1
                elif isinstance(outcome, Problem):
                    sink.problem(row, outcome)
                    if job.strict:
                        raise ValueError(f"{outcome.file}: {outcome.reason} (id {outcome.id}) "
                                         f"{outcome.detail}".rstrip() + " [--strict]")
                    skipped[outcome.reason] += 1
                else:
                    sink.prediction(row, outcome.abstain(job.min_confidence))
                    summary.predicted += 1
                    summary.unparseable += outcome.unparseable
            sink.flush()
            batches += 1
            if batches % job.bucket == 0:  # about once a window, as the workers do
                release_memory()
            summary.elapsed_s = time.perf_counter() - start
            progress.update(len(ready))
    finally:
        sink.close()
        progress.close()
    summary.skipped = dict(skipped)
    return summary
