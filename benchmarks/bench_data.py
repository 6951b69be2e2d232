"""Data throughput on the real MVSA-Single release: reading, decoding, preprocessing, collating.

    python benchmarks/bench_data.py [--data ../shared/data/mvsa_single] [--repeats 5] [--smoke]

Stages, each on the release in ``../shared/data/mvsa_single`` (skipped, with a RESULT line
saying so, where it is absent):

1. ``read_source``: the label file, every tweet text decoded, every image path checked
   (records/s over the release's rows);
2. ``open_rgb`` on every image, one thread (images/s; a first untimed pass warms the page
   cache), and ``check_images`` (its 4-thread pool) on the same files;
3. image preprocessing by the processor, in batches of 16 decoded images: the tiny-llava
   processor (32 px) and the LLaVA-1.5 size (336 px, ``CLIPImageProcessor`` as the 7B-shaped
   tiny model builds it; the PIL backend where torchvision is absent), side by side;
4. ``TrainCollator`` (open + chat template + tokenise + preprocess + answer-only labels) per
   batch of 16 at both sizes, and a ``torch.utils.data.DataLoader`` over the same records with
   the collator at ``num_workers`` 0 vs 2 (workers started for each pass, as the Trainer's
   non-persistent loader does every epoch);
5. would a training step wait on data? With ``num_workers=0`` (the recipe's default) the step
   waits for every collate; with workers, only when a collate takes longer than a step times
   the workers. The 336 px collate is compared with a LLaVA-1.5-7B LoRA step estimated from
   its FLOPs (pass ``--step-ms`` to use a measured one, e.g. from ``gpu_check.py``).

Last line: ``RESULT records_per_s=... images_per_s=... collate_ms_per_batch=...
workers2_speedup=...``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    SHARED_DATA,
    add_smoke_flag,
    banner,
    machine,
    median,
    paired_ratio,
    quiet,
    result_line,
    side_by_side,
    skipped,
    spread,
)

BATCH = 16


def llava_processors():
    """(tiny-llava processor at 32 px, the same processor at LLaVA-1.5-7B's 336 px / 576 tokens)."""
    import dataclasses

    from llavac.models import LLAVA_7B_SIZES, TinySizes
    from llavac.models.tiny_llava import build_llava

    _, tiny = build_llava(TinySizes())
    seven = {k: LLAVA_7B_SIZES[k] for k in ("image_size", "patch_size")}
    _, large = build_llava(dataclasses.replace(TinySizes(), **seven))
    return tiny, large


def estimated_7b_step_ms(tokens_per_sample: int, batch: int = BATCH, mfu: float = 0.4,
                         peak_tflops: float = 989.0) -> float:
    """A LLaVA-1.5-7B LoRA step at ``mfu`` of an H100's dense bf16 peak, from gpu_check's FLOPs."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _flops import IMAGE_TOKENS_7B, LLAVA_7B_COUNTS, train_flops

    flops = batch * train_flops(LLAVA_7B_COUNTS, tokens_per_sample, image_tokens=IMAGE_TOKENS_7B)
    return 1e3 * flops / (mfu * peak_tflops * 1e12)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "mvsa_single")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=0,
                        help="images opened in stage 2 (0: all of the release's)")
    parser.add_argument("--batches", type=int, default=8,
                        help="batches of 16 preprocessed and collated in stages 3 and 4")
    parser.add_argument("--loader-batches", type=int, default=24,
                        help="batches of 16 per DataLoader pass")
    parser.add_argument("--step-ms", type=float, default=None,
                        help="a measured training step time to compare the collate with")
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    if args.smoke:
        args.repeats, args.images, args.batches, args.loader_batches = 1, 32, 1, 2
    return args


def time_read_source(data: Path, repeats: int):
    """Stage 1: the release read (label file, texts, image paths); (source, records/s)."""
    from llavac.data import read_source

    times = side_by_side({"read_source": lambda: read_source(data)},
                         repeats=repeats)["read_source"]
    source = read_source(data)
    records_per_s = source.rows / median(times)
    print(f"read_source: {source.rows} rows ({len(source.records)} records after the label "
          f"rule) in {spread(times)} -> {records_per_s:,.0f} records/s")
    return source, records_per_s


def time_open_rgb(images: list[Path]) -> dict[str, float]:
    """Stage 2: every image decoded on one thread (after a pass that warms the page cache),
    then ``check_images`` on its thread pool; images/s of each."""
    from llavac.data import Record, check_images, open_rgb

    start = time.perf_counter()
    for path in images:  # warm the page cache
        open_rgb(path)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    sizes = []
    for path in images:
        sizes.append(open_rgb(path).size)
    warm = time.perf_counter() - start
    images_per_s = len(images) / warm
    pixels = sum(w * h for w, h in sizes) / len(sizes)
    print(f"open_rgb, 1 thread: {len(images)} images in {warm:.1f} s -> {images_per_s:,.0f} "
          f"images/s (first pass {len(images) / cold:,.0f}/s); mean {pixels / 1e3:.0f} kpixel")
    as_records = [Record(str(i), "", str(path)) for i, path in enumerate(images)]
    start = time.perf_counter()
    _, problems = check_images(as_records, desc="check")
    threaded = time.perf_counter() - start
    print(f"check_images (4 threads): {len(images) / threaded:,.0f} images/s, "
          f"{len(problems)} unreadable")
    return {"images_per_s": images_per_s, "images_per_s_4threads": len(images) / threaded}


def time_preprocessing(processors: dict, images: list[Path], repeats: int) -> dict[str, float]:
    """Stage 3: each processor's image preprocessing on batches of decoded images; images/s."""
    from llavac.data import open_rgb

    decoded = [open_rgb(path) for path in images]
    batches = [decoded[i:i + BATCH] for i in range(0, len(decoded), BATCH)]

    def preprocess(processor):
        def run():
            for batch in batches:
                processor.image_processor(batch, return_tensors="pt")
        return run

    times = side_by_side({name: preprocess(p) for name, p in processors.items()},
                         repeats=repeats)
    prep = {name: len(decoded) / median(t) for name, t in times.items()}
    print(f"image preprocessing ({type(processors['336px'].image_processor).__name__}), batches "
          f"of {BATCH}: 32 px {prep['32px']:,.0f} images/s, 336 px {prep['336px']:,.0f} images/s")
    return prep


def time_collate(collators: dict, chunks: list, repeats: int) -> tuple[dict[str, float], int]:
    """Stage 4a: ``TrainCollator`` on each chunk of records, at each size; (ms per batch by
    size, tokens per sample at 336 px)."""
    def collate(collator):
        def run():
            for chunk in chunks:
                collator(chunk)
        return run

    times = side_by_side({name: collate(c) for name, c in collators.items()}, repeats=repeats)
    collate_ms = {name: 1e3 * median(t) / len(chunks) for name, t in times.items()}
    sample = collators["336px"](chunks[0])
    tokens = int(sample["attention_mask"].sum(1).float().mean())
    print(f"TrainCollator per batch of {BATCH}: 32 px {collate_ms['32px']:.1f} ms, 336 px "
          f"{collate_ms['336px']:.1f} ms ({tokens} tokens per sample at 336 px)")
    return collate_ms, tokens


def time_loader(records, collator, repeats: int) -> float:
    """Stage 4b: a ``DataLoader`` pass with 0 vs 2 workers (started for each pass, as the
    Trainer's non-persistent loader does every epoch); the 2-worker speedup."""
    from torch.utils.data import DataLoader

    def loader(workers: int):
        def run():
            data = DataLoader(records, batch_size=BATCH, collate_fn=collator,
                              num_workers=workers)
            for _ in data:
                pass
        return run

    times = side_by_side({"workers0": loader(0), "workers2": loader(2)}, repeats=repeats)
    n_batches = len(records) // BATCH
    speedup = paired_ratio(times, "workers0", "workers2")
    print(f"DataLoader at 336 px, {n_batches} batches of {BATCH}: num_workers=0 "
          f"{1e3 * median(times['workers0']) / n_batches:.1f} ms/batch, num_workers=2 "
          f"{1e3 * median(times['workers2']) / n_batches:.1f} ms/batch (worker start-up "
          f"included) -> x{speedup:.2f}")
    return speedup


def show_step_wait(collate_ms: float, tokens: int, measured_step_ms: float | None) -> float:
    """Stage 5: what the 336 px collate costs a training step; the step time it is set
    against (measured, or estimated for LLaVA-1.5-7B)."""
    step_ms = measured_step_ms or estimated_7b_step_ms(tokens)
    source_of_step = ("measured" if measured_step_ms
                      else "estimated: 7B LoRA at 40% MFU of 989 TFLOPS")
    print(f"a training step of batch {BATCH} at 336 px: {step_ms:.0f} ms ({source_of_step})")
    print(f"  num_workers=0 (recipe default): every step waits {collate_ms:.0f} ms for its batch "
          f"(+{100 * collate_ms / step_ms:.0f}% per step)")
    needed = int(collate_ms // step_ms) + 1
    print(f"  with workers: hidden when collate ({collate_ms:.0f} ms) < workers x step; "
          f"{needed} worker(s) suffice on a machine with free cores")
    return step_ms


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet()
    banner("bench_data")
    print(machine())
    if not (args.data / "labelResultAll.txt").is_file():
        return skipped(f"MVSA-Single not found at {args.data} (the benchmark reads the real "
                       "release; pass --data FOLDER)")

    from llavac.prompt import PromptFormat
    from llavac.train.collator import TrainCollator

    source, records_per_s = time_read_source(args.data, args.repeats)
    images = sorted((args.data / "data").glob("*.jpg"), key=lambda p: int(p.stem))
    if args.images:
        images = images[:args.images]
    opened = time_open_rgb(images)
    tiny, large = llava_processors()
    processors = {"32px": tiny, "336px": large}
    prep = time_preprocessing(processors, images[:args.batches * BATCH], args.repeats)
    fmt = PromptFormat.from_name("full")
    records = source.records[:args.loader_batches * BATCH]
    collators = {name: TrainCollator(p, fmt) for name, p in processors.items()}
    chunks = [records[i:i + BATCH] for i in range(0, args.batches * BATCH, BATCH)]
    collate_ms, tokens = time_collate(collators, chunks, args.repeats)
    speedup = time_loader(records, collators["336px"], args.repeats)
    collate_336_ms = collate_ms["336px"]
    step_ms = show_step_wait(collate_336_ms, tokens, args.step_ms)
    print(result_line(records_per_s=records_per_s, **opened,
                      preprocess_336_images_per_s=prep["336px"],
                      preprocess_32_images_per_s=prep["32px"],
                      collate_ms_per_batch=collate_336_ms,
                      collate_ms_per_batch_32px=collate_ms["32px"], workers2_speedup=speedup,
                      step_wait_pct_workers0=100 * collate_336_ms / step_ms,
                      images=len(images), status="ok"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
