"""LLaVA-1.5-7B-shaped speed check on one CUDA GPU (H100 / H200 class), in a few minutes.

    python benchmarks/gpu_check.py [--batch 16] [--steps 5] [--time-budget-s 480]
                                   [--report gpu_check.json] [--peak-tflops 989]
    python benchmarks/gpu_check.py --dry-run [--card-gb 80 141]   # the same steps, no GPU
    python benchmarks/gpu_check.py --smoke                          # the dry run, 1 step

A random-weight model of LLaVA-1.5-7B's shape (``build_tiny("llava", **LLAVA_7B_SIZES)``: CLIP
ViT-L/14-336 + a Llama-7B decoder, 576 image tokens), bfloat16, on the GPU. Nothing is
downloaded. The steps, each printed as it finishes:

1. the 7B shape built on the meta device (no memory), with the paper's LoRA, and the memory
   plan of every later step against the card (``_memory.py``): a step that will not fit is
   known before it runs;
2. LoRA training with the paper preset -- ``make_trainable(model, LoraArgs())``: r 128,
   alpha 256, dropout 0.05 on every language-model linear layer, the projector trained in
   full; AdamW with the projector at its own rate (``split_projector_groups``); bf16 autocast and
   gradient clipping as the Trainer runs them -- on batches of ``--batch`` synthetic 336 px
   images with tweet-length texts, collated by the project's ``TrainCollator``; with gradient
   checkpointing on and off (off falls back to a smaller batch if the activations do not
   fit). Tokens/s, samples/s, peak memory beside its plan, MFU.
3. ``score`` (``LabelScorer`` via ``Classifier``, LoRA merged as prediction merges it) at
   batch 16 and 32, and ``generate`` at batch 16 (forced to the classifier's full answer
   budget: a random model may stop at once). Samples/s, peak memory, MFU of the prefill.

Steps 2 and 3 are timed by ``_gpu_steps.py``. FLOP count used for MFU, and the cards' peaks:
see ``_flops.py``. Targets: training >= 40% MFU; score >= 45% MFU of its prefill FLOPs.

``--dry-run`` runs all of it on the CPU, except the CUDA kernels and the timings: step 1 as
is (against 80 GB and 141 GB cards, or ``--card-gb``), steps 2 and 3 through the same code on
the tiny default shapes in bf16, then the report, saying what the GPU run would measure.
Without CUDA and without ``--dry-run`` it says so in one line and exits 1.

Phases that would start after ``--time-budget-s`` are skipped and reported as such;
``--report PATH`` keeps every figure in a JSON file, rewritten after each phase.
Last line: ``RESULT status=ok gpu=... train_mfu=... score_bs32_samples_per_s=...``.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _memory as memory  # noqa: E402
from _common import Report, add_smoke_flag, banner, machine, result_line, target  # noqa: E402
from _flops import LLAVA_7B_COUNTS, fmt_mfu, parameter_counts, peak_tflops  # noqa: E402
from _gpu_steps import Setup, collator, predict_phase, train_phase  # noqa: E402

DRY_RUN_CARDS_GB = (80.0, 141.0)  # H100 / H200


def tweet(rng: random.Random, words: int = 24) -> str:
    """A tweet-length text (MVSA-Single tweets run ~15-30 words) with a sentiment keyword."""
    from llavac.data.synthetic import synthetic_text

    parts = []
    while sum(len(p.split()) for p in parts) < words:
        parts.append(synthetic_text(rng.choice(("negative", "neutral", "positive")), rng))
    return " ".join(parts)


def write_records(folder: Path, n: int, image_size: int, seed: int = 0):
    """``n`` labelled records with synthetic ``image_size`` px JPEGs written under ``folder``."""
    from llavac.data import Record
    from llavac.data.synthetic import synthetic_image
    from llavac.labels import LABELS, xu_mao_rule

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    while len(records) < n:
        text_label, image_label = rng.choice(LABELS), rng.choice(LABELS)
        label = xu_mao_rule(text_label, image_label)
        if label is None:
            continue
        path = folder / f"{len(records)}.jpg"
        synthetic_image(image_label, rng, image_size).save(path, quality=90)
        records.append(Record(str(len(records)), tweet(rng), str(path), text_label, image_label,
                              label))
    return records


# -- 1. the 7B shape on the meta device, and its memory plan ---------------------------------

def meta_7b():
    """LLaVA-1.5-7B's shape with the paper's LoRA, on the meta device (no memory), its
    parameter counts (base model, then LoRA) and the classifier's answer budget."""
    from llavac.args import LoraArgs
    from llavac.models import LLAVA_7B_SIZES, build_tiny
    from llavac.predict import Classifier
    from llavac.train.recipe import make_trainable

    with torch.device("meta"):
        model, processor = build_tiny("llava", dtype=torch.bfloat16, device="meta",
                                      **LLAVA_7B_SIZES)
        counts = parameter_counts(model)
        budget = Classifier(model, processor, "full").max_new_tokens
        model = make_trainable(model, LoraArgs())
    counts["lora"] = parameter_counts(model)["lora"]
    return model, processor, counts, budget


