"""LLaVA-1.5-7B-shaped speed check on one CUDA GPU (H100 / H200 class), in a few minutes.

    python benchmarks/gpu_check.py [--batch 16] [--steps 5] [--peak-tflops 989]
    python benchmarks/gpu_check.py --cpu-smoke      # tiny sizes on the CPU: exercises the logic

A random-weight model of LLaVA-1.5-7B's shape (``build_tiny("llava", **LLAVA_7B_SIZES)``: CLIP
ViT-L/14-336 + a Llama-7B decoder, 576 image tokens), bfloat16, on the GPU. Nothing is
downloaded. Prints the card, then:

1. LoRA training with the paper preset -- ``make_trainable(model, LoraArgs())``: r 128,
   alpha 256, dropout 0.05 on every language-model linear layer, the projector trained in
   full; AdamW with the projector at its own rate (``split_projector_groups``); bf16 autocast and
   gradient clipping as the Trainer runs them -- on batches of ``--batch`` (default 16)
   synthetic 336 px images with tweet-length texts, collated by the project's
   ``TrainCollator``; with gradient checkpointing on and off (off falls back to a smaller
   batch if the activations do not fit). Tokens/s, samples/s, peak memory, MFU.
2. ``score`` (``LabelScorer`` via ``Classifier``, LoRA merged as prediction merges it) at
   batch 16 and 32, and ``generate`` at batch 16 (forced to the classifier's full answer
   budget: a random model may stop at once). Samples/s, peak memory, MFU of the prefill.

FLOP count used for MFU, and the cards' peaks: see ``_flops.py``. Targets reported: training
>= 40% MFU; score >= 45% MFU of its prefill FLOPs (about 40 samples/s at batch 32).

Exits 0 with ``RESULT status=no_gpu`` where CUDA is absent (unless ``--cpu-smoke``).
Last line: ``RESULT status=ok gpu=... train_mfu=... score_bs32_samples_per_s=...``.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import banner, result_line  # noqa: E402
from _flops import (  # noqa: E402
    LLAVA_7B_COUNTS,
    fmt_mfu,
    parameter_counts,
    peak_tflops,
    prefill_flops,
    train_flops,
)


def tweet(rng: random.Random, words: int = 24) -> str:
    """A tweet-length text (MVSA-Single tweets run ~15-30 words) with a sentiment keyword."""
    from llavac.synthetic import synthetic_text

    parts = []
    while sum(len(p.split()) for p in parts) < words:
        parts.append(synthetic_text(rng.choice(("negative", "neutral", "positive")), rng))
    return " ".join(parts)


def write_records(folder: Path, n: int, image_size: int, seed: int = 0):
    """``n`` labelled records with synthetic ``image_size`` px JPEGs written under ``folder``."""
    from llavac.data import Record
    from llavac.labels import LABELS, xu_mao_rule
    from llavac.synthetic import synthetic_image

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


class Clock:
    """Wall time of a GPU region (synchronised before and after)."""

    def __init__(self, device: torch.device):
        self.device = device

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self, fn):
        self.sync()
        start = time.perf_counter()
        result = fn()
        self.sync()
        return time.perf_counter() - start, result


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    from _common import peak_rss_mb

    return peak_rss_mb() / 1024


def is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error)


def train_phase(model, batches, device, autocast, steps: int, warmup: int, checkpointing: bool,
                counts, image_tokens: int, peak) -> dict:
    """Warm-up + timed LoRA steps on pre-collated ``batches`` (cycled)."""
    from llavac.train.args import LoraArgs, TrainArgs

    from llavac.train.recipe import split_projector_groups

    args, lora = TrainArgs(), LoraArgs()
    if checkpointing:
        # as the Trainer applies train.gradient_checkpointing (the recipe's kwargs)
        model.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.activation_checkpointing_disable()
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = split_projector_groups(
        torch.optim.AdamW(trainable, lr=args.lr, weight_decay=args.weight_decay), model,
        lora.projector_lr)
    clock = Clock(device)

    def step(inputs):
        with autocast():
            loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    reset_peak(device)
    times, tokens = [], []
    try:
        for i in range(warmup + steps):
            inputs = {k: v.to(device) for k, v in batches[i % len(batches)].items()}
            seconds, loss = clock(lambda inputs=inputs: step(inputs))
            if i >= warmup:
                times.append(seconds)
                tokens.append(int(inputs["attention_mask"].sum()))
        float(loss.detach())
    finally:
        optimizer.zero_grad(set_to_none=True)
        model.activation_checkpointing_disable()
    batch = batches[0]["input_ids"].shape[0]
    step_s = statistics.median(times)
    mean_tokens = sum(tokens) / len(tokens)
    flops = train_flops(counts, mean_tokens / batch, image_tokens) * batch
    return {
        "batch": batch,
        "step_s": step_s,
        "tokens_per_s": mean_tokens / step_s,
        "samples_per_s": batch / step_s,
        "tflops": flops / step_s / 1e12,
        "mfu": flops / step_s / (peak * 1e12) if peak else None,
        "peak_gib": peak_gib(device),
        "tokens_per_sample": mean_tokens / batch,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per setting")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="timed score/generate calls")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the card's dense bf16 peak, where the name is not in the table")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="tiny sizes on the CPU, 2 steps: checks the code path, not the speed")
    args = parser.parse_args(argv)

    banner("gpu_check")
    if args.cpu_smoke:
        device = torch.device("cpu")
        sizes: dict = {}  # the default tiny sizes
        dtype, autocast = torch.float32, contextlib.nullcontext
        args.batch, args.steps, args.warmup, args.repeats = 4, 2, 1, 2
        score_batches, generate_batch = (4, 8), 4
        name = "cpu (smoke run)"
    elif not torch.cuda.is_available():
        print("no CUDA GPU here: this check runs on an H100 / H200-class machine "
              "(use --cpu-smoke to exercise its code path on the CPU)")
        print(result_line(status="no_gpu"))
        return 0
    else:
        from llavac.models import LLAVA_7B_SIZES

        device = torch.device("cuda")
        sizes = dict(LLAVA_7B_SIZES)
        dtype = torch.bfloat16

        def autocast():
            return torch.autocast("cuda", dtype=torch.bfloat16)

        score_batches, generate_batch = (16, 32), 16
        name = torch.cuda.get_device_name(device)
    peak = peak_tflops(name, args.peak_tflops) if device.type == "cuda" else None
    print(f"device: {name}; peak bf16 {peak or 'unknown'} TFLOPS; torch {torch.__version__}")

    from llavac.train.args import LoraArgs, TrainArgs

    from llavac.models import build_tiny
    from llavac.predict import Classifier
    from llavac.predict.batching import encode_prompts
    from llavac.predict.generation import generate_answers
    from llavac.prompt import PromptFormat
    from llavac.train.collator import TrainCollator
    from llavac.train.recipe import make_trainable

    start = time.perf_counter()
    model, processor = build_tiny("llava", seed=0, dtype=dtype, device=device, **sizes)
    base_counts = parameter_counts(model)
    image_tokens = model.config.image_seq_length
    image_size = model.config.vision_config.image_size
    print(f"model: LLaVA-1.5 shape {'(7B)' if sizes else '(tiny)'}, {dtype}, built in "
          f"{time.perf_counter() - start:.1f} s; parameters: vision {base_counts['vision']:,}, "
          f"projector {base_counts['projector']:,}, language model {base_counts['lm']:,} "
          f"(lm_head {base_counts['lm_head']:,}); {image_tokens} image tokens at {image_size} px")
    model = make_trainable(model, LoraArgs())
    counts = {**base_counts, "lora": parameter_counts(model)["lora"]}
    print(f"LoRA (paper preset r128/alpha256/dropout0.05, projector trained): "
          f"{counts['lora']:,} LoRA parameters")
    if sizes and any(counts[k] != v for k, v in LLAVA_7B_COUNTS.items()):
        print(f"note: counts differ from LLAVA_7B_COUNTS {LLAVA_7B_COUNTS}; MFU uses the built "
              "model's counts")

    scratch = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    records = write_records(scratch / "images", 2 * args.batch, image_size)
    collator = TrainCollator(processor, PromptFormat.from_name("full"), False,
                             TrainArgs().max_length)

    def collated(batch: int):
        return [collator(records[i:i + batch]) for i in range(0, 2 * batch, batch)]

    # 1. LoRA training, gradient checkpointing on and off ----------------------------------
    results = {}
    for checkpointing in (True, False):
        batch = args.batch
        while batch >= 1:
            fits = True
            try:
                results[checkpointing] = train_phase(
                    model, collated(batch), device, autocast, args.steps, args.warmup,
                    checkpointing, counts, image_tokens, peak)
            except (torch.cuda.OutOfMemoryError, RuntimeError) as error:
                if not is_oom(error):
                    raise
                fits = False
            if fits:
                break
            # out of the except block: the traceback no longer holds the activations
            print(f"gradient checkpointing {'on' if checkpointing else 'off'}: batch {batch} "
                  "does not fit; halving")
            model.zero_grad(set_to_none=True)
            reset_peak(device)
            batch //= 2
        r = results.get(checkpointing)
        if r is None:
            print(f"gradient checkpointing {'on' if checkpointing else 'off'}: no batch fits")
            continue
        print(f"train, gradient checkpointing {'on ' if checkpointing else 'off'}, batch "
              f"{r['batch']:2d} ({r['tokens_per_sample']:.0f} tokens/sample): step "
              f"{r['step_s']:.3f} s, {r['tokens_per_s']:,.0f} tokens/s, {r['samples_per_s']:.2f} "
              f"samples/s, {r['tflops']:.3g} TFLOPS, MFU {fmt_mfu(r['mfu'])}, peak memory "
              f"{r['peak_gib']:.1f} GiB", flush=True)

    # 2. score and generate through the project's classifier ----------------------------------
    model.zero_grad(set_to_none=True)
    model = model.merge_and_unload().eval()  # as Classifier.from_pretrained merges an adapter
    classifier = Classifier(model, processor, "full")
    budget = classifier.max_new_tokens
    model.generation_config.min_new_tokens = budget  # a random model: pay the whole budget
    clock = Clock(device)
    from llavac.data import open_rgb

    images = [open_rgb(record.image) for record in records]
    texts = [record.text for record in records]
    predict = {}
    for method, batch in [("score", b) for b in score_batches] + [("generate", generate_batch)]:
        reps = (images * 4)[:batch], (texts * 4)[:batch]
        encoded = encode_prompts(processor, classifier.fmt, reps[0], reps[1], model)

        if method == "score":
            def call(encoded=encoded):
                return classifier.scorer.score(encoded)
        else:
            def call(encoded=encoded):
                answers = generate_answers(model, processor.tokenizer, encoded, budget)
                return [classifier.fmt.parse(a) for a in answers]

        reset_peak(device)
        times = None
        try:
            clock(call)  # warm-up
            times = [clock(call)[0] for _ in range(args.repeats)]
        except (torch.cuda.OutOfMemoryError, RuntimeError) as error:
            if not is_oom(error):
                raise
        if times is None:
            print(f"{method} batch {batch}: out of memory")
            reset_peak(device)
            continue
        seconds = statistics.median(times)
        tokens = float(encoded.attention_mask.sum()) / batch
        flops = prefill_flops(counts, tokens, image_tokens) * batch
        r = {"batch": batch, "seconds": seconds, "samples_per_s": batch / seconds,
             "tflops": flops / seconds / 1e12, "peak_gib": peak_gib(device),
             "mfu": flops / seconds / (peak * 1e12) if peak else None}
        predict[(method, batch)] = r
        extra = (f"prefill {r['tflops']:.3g} TFLOPS, MFU of the prefill {fmt_mfu(r['mfu'])}"
                 if method == "score" else f"{budget} new tokens per row (forced)")
        print(f"{method:8s} batch {batch:2d} ({tokens:.0f} prompt tokens): {seconds:.3f} s, "
              f"{r['samples_per_s']:.1f} samples/s, {extra}, peak memory {r['peak_gib']:.1f} GiB",
              flush=True)

    # targets ----------------------------------------------------------------------------
    on, off = results.get(True), results.get(False)
    best_train = max((r for r in (on, off) if r), key=lambda r: r["tflops"], default=None)
    score32 = predict.get(("score", score_batches[-1]))
    if peak:
        if best_train:
            print(f"target LoRA training >= 40% MFU: {fmt_mfu(best_train['mfu'])} "
                  f"{'MET' if best_train['mfu'] >= 0.40 else 'MISSED'}")
        if score32:
            print(f"target score >= 45% MFU of its prefill (batch {score32['batch']}): "
                  f"{fmt_mfu(score32['mfu'])} {'MET' if score32['mfu'] >= 0.45 else 'MISSED'} "
                  f"({score32['samples_per_s']:.1f} samples/s; ~40 expected)")
    else:
        print("targets: MFU needs the card's peak (--peak-tflops); not judged")

    def pick(r, key, scale=1.0):
        return round(r[key] * scale, 4) if r and r.get(key) is not None else "na"

    gen = predict.get(("generate", generate_batch))
    print(result_line(
        status="smoke" if args.cpu_smoke else "ok",
        gpu=name.replace(" ", "_"),
        train_mfu=pick(best_train, "mfu"),
        train_ckpt_on_mfu=pick(on, "mfu"), train_ckpt_off_mfu=pick(off, "mfu"),
        train_ckpt_on_tokens_per_s=pick(on, "tokens_per_s"),
        train_ckpt_off_tokens_per_s=pick(off, "tokens_per_s"),
        train_ckpt_off_batch=pick(off, "batch"),
        train_ckpt_on_peak_gib=pick(on, "peak_gib"), train_ckpt_off_peak_gib=pick(off, "peak_gib"),
        **{f"score_bs{score_batches[0]}_samples_per_s":
           pick(predict.get(("score", score_batches[0])), "samples_per_s"),
           f"score_bs{score_batches[-1]}_samples_per_s": pick(score32, "samples_per_s"),
           f"score_bs{score_batches[-1]}_mfu": pick(score32, "mfu"),
           f"generate_bs{generate_batch}_samples_per_s": pick(gen, "samples_per_s")},
    ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
