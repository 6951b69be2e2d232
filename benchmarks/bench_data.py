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


def main(argv=None) -> int:
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

    quiet()
    banner("bench_data")
    print(machine())
    if not (args.data / "labelResultAll.txt").is_file():
        return skipped(f"MVSA-Single not found at {args.data} (the benchmark reads the real "
                       "release; pass --data FOLDER)")

    from torch.utils.data import DataLoader

    from llavac.data import check_images, open_rgb, read_source
    from llavac.prompt import PromptFormat
    from llavac.train.collator import TrainCollator

    # 1. read_source -----------------------------------------------------------------------
    times = side_by_side({"read_source": lambda: read_source(args.data)},
                         repeats=args.repeats)["read_source"]
    source = read_source(args.data)
    records_per_s = source.rows / median(times)
    print(f"read_source: {source.rows} rows ({len(source.records)} records after the label "
          f"rule) in {spread(times)} -> {records_per_s:,.0f} records/s")

    # 2. open_rgb on every image -------------------------------------------------------------
    images = sorted((args.data / "data").glob("*.jpg"), key=lambda p: int(p.stem))
    if args.images:
        images = images[:args.images]
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
    from llavac.data import Record

    as_records = [Record(str(i), "", str(path)) for i, path in enumerate(images)]
    start = time.perf_counter()
    readable, problems = check_images(as_records, desc="check")
    threaded = time.perf_counter() - start
    print(f"check_images (4 threads): {len(images) / threaded:,.0f} images/s, "
          f"{len(problems)} unreadable")

    # 3. processor image preprocessing ------------------------------------------------------
    tiny, large = llava_processors()
    decoded = [open_rgb(path) for path in images[:args.batches * BATCH]]
    batches = [decoded[i:i + BATCH] for i in range(0, len(decoded), BATCH)]

    def preprocess(processor):
        def run():
            for batch in batches:
                processor.image_processor(batch, return_tensors="pt")
        return run

    times = side_by_side({"32px": preprocess(tiny), "336px": preprocess(large)},
                         repeats=args.repeats)
    n = len(decoded)
    prep = {name: n / median(t) for name, t in times.items()}
    print(f"image preprocessing ({type(large.image_processor).__name__}), batches of {BATCH}: "
          f"32 px {prep['32px']:,.0f} images/s, 336 px {prep['336px']:,.0f} images/s")

    # 4. collate and the data loader --------------------------------------------------------
    fmt = PromptFormat.from_name("full")
    records = source.records[:args.loader_batches * BATCH]
    collators = {"32px": TrainCollator(tiny, fmt), "336px": TrainCollator(large, fmt)}
    chunks = [records[i:i + BATCH] for i in range(0, args.batches * BATCH, BATCH)]

    def collate(collator):
        def run():
            for chunk in chunks:
                collator(chunk)
        return run

    times = side_by_side({name: collate(c) for name, c in collators.items()},
                         repeats=args.repeats)
    collate_ms = {name: 1e3 * median(t) / len(chunks) for name, t in times.items()}
    sample = collators["336px"](chunks[0])
    tokens = int(sample["attention_mask"].sum(1).float().mean())
    print(f"TrainCollator per batch of {BATCH}: 32 px {collate_ms['32px']:.1f} ms, 336 px "
          f"{collate_ms['336px']:.1f} ms ({tokens} tokens per sample at 336 px)")

    def loader(workers: int):
        def run():
            data = DataLoader(records, batch_size=BATCH, collate_fn=collators["336px"],
                              num_workers=workers)
            for _ in data:
                pass
        return run

    times = side_by_side({"workers0": loader(0), "workers2": loader(2)}, repeats=args.repeats)
    n_batches = len(records) // BATCH
    speedup = paired_ratio(times, "workers0", "workers2")
    print(f"DataLoader at 336 px, {n_batches} batches of {BATCH}: num_workers=0 "
          f"{1e3 * median(times['workers0']) / n_batches:.1f} ms/batch, num_workers=2 "
          f"{1e3 * median(times['workers2']) / n_batches:.1f} ms/batch (worker start-up "
          f"included) -> x{speedup:.2f}")

    # 5. would the step wait? ----------------------------------------------------------------
    step_ms = args.step_ms or estimated_7b_step_ms(tokens)
    source_of_step = "measured" if args.step_ms else "estimated: 7B LoRA at 40% MFU of 989 TFLOPS"
    c = collate_ms["336px"]
    print(f"a training step of batch {BATCH} at 336 px: {step_ms:.0f} ms ({source_of_step})")
    print(f"  num_workers=0 (recipe default): every step waits {c:.0f} ms for its batch "
          f"(+{100 * c / step_ms:.0f}% per step)")
    needed = int(c // step_ms) + 1
    print(f"  with workers: hidden when collate ({c:.0f} ms) < workers x step; "
          f"{needed} worker(s) suffice on a machine with free cores")
    print(result_line(records_per_s=records_per_s, images_per_s=images_per_s,
                      images_per_s_4threads=len(images) / threaded,
                      preprocess_336_images_per_s=prep["336px"],
                      preprocess_32_images_per_s=prep["32px"],
                      collate_ms_per_batch=c, collate_ms_per_batch_32px=collate_ms["32px"],
                      workers2_speedup=speedup, step_wait_pct_workers0=100 * c / step_ms,
                      images=len(images), status="ok"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