def plan_7b(records, batch: int, cards_gb: list[float], report: Report) -> dict:
    """The memory plan of every step at the 7B shape, printed against ``cards_gb``. Without
    gradient checkpointing, also the largest batch (halving) the smallest card fits."""
    from llavac.args import LoraArgs

    model, processor, counts, budget = meta_7b()
    print(f"7B shape (meta device): parameters: vision {counts['vision']:,}, projector "
          f"{counts['projector']:,}, language model {counts['lm']:,} (lm_head "
          f"{counts['lm_head']:,}); LoRA {counts['lora']:,}")
    if counts != LLAVA_7B_COUNTS:
        print(f"note: counts differ from LLAVA_7B_COUNTS {LLAVA_7B_COUNTS}")
    shape, r = memory.Shape.of(model.config), LoraArgs().r
    # the training sample's length; a scoring prompt is the same less its few answer tokens
    tokens = collator(processor)(records[:batch])["input_ids"].shape[1]

    def train(size, checkpointing):
        return memory.train_plan(model, shape, r, size, tokens, checkpointing)

    plans = {f"train_ckpt_on_bs{batch}": train(batch, True)}
    fallback = batch
    while fallback > 1 and not memory.fits(train(fallback, False), min(cards_gb)):
        fallback //= 2
    for size in sorted({batch, fallback}, reverse=True):
        plans[f"train_ckpt_off_bs{size}"] = train(size, False)
    for size in (16, 32):
        plans[f"score_bs{size}"] = memory.predict_plan(model, shape, size, tokens)
    plans["generate_bs16"] = memory.predict_plan(model, shape, 16, tokens, budget)
    print(f"memory plan at the 7B shape ({tokens} tokens per sample, {budget} new tokens when "
          f"generating; GB of 1e9, {memory.HEADROOM:.0%} of a card usable):")
    for key, plan in plans.items():
        print(f"  {key:22s} {memory.describe(plan, cards_gb)}", flush=True)
    totals = {key: sum(plan.values()) for key, plan in plans.items()}
    report.put("counts_7b", counts)
    report.put("plan_gb", {key: {**plan, "total": totals[key]} for key, plan in plans.items()})
    return {"counts": counts, "totals": totals, "fallback_batch": fallback}


# -- 2. and 3. (timed in ``_gpu_steps.py``): one line per step beside its plan ---------------

WOULD_MEASURE = {
    "train": "step time, tokens/s, samples/s, TFLOPS, MFU, peak memory",
    "score": "seconds per batch, samples/s, TFLOPS and MFU of the prefill, peak memory",
    "generate": "seconds per batch, samples/s, peak memory",
}


