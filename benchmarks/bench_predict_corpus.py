"""Corpus prediction: pipeline overhead, memory over a long input, resume scan time.

    python benchmarks/bench_predict_corpus.py [--model NAME] [--pairs 32] [--repeats 3]
                                              [--rss-rows 4000] [--smoke]

On real MVSA-Single images (``../shared/data``) at LLaVA-1.5's input size, 336 px:

- ``pipeline_over_model``: end-to-end pairs/s of ``predict_corpus`` (a JSONL on disk: reading,
  decoding, preprocessing, the model, writing) over model-only pairs/s (the same batches
  already decoded and preprocessed in memory; only the copy to the device and the model).
  With the default number of DataLoader workers and with 0 workers. The CPU model is
  ``tiny-llava`` at 336 px / patch 14 (576 image tokens, as LLaVA-1.5) with ``SMALL_SIZES``
  widths and one layer per tower, so that a pair costs the model a few times what its image
  costs to decode and preprocess, as a 7B model on a GPU does (~25 ms against ~5 ms a pair).
  ``--model NAME`` runs a real checkpoint instead (CUDA when present, same code path).
- ``rss_growth_mb``: a 200,000-row JSONL (the real pairs repeated, unique ids) through
  ``llavac predict --limit ROWS`` in a subprocess (tiny-llava at 32 px, so rows pass quickly);
  the resident memory of the process and its workers after the first 1,000 rows
  (``--rss-baseline-rows``), then the largest seen until the last row is written; the growth
  is the difference. ``reader_rss_growth_mb`` streams all 200,000 rows through the reader
  (ids kept for duplicates: the one per-row state).
- ``resume_overhead_s``: ``predict_corpus(resume=True)`` on 100,000 input rows whose ids a
  100,000-line ``--output`` holds: scanning the file and skipping every row, no model call.

``--smoke`` shrinks every one of these: the 32 px tiny-llava, a 2,000-row input, a few
hundred rows per stage.

Last line: ``RESULT pipeline_over_model=... pipeline_over_model_w0=... rss_growth_mb=...``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    REPO,
    SHARED_DATA,
    add_smoke_flag,
    banner,
    machine,
    median,
    paired_ratio,
    quiet,
    result_line,
    rss_mb,
    side_by_side,
    skipped,
    spread,
    target,
)

from llavac.args import ClassifierArgs, PredictArgs, PredictConfig  # noqa: E402
from llavac.data import read_text  # noqa: E402
from llavac.data.stream import stream_records  # noqa: E402
from llavac.models import SMALL_SIZES, build_tiny  # noqa: E402
from llavac.predict import Classifier  # noqa: E402
from llavac.predict.batching import to_model  # noqa: E402
from llavac.predict.classifier import job_settings  # noqa: E402
from llavac.predict.corpus import predict_corpus  # noqa: E402
from llavac.predict.loader import (  # noqa: E402
    PairStream,
    available_cores,
    default_workers,
    held_heap,
)
from llavac.predict.outfile import meta_path, write_settings  # noqa: E402

LLAVA_336 = {**SMALL_SIZES, "image_size": 336, "patch_size": 14, "vision_layers": 1,
             "text_layers": 1}


def write_corpus(path: Path, rows: int, pairs: int) -> None:
    """``rows`` rows cycling over the first ``pairs`` real pairs, each with its own id."""
    folder = SHARED_DATA / "mvsa_single" / "data"
    numbers = sorted(int(p.stem) for p in folder.glob("*.jpg"))[:pairs]
    real = [(str(folder / f"{k}.jpg"), read_text(folder / f"{k}.txt").text.strip())
            for k in numbers]
    with path.open("w", encoding="utf-8") as f:
        for i in range(rows):
            image, text = real[i % len(real)]
            f.write(json.dumps({"id": f"row-{i}", "image": image, "text": text}) + "\n")


def job(input: Path, out: Path, **predict) -> PredictConfig:
    return PredictConfig(ClassifierArgs(), PredictArgs(input=str(input), output=str(out),
                                                       progress=False, **predict))


def pipeline(classifier: Classifier, corpus: Path, tmp: Path, pairs: int, batch: int,
             repeats: int) -> dict[str, float]:
    """End-to-end against model-only pairs/s, on the same batches."""
    items = list(PairStream(lambda: stream_records(corpus, pairs), classifier.processor,
                            classifier.fmt, batch))
    pin = classifier.model.device.type == "cuda"

    def model_only():  # with the heap policy the pipeline's model runs under
        with held_heap():
            for item in items:
                batch_ = to_model(item.prompts, item.encoded, classifier.model, non_blocking=pin)
                classifier._predict_batch(item.ids, batch_, "score")
        if pin:
            import torch

            torch.cuda.synchronize()

    workers = default_workers()
    if not pin:  # a CPU model gets the cores the pipeline leaves it (loader.model_threads)
        import torch

        torch.set_num_threads(max(1, available_cores() - workers))

    def end_to_end(num_workers):
        return lambda: predict_corpus(job(corpus, tmp / "e2e.jsonl", limit=pairs, batch_size=batch,
                                          num_workers=num_workers, overwrite=True), classifier)

    times = side_by_side({"model": model_only, "workers": end_to_end(workers),
                          "w0": end_to_end(0)}, repeats=repeats)
    for name, values in times.items():
        print(f"  {name:8s} {spread(values)} for {pairs} pairs "
              f"({pairs / min(values):.2f} pairs/s best)")
    return {"workers": workers, "with": paired_ratio(times, "model", "workers"),
            "without": paired_ratio(times, "model", "w0")}


def tree_rss_mb(process: psutil.Process) -> float:
    try:
        members = [process, *process.children(recursive=True)]
        return sum(p.memory_info().rss for p in members) / 2**20
    except psutil.Error:
        return float("nan")


def rss_growth(corpus: Path, tmp: Path, rows: int, baseline: int,
               batch_size: int) -> tuple[float, float, float]:
    """(RSS after ``baseline`` rows, largest RSS later, the trend: median RSS over the last
    ``baseline`` rows less the median over the ``baseline`` rows after the first) of
    ``llavac predict --limit rows``. A batch holds its images decoded at full size until the
    processor has resized them, so the largest RSS depends on the batch's images; the trend
    shows growth with rows."""
    out = tmp / "rss.jsonl"
    command = [sys.executable, "-m", "llavac.cli", "predict", "--model", "tiny-llava",
               "--input", str(corpus), "--output", str(out), "--limit", str(rows),
               "--batch-size", str(batch_size), "--overwrite", "predict.progress=false"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    job_ = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    process = psutil.Process(job_.pid)
    first, peak, at, samples = None, 0.0, 0, []
    while job_.poll() is None:
        lines = out.read_bytes().count(b"\n") if out.exists() else 0
        rss = tree_rss_mb(process)
        if lines >= rows:  # the rows are done: what follows is the process exiting
            break
        if first is None and lines >= baseline:
            first = rss
        elif first is not None and rss > peak:
            peak, at = rss, lines
        if lines >= baseline and rss == rss:
            samples.append((lines, rss))
        time.sleep(0.05)
    job_.wait()
    if job_.returncode != 0 or first is None:
        raise RuntimeError(f"the rss run failed: {job_.stderr.read()[-2000:]}")
    print(f"  {job_.stderr.read().strip().splitlines()[-1]}; largest RSS at {at} rows")
    early = [rss for lines, rss in samples if lines < 2 * baseline]
    late = [rss for lines, rss in samples if lines >= rows - baseline]
    return first, max(peak, first), median(late) - median(early)


def reader_growth(corpus: Path) -> float:
    start = rss_mb()
    rows = sum(1 for _ in stream_records(corpus))
    grown = rss_mb() - start
    print(f"  reader: {rows} rows, +{grown:.1f} MB")
    return grown


def resume_overhead(corpus: Path, tmp: Path, rows: int) -> float:
    """Seconds for a resume that finds all ``rows`` done."""
    classifier = Classifier.from_pretrained("tiny-llava", device="cpu")
    out = tmp / "resume.jsonl"
    config = job(corpus, out, limit=rows, resume=True, num_workers=0)
    probabilities = {"text": {"negative": 0.2, "neutral": 0.3, "positive": 0.5}}
    with out.open("w", encoding="utf-8") as f:
        for i in range(rows):
            f.write(json.dumps({"id": f"row-{i}", "text_label": "positive", "image_label": None,
                                "multimodal_label": None, "probabilities": probabilities}) + "\n")
    write_settings(meta_path(out), job_settings(config, classifier))
    start = time.perf_counter()
    summary = predict_corpus(config, classifier)
    seconds = time.perf_counter() - start
    assert summary.already_done == rows and summary.predicted == 0, summary.line()
    print(f"  {summary.line()}")
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a real checkpoint (GPU) instead of the 336 px tiny")
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--corpus-rows", type=int, default=200_000)
    parser.add_argument("--rss-rows", type=int, default=4000)
    parser.add_argument("--rss-baseline-rows", type=int, default=1000)
    parser.add_argument("--rss-batch-size", type=int, default=64)
    parser.add_argument("--resume-rows", type=int, default=100_000)
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    quiet()
    banner("bench_predict_corpus")
    if not (SHARED_DATA / "mvsa_single" / "data").is_dir():
        return skipped(f"MVSA-Single not found at {SHARED_DATA / 'mvsa_single'} (the "
                       "benchmark reads real images)")
    if args.smoke:
        args.pairs, args.batch_size, args.repeats = 4, 2, 1
        args.corpus_rows, args.rss_rows, args.rss_baseline_rows = 2000, 400, 100
        args.rss_batch_size, args.resume_rows = 16, 2000
    print(machine())
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        corpus = tmp / "corpus.jsonl"
        write_corpus(corpus, args.corpus_rows, 500)
        if args.model:
            classifier = Classifier.from_pretrained(args.model)
        else:
            model, processor = build_tiny("llava", **({} if args.smoke else LLAVA_336))
            name = "tiny-llava" if args.smoke else "tiny-llava-336"
            classifier = Classifier(model, processor, "full", {"model": name})
        banner(f"pipeline over model ({classifier.model.config.vision_config.image_size} px)")
        ratios = pipeline(classifier, corpus, tmp, args.pairs, args.batch_size, args.repeats)
        banner(f"memory over {args.rss_rows} of {args.corpus_rows} rows")
        first, peak, trend = rss_growth(corpus, tmp, args.rss_rows, args.rss_baseline_rows,
                                        args.rss_batch_size)
        print(f"  {first:.0f} MB after {args.rss_baseline_rows} rows, {peak:.0f} MB at most "
              f"after, trend {trend:+.1f} MB")
        reader = reader_growth(corpus)
        banner(f"resume over a {args.resume_rows}-line --output")
        resume = resume_overhead(corpus, tmp, args.resume_rows)
    print(f"pipeline_over_model {ratios['with']:.3f} with {ratios['workers']} workers, "
          f"{ratios['without']:.3f} with 0")
    target("pipeline_over_model", ratios["with"], ">=", 0.90)
    target("rss_growth_mb", peak - first, "<=", 50)
    print(result_line(pipeline_over_model=ratios["with"], workers=ratios["workers"],
                      pipeline_over_model_w0=ratios["without"], rss_growth_mb=peak - first,
                      rss_trend_mb=trend,
                      rss_rows=args.rss_rows, reader_rss_growth_mb=reader,
                      resume_overhead_s=resume, device=str(classifier.model.device)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
