"""Corpus prediction: the Ray engine against the local one, side by side on one machine.

    python benchmarks/bench_corpus_engines.py [--pairs 2000] [--rows 10000] [--repeats 2]
                                              [--size 32|336] [--smoke]

On ``--rows`` rows cycling over the first ``--pairs`` real MVSA-Single pairs
(``../shared/data``; each row its own id), ``llavac predict``'s job (``predict_corpus``,
default batch size and window) runs with ``--engine local`` (this
process and its DataLoader worker) and with ``--engine ray`` on a local Ray of 2 CPUs, started
once before the timing (as a cluster is, before a job is sent to it). Each run loads its
model, as the command does. The model is ``tiny-llava`` (32 px), or with ``--size 336`` the
tiny LLaVA at LLaVA-1.5's input size (576 image tokens, one layer per tower) saved to a
folder, so that a pair costs the model more than its image costs to prepare, as a 7B model on
a GPU does.

Per run, two rates over the same rows:

- ``wall``: rows over the whole call (start-up included: the model load; for Ray also the
  actor's process and the CPU tasks' first import of torch);
- ``steady``: the second half of the rows over the time they took (sampled every 0.1 s:
  lines of ``--output`` for the local engine, commit records for Ray). The first half is left
  out: Ray prepares blocks ahead while its model actor starts, and the local engine's first
  window waits for its slowest batch.

The answers are compared too (ids, labels, probabilities within 1e-5). Last line:
``RESULT ray_over_local_steady=... ray_over_local_wall=... same_answers=...``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    SHARED_DATA,
    banner,
    machine,
    median,
    paired_ratio,
    quiet,
    result_line,
    side_by_side,
    spread,
)
from bench_predict_corpus import write_corpus  # noqa: E402  (the same corpus)

from llavac.args import ClassifierArgs, PredictArgs, PredictConfig  # noqa: E402
from llavac.models import SMALL_SIZES, build_tiny  # noqa: E402
from llavac.predict.blocks import BlockFolder  # noqa: E402
from llavac.predict.corpus import predict_corpus  # noqa: E402

LLAVA_336 = {**SMALL_SIZES, "image_size": 336, "patch_size": 14, "vision_layers": 1,
             "text_layers": 1}  # as bench_predict_corpus.py's model


def model_name(size: int, tmp: Path) -> str:
    if size == 32:
        return "tiny-llava"
    model, processor = build_tiny("llava", **LLAVA_336)
    model.save_pretrained(tmp / "llava-336")
    processor.save_pretrained(tmp / "llava-336")
    return str(tmp / "llava-336")


class Rates:
    """Rows done over time, sampled while a job runs; the wall and steady rates of a run."""

    def __init__(self, rows_done):
        self.rows_done, self.samples = rows_done, []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self.stop.wait(0.1):
            self.samples.append((time.perf_counter(), self.rows_done()))

    def run(self, job) -> tuple[float, float]:
        start = time.perf_counter()
        self.thread.start()
        try:
            job()
        finally:
            self.stop.set()
            self.thread.join()
        end, rows = time.perf_counter(), self.rows_done()
        at, done = next((t, n) for t, n in self.samples + [(end, rows)] if n >= rows / 2)
        # nan: the second half came out at once (a job of a window or two): no steady part
        steady = (rows - done) / (end - at) if rows > done else float("nan")
        return rows / (end - start), steady


def runner(engine: str, model: str, corpus: Path, out: Path, rates: dict):
    """A contender for side_by_side: one job of ``engine`` into a new ``out`` (so that no
    earlier run's rows are counted); appends its (wall, steady) rates."""

    def job():
        run = out.with_name(f"{out.name}-{len(rates[engine])}")
        config = PredictConfig(ClassifierArgs(name=model, device="cpu"), PredictArgs(
            input=str(corpus), output=str(run), engine=engine, progress=False))

        def rows_done() -> int:
            if engine == "local":
                return run.read_bytes().count(b"\n") if run.exists() else 0
            folder = BlockFolder(run)
            return sum(folder.read_record(b)["predicted"] for b in folder.committed_blocks())

        rates[engine].append(Rates(rows_done).run(lambda: predict_corpus(config)))
        if out.is_dir():
            shutil.rmtree(out)
        out.unlink(missing_ok=True)
        run.rename(out)  # the last run's output, for the comparison of answers

    return job


def same_answers(local: Path, ray: Path) -> bool:
    want = [json.loads(line) for line in local.read_text().splitlines()]
    got = [json.loads(line) for part in sorted(ray.glob("part-*.jsonl"))
           for line in part.read_text().splitlines()]
    labels = ("text_label", "image_label", "multimodal_label")
    return [p["id"] for p in got] == [p["id"] for p in want] and all(
        [a[k] for k in labels] == [b[k] for k in labels]
        and all(abs(a["probabilities"][s][k] - p) <= 1e-5
                for s, probs in b["probabilities"].items() for k, p in probs.items())
        for a, b in zip(got, want, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--size", type=int, choices=(32, 336), default=32)
    parser.add_argument("--smoke", action="store_true", help="64 rows, one run of each")
    args = parser.parse_args()
    quiet()
    if not (SHARED_DATA / "mvsa_single" / "data").is_dir():
        print(result_line(status="skipped"))
        return
    if args.smoke:
        args.pairs, args.rows, args.repeats = 64, 64, 1
    import ray

    print(machine())
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        write_corpus(tmp / "in.jsonl", rows=args.rows, pairs=args.pairs)
        model = model_name(args.size, tmp)
        banner(f"{args.rows} rows of {args.pairs} pairs, "
               f"{model if args.size == 32 else 'tiny LLaVA at 336 px'}")
        rates = {"local": [], "ray": []}
        outs = {"local": tmp / "local.jsonl", "ray": tmp / "ray"}
        times = side_by_side({engine: runner(engine, model, tmp / "in.jsonl", out, rates)
                              for engine, out in outs.items()}, repeats=args.repeats,
                             warmup=0 if args.smoke else 1)
        same = same_answers(outs["local"], outs["ray"])
    measured = {engine: rates[engine][-args.repeats:] for engine in rates}  # no warm-up
    for engine, values in times.items():
        walls, steadies = zip(*measured[engine], strict=True)
        print(f"  {engine:6s} {spread(values)}; wall {median(walls):.1f} rows/s, steady "
              f"{median(steadies):.1f} rows/s")
    steady = median(ray[1] / local[1] if local[1] else float("nan")
                    for ray, local in zip(measured["ray"], measured["local"], strict=True))
    wall = paired_ratio(times, "local", "ray")  # local seconds over ray seconds
    print(f"ray over local: steady {steady:.3f} (target >= 0.8: "
          f"{'MET' if steady >= 0.8 else 'MISSED'}), wall {wall:.3f}; same answers: {same}")
    print(result_line(ray_over_local_steady=steady, ray_over_local_wall=wall,
                      local_steady_rows_per_s=median(r[1] for r in measured["local"]),
                      ray_steady_rows_per_s=median(r[1] for r in measured["ray"]),
                      rows=args.rows, pairs=args.pairs, size=args.size, same_answers=same))

if __name__ == "__main__":
    main()