def show(kind: str, r: dict, setup: Setup, plan_key: str, plans: dict) -> None:
    """One line per step: the GPU's figures beside the plan, or, in the dry run, that the
    step ran on the tiny shapes and what the GPU run measures."""
    plan = plans.get(plan_key)
    plan_text = f"plan {plan:.1f} GB" if plan is not None else "no plan at this batch"
    head = f"{kind:8s} {plan_key:22s}"
    if setup.dry:
        print(f"{head} ran on the tiny shapes (batch {r['batch']}, CPU); on a GPU: "
              f"{WOULD_MEASURE[kind]} ({plan_text})", flush=True)
        return
    if kind == "train":
        figures = (f"step {r['step_s']:.3f} s, {r['tokens_per_s']:,.0f} tokens/s, "
                   f"{r['samples_per_s']:.2f} samples/s, {r['tflops']:.3g} TFLOPS, "
                   f"MFU {fmt_mfu(r['mfu'])}")
    else:
        figures = (f"{r['seconds']:.3f} s, {r['samples_per_s']:.1f} samples/s, "
                   f"{r['prompt_tokens']:.0f} prompt tokens"
                   + (f", MFU of the prefill {fmt_mfu(r['mfu'])}" if kind == "score" else ""))
    print(f"{head} {figures}, peak memory {r['peak_gb']:.1f} GB ({plan_text})", flush=True)


# -- the run ----------------------------------------------------------------------------------

def choose_setup(args) -> Setup | None:
    """The GPU run where CUDA is, the dry run where asked; ``None`` (after one line) else."""
    if torch.cuda.is_available() and not args.dry_run:
        from llavac.models import LLAVA_7B_SIZES

        name = torch.cuda.get_device_name()
        return Setup(torch.device("cuda"), dict(LLAVA_7B_SIZES), args.batch, (16, 32), 16,
                     name, peak_tflops(name, args.peak_tflops))
    if not args.dry_run:
        print("gpu_check: no CUDA device here; --dry-run runs the same steps on the CPU")
        return None
    print(f"{'' if torch.cuda.is_available() else 'no CUDA device: '}dry run on the CPU (the "
          "7B shape on the meta device, the steps on the tiny shapes, no timings)")
    return Setup(torch.device("cpu"), {}, 4, (4, 8), 4, "cpu", None)


def in_time(deadline: float, step: str) -> bool:
    if time.monotonic() < deadline:
        return True
    print(f"{step}: skipped, the time budget (--time-budget-s) is spent", flush=True)
    return False


def run_steps(setup: Setup, records, args, planned: dict, report: Report,
              deadline: float) -> dict:
    """Steps 2 and 3 on ``setup``'s device and shapes; every step's figures by name."""
    from llavac.args import LoraArgs
    from llavac.models import build_tiny
    from llavac.predict import Classifier
    from llavac.train.recipe import make_trainable

    start = time.perf_counter()
    model, processor = build_tiny("llava", seed=0, dtype=torch.bfloat16, device=setup.device,
                                  **setup.sizes)
    counts = parameter_counts(model)
    model = make_trainable(model, LoraArgs())
    counts["lora"] = parameter_counts(model)["lora"]
    print(f"model: LLaVA-1.5, {'7B' if setup.sizes else 'tiny'} shape, bfloat16, on "
          f"{setup.device.type}, built in {time.perf_counter() - start:.1f} s", flush=True)
    plans, results = planned["totals"], {}
    # without checkpointing, from the largest batch the plan fits (an OOM costs minutes)
    for checkpointing, planned_batch in ((True, args.batch), (False, planned["fallback_batch"])):
        key = f"train_ckpt_{'on' if checkpointing else 'off'}"
        if in_time(deadline, key):
            results[key] = train_phase(model, processor, records, setup, args, counts,
                                       setup.batch if setup.dry else planned_batch,
                                       checkpointing)
        if results.get(key):
            batch_7b = planned_batch if setup.dry else results[key]["batch"]
            show("train", results[key], setup, f"{key}_bs{batch_7b}", plans)
            report.put(key, results[key])
    model.zero_grad(set_to_none=True)
    model = model.merge_and_unload().eval()  # as Classifier.from_pretrained merges an adapter
    classifier = Classifier(model, processor, "full")
    model.generation_config.min_new_tokens = classifier.max_new_tokens  # a random model
    steps = [("score", b, b7) for b, b7 in zip(setup.score_batches, (16, 32), strict=True)]
    for method, batch, batch_7b in steps + [("generate", setup.generate_batch, 16)]:
        key = f"{method}_bs{batch_7b}"
        if in_time(deadline, key):
            results[key] = predict_phase(classifier, records, setup, args, counts, method, batch)
        if results.get(key):
            show(method, results[key], setup, key, plans)
            report.put(key, results[key])
    return results


def finish(setup: Setup, results: dict, planned: dict, report: Report) -> int:
    """The targets and the RESULT line (measured figures ``na`` in the dry run)."""
    on, off = results.get("train_ckpt_on"), results.get("train_ckpt_off")
    best = max((r for r in (on, off) if r), key=lambda r: r["tflops"], default=None)
    score32, generate = results.get("score_bs32"), results.get("generate_bs16")

    def pick(r, key):
        value = None if setup.dry or not r else r.get(key)
        return round(value, 4) if value is not None else "na"

    target("train_mfu", None if setup.dry or not best else best["mfu"], ">=", 0.40)
    target("score_bs32_mfu", None if setup.dry or not score32 else score32["mfu"], ">=", 0.45)
    figures = {
        "status": "dry_run" if setup.dry else "ok",
        "gpu": setup.name.replace(" ", "_"),
        "train_mfu": pick(best, "mfu"),
        "train_ckpt_on_mfu": pick(on, "mfu"), "train_ckpt_off_mfu": pick(off, "mfu"),
        "train_ckpt_on_tokens_per_s": pick(on, "tokens_per_s"),
        "train_ckpt_off_tokens_per_s": pick(off, "tokens_per_s"),
        "train_ckpt_off_batch": pick(off, "batch"),
        "train_ckpt_on_peak_gb": pick(on, "peak_gb"),
        "train_ckpt_off_peak_gb": pick(off, "peak_gb"),
        "score_bs16_samples_per_s": pick(results.get("score_bs16"), "samples_per_s"),
        "score_bs32_samples_per_s": pick(score32, "samples_per_s"),
        "score_bs32_mfu": pick(score32, "mfu"),
        "generate_bs16_samples_per_s": pick(generate, "samples_per_s"),
        **{f"plan_{key}_gb": round(total, 1) for key, total in planned["totals"].items()},
        "steps_run": sum(1 for r in results.values() if r),
    }
    report.put("result", figures)
    print(result_line(**figures))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=16, help="training batch at the 7B shape")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per setting")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="timed score/generate calls")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the card's dense bf16 peak, where the name is not in the table")
    parser.add_argument("--dry-run", action="store_true",
                        help="on the CPU: the plan at the 7B shape, the steps on tiny shapes")
    parser.add_argument("--card-gb", type=float, nargs="+", default=None,
                        help="card sizes to plan against (default: the GPU's; dry run: "
                        f"{' and '.join(f'{c:g}' for c in DRY_RUN_CARDS_GB)})")
    parser.add_argument("--time-budget-s", type=float, default=480.0,
                        help="no phase starts after this many seconds")
    parser.add_argument("--report", type=Path, default=None, help="a JSON file of every figure")
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    if args.smoke:  # the dry run where there is no GPU, one step and one call each
        args.dry_run = args.dry_run or not torch.cuda.is_available()
        args.steps, args.warmup, args.repeats = 1, 0, 1
    deadline = time.monotonic() + args.time_budget_s

    banner("gpu_check")
    setup = choose_setup(args)
    if setup is None:
        return 1
    print(machine())
    report = Report(args.report)
    report.put("setup", {"mode": "dry_run" if setup.dry else "gpu", "device": setup.name,
                         "machine": machine(), "args": vars(args)})
    cards = args.card_gb or ([torch.cuda.get_device_properties(0).total_memory / memory.GB]
                             if not setup.dry else list(DRY_RUN_CARDS_GB))
    print(f"device: {setup.name}; peak bf16 {setup.peak or 'unknown'} TFLOPS; cards planned "
          f"against: {', '.join(f'{c:.0f} GB' for c in cards)}")
    # small JPEGs: the processor brings every image to the model's 336 px (the content
    # does not matter to a random model, and drawing 336 px images would take a minute)
    records = write_records(Path(tempfile.mkdtemp(prefix="gpu_check_")) / "images",
                            2 * max(args.batch, setup.batch), 48)
    planned = plan_7b(records, args.batch, cards, report)
    results = run_steps(setup, records, args, planned, report, deadline)
    return finish(setup, results, planned, report)


if __name__ == "__main__":
    sys.exit(main())
