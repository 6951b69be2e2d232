"""Prediction speed: label scoring vs greedy generation + parsing vs one bare forward pass.

    python benchmarks/bench_predict.py [--run DIR] [--repeats 5] [--threads 1] [--smoke]

Two models, both prompts (``full`` and ``multimodal-only``), batch 1 and 16:

- a tiny LLaVA trained on the synthetic task (``llavac/configs/tiny_synthetic.yaml``, ~280 steps of
  full fine-tuning, in a temporary folder; ``--run DIR`` reuses a finished run folder, or
  trains into DIR when it does not exist yet). On it, ``score`` and ``generate`` are compared
  for agreement on the held-out synthetic pairs, where generation parses;
- a larger random LLaVA (``SMALL_SIZES``, ~13.8M parameters) whose forward pass dominates the
  cost, as a real model's does. Its RESULT ratios are the headline figures.

Contenders, all on the same pre-encoded prompt batch (``encode_prompts``, timed apart):
``forward`` is the floor, ``model(**batch.inputs)`` under ``no_grad``; ``score`` is
``LabelScorer.score`` plus the argmax per slot (what ``Classifier.predict(method="score")``
does after encoding); ``generate`` is ``generate_answers`` with the classifier's answer budget
plus ``PromptFormat.parse``. A random model's greedy answer may hit the end token at once
or never: its generation is forced to run the whole budget (``min_new_tokens`` = the
project's ``max_new_tokens``), which is what a user pays for a well-formed answer plus the
parser's slack. The trained model generates as it would in use (it stops at its end token).

Explanations (``llavac explain``, issue 24): on the larger random model, the seconds to
explain one pair by occlusion (``3 + words + grid**2`` scored variants, the default 6 x 6
grid) with its variants scored ``EXPLAIN_BATCH`` at a time, side by side with one variant
per forward pass: ``explain_s_per_pair`` and ``explain_batch_speedup``.

A head run (``train.objective=head``) predicts with one forward pass and a softmax per slot
instead of label scoring: ``head_over_score_bs1`` / ``_bs16`` are its pairs/s over
``score``'s on the larger model, both with the full prompt and the same batch (the heads
are random: their speed does not depend on their weights).

Times are per batch, median of ``--repeats`` side-by-side repeats after a warm-up; ratios
are the median of per-repeat ratios. Last line: ``RESULT generate_over_score_bs1=...``.
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
from _common import (  # noqa: E402
    add_smoke_flag,
    add_threads_flag,
    banner,
    machine,
    median,
    paired_ratio,
    quiet,
    random_llava,
    result_line,
    set_threads,
    side_by_side,
    spread,
    synthetic_release,
    target,
)

from llavac.labels import LABELS  # noqa: E402
from llavac.predict import Classifier  # noqa: E402
from llavac.predict.batching import encode_prompts  # noqa: E402
from llavac.predict.generation import generate_answers  # noqa: E402

PROMPTS = ("full", "multimodal-only")
TARGETS = (  # on the larger random model, full prompt unless ``_mm_`` (multimodal-only)
    ("score_over_forward_bs1", "<=", 1.5),
    ("score_over_forward_bs16", "<=", 1.5),
    ("score_over_forward_mm_bs1", "<=", 1.2),
    ("score_over_forward_mm_bs16", "<=", 1.2),
    ("generate_over_score_bs1", ">=", 1.5),
    ("generate_over_score_bs16", ">=", 1.0),
    # One forward pass with a softmax per slot vs a prefill plus a continuation pass.
    ("head_over_score_bs1", ">=", 1.0),
    ("head_over_score_bs16", ">=", 1.0),
)
EXPLAIN_BATCH = 16  # variants per forward pass, llavac explain's default (explain.batch_size)
# On one CPU thread the larger model's forward pass grows linearly with the batch (bs 16
# costs ~16x bs 1), so batching saves only the per-call work (encoding, scorer bookkeeping):
# the batched explanation should cost its forward passes and little else. On a GPU, where a
# batch of 16 costs about what one pair does, the gain is far larger.
EXPLAIN_SPEEDUP_TARGET = 1.2


# -- the trained tiny model ---------------------------------------------------------------

def train_tiny(run: Path, release: Path, smoke: bool) -> float:
    """Train the tiny LLaVA on the synthetic release per the ``tiny_synthetic`` preset."""
    from llavac.config import load_config
    from llavac.train import TrainConfig, train

    overrides = [f"data.path={release}", f"train.output={run}", "train.progress=false",
                 "train.save_steps=100000"]
    if smoke:
        overrides.append("train.max_steps=2")
    config = load_config(TrainConfig, "tiny_synthetic", overrides)
    start = time.perf_counter()
    train(config)
    return time.perf_counter() - start


def held_out(run: Path, scratch: Path):
    """The validation + test pairs of the run's synthetic split (re-written if gone)."""
    import yaml

    from llavac.data import load_split
    from llavac.data.synthetic import write_synthetic_release

    data = yaml.safe_load((run / "config.yaml").read_text())["data"]
    path = Path(data["path"])
    if not (path / "labelResultAll.txt").exists():  # a reused run whose temporary data is gone
        path = write_synthetic_release(scratch / "synthetic", n=600, seed=0)
    split = load_split(path, procedure=data["procedure"], seed=data.get("split_seed", 0))
    return split.validation + split.test


def agreement(classifier: Classifier, records, batch_size: int = 16) -> dict:
    """score vs generate on ``records``: agreement where generation parses, and validity."""
    scored = classifier.predict(records, "score", batch_size, progress=False)
    generated = classifier.predict(records, "generate", batch_size, progress=False)
    slots = classifier.fmt.slots
    parsed = [(s, g) for s, g in zip(scored, generated, strict=True) if not g.unparseable]
    same = sum(all(s.label(slot) == g.label(slot) for slot in slots) for s, g in parsed)
    invalid = sum(s.label(slot) not in LABELS for s in scored for slot in slots)
    correct = sum(s.multimodal_label == r.multimodal_label
                  for s, r in zip(scored, records, strict=True))
    return {
        "pairs": len(records),
        "parsed": len(parsed),
        "unparseable": len(records) - len(parsed),
        "agree": same,
        "agreement": same / len(parsed) if parsed else float("nan"),
        "invalid_labels": invalid,
        "score_accuracy": correct / len(records),
    }


# -- timing --------------------------------------------------------------------------------

def new_tokens(model, tokenizer, batch, budget: int) -> float:
    """Mean number of generated tokens per row (up to and including the end token)."""
    with torch.inference_mode():
        out = model.generate(**batch.inputs, max_new_tokens=budget, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    generated = out[:, batch.inputs["input_ids"].shape[1]:]
    lengths = []
    for row in generated.tolist():
        n = len(row)
        if tokenizer.eos_token_id in row:
            n = row.index(tokenizer.eos_token_id) + 1
        lengths.append(n)
    return sum(lengths) / len(lengths)


def time_model(name: str, model, processor, pairs, batch_sizes, repeats: int,
               force_budget: bool) -> dict:
    """Side-by-side times of forward / score / generate for every prompt and batch size."""
    results = {}
    for prompt in PROMPTS:
        classifier = Classifier(model, processor, prompt)
        budget = classifier.max_new_tokens
        model.generation_config.min_new_tokens = budget if force_budget else None
        for bs in batch_sizes:
            images = [image for image, _ in pairs[:bs]]
            texts = [text for _, text in pairs[:bs]]
            batch = encode_prompts(processor, classifier.fmt, images, texts, model)
            tokens = batch.inputs["input_ids"].shape[1]
            generated = new_tokens(model, processor.tokenizer, batch, budget)

            def forward(batch=batch):
                with torch.no_grad():
                    return model(**batch.inputs)

            def score(classifier=classifier, batch=batch):
                probs = classifier.scorer.score(batch)
                return [{slot: max(p, key=p.get) for slot, p in row.items()} for row in probs]

            def generate(classifier=classifier, batch=batch, budget=budget):
                answers = generate_answers(model, processor.tokenizer, batch, budget)
                return [classifier.fmt.parse(answer) for answer in answers]

            def encode(classifier=classifier, images=images, texts=texts):
                return encode_prompts(processor, classifier.fmt, images, texts, model)

            times = side_by_side({"forward": forward, "score": score, "generate": generate,
                                  "encode": encode}, repeats=repeats)
            key = (prompt, bs)
            results[key] = {
                "times": times,
                "tokens": tokens,
                "generated": generated,
                "budget": budget,
                "gen_over_score": paired_ratio(times, "generate", "score"),
                "score_over_forward": paired_ratio(times, "score", "forward"),
            }
            print(f"{name:>13} {prompt:>15} bs={bs:<3} prompt {tokens:4d} tok | "
                  f"forward {spread(times['forward'])} | score {spread(times['score'])} | "
                  f"generate {spread(times['generate'])} ({generated:.1f}/{budget} tok) | "
                  f"encode {spread(times['encode'])}", flush=True)
            r = results[key]
            print(f"{'':>39} score/forward {r['score_over_forward']:.2f}   "
                  f"generate/score {r['gen_over_score']:.2f}", flush=True)
    model.generation_config.min_new_tokens = None
    return results


def time_explain(classifier: Classifier, pair, repeats: int) -> dict:
    """Seconds to explain ``pair``: its variants ``EXPLAIN_BATCH`` at a time vs one by one,
    side by side (same pair, same variants, same probabilities)."""
    from llavac.explain import DEFAULT_GRID, explain, variant_count

    image, text = pair
    times = side_by_side({
        "batched": lambda: explain(classifier, image, text, batch_size=EXPLAIN_BATCH),
        "one_by_one": lambda: explain(classifier, image, text, batch_size=1),
    }, repeats=repeats)
    variants = variant_count(text, DEFAULT_GRID)
    speedup = paired_ratio(times, "one_by_one", "batched")
    print(f"explain one pair ({variants} variants: 3 + {len(text.split())} words + "
          f"{DEFAULT_GRID}x{DEFAULT_GRID} cells) | batched by {EXPLAIN_BATCH} "
          f"{spread(times['batched'])} | one by one {spread(times['one_by_one'])} | "
          f"speedup {speedup:.2f}", flush=True)
    return {"explain_s_per_pair": median(times["batched"]),
            "explain_unbatched_s_per_pair": median(times["one_by_one"]),
            "explain_batch_speedup": speedup, "explain_variants": variants}


def time_heads(model, processor, pairs, batch_sizes, repeats: int) -> dict[int, float]:
    """Per batch size, the head prediction's pairs/s over label scoring's (full prompt),
    timed side by side on the same encoded batch; random heads on ``model``."""
    from llavac.labels import SLOTS
    from llavac.models.heads import attach_heads, detach_heads
    from llavac.predict.head_scoring import head_probabilities

    scoring = Classifier(model, processor, "full")
    heads = attach_heads(model, SLOTS)
    detach_heads(model)  # as a head run's classifier keeps them: beside the model
    ratios = {}
    for bs in batch_sizes:
        batch = encode_prompts(processor, scoring.fmt, [i for i, _ in pairs[:bs]],
                               [t for _, t in pairs[:bs]], model)
        times = side_by_side({
            "head": lambda batch=batch: head_probabilities(model, heads, batch),
            "score": lambda batch=batch: scoring.scorer.score(batch),
        }, repeats=repeats)
        ratios[bs] = paired_ratio(times, "score", "head")
        print(f"{'head vs score':>13} {'full':>15} bs={bs:<3} head {spread(times['head'])} "
              f"({bs / median(times['head']):.1f} pairs/s) | score {spread(times['score'])} "
              f"({bs / median(times['score']):.1f} pairs/s) | head/score pairs/s "
              f"{ratios[bs]:.2f}", flush=True)
    return ratios


def synthetic_pairs(n: int, seed: int = 1):
    """(image, text) pairs drawn like the synthetic release's (48 px images, 5-word texts)."""
    from llavac.data.synthetic import synthetic_image, synthetic_text

    rng = random.Random(seed)
    return [(synthetic_image(rng.choice(LABELS), rng, 48), synthetic_text(rng.choice(LABELS), rng))
            for _ in range(n)]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, default=None,
                        help="a finished tiny_synthetic run folder to reuse "
                        "(trained into if absent)")
    parser.add_argument("--repeats", type=int, default=5)
    add_threads_flag(parser)
    add_smoke_flag(parser)
    return parser.parse_args(argv)


def trained_run(run: Path, scratch: Path, smoke: bool) -> Path:
    """``run``, trained on the synthetic task first unless it is a finished run folder."""
    if (run / "config.yaml").exists():
        print(f"reusing the trained run {run}")
        return run
    release = synthetic_release(scratch, smoke)
    print(f"training the tiny model on the synthetic task into {run} ...", flush=True)
    seconds = train_tiny(run, release, smoke)
    print(f"trained in {seconds:.1f} s")
    return run


def report(big: dict, heads: dict, explained: dict, stats: dict, repeats: int) -> None:
    """The headline ratios (larger random model), the targets and the RESULT line."""
    figures = {
        "generate_over_score_bs1": big[("full", 1)]["gen_over_score"],
        "generate_over_score_bs16": big[("full", 16)]["gen_over_score"],
        "score_over_forward_bs1": big[("full", 1)]["score_over_forward"],
        "score_over_forward_bs16": big[("full", 16)]["score_over_forward"],
        "score_over_forward_mm_bs1": big[("multimodal-only", 1)]["score_over_forward"],
        "score_over_forward_mm_bs16": big[("multimodal-only", 16)]["score_over_forward"],
        "generate_over_score_mm_bs1": big[("multimodal-only", 1)]["gen_over_score"],
        "generate_over_score_mm_bs16": big[("multimodal-only", 16)]["gen_over_score"],
        "head_over_score_bs1": heads[1],
        "head_over_score_bs16": heads[16],
    }
    print("\ntargets (larger random model; agreement: the trained tiny one):")
    for name, op, bound in TARGETS:
        target(name, figures[name], op, bound)
    target("agreement", stats["agreement"], ">=", 1.0)  # identical wherever generate parses
    target("invalid_labels", stats["invalid_labels"], "<=", 0)
    target("explain_batch_speedup", explained["explain_batch_speedup"], ">=",
           EXPLAIN_SPEEDUP_TARGET)
    print(result_line(**figures, **explained, agreement=stats["agreement"],
                      unparseable=stats["unparseable"],
                      invalid_labels=stats["invalid_labels"],
                      score_accuracy=stats["score_accuracy"], repeats=repeats))


def main(argv=None) -> int:
    args = parse_args(argv)
    set_threads(args.threads)
    # smoke: 60 synthetic pairs, 2 training steps, one repeat, the tiny model in both roles
    repeats = 1 if args.smoke else args.repeats
    quiet()
    banner("bench_predict")
    print(machine())
    scratch = Path(tempfile.mkdtemp(prefix="bench_predict_"))
    run = trained_run(args.run or scratch / "run", scratch, args.smoke)

    tiny = Classifier.from_pretrained(adapter=run, device="cpu")
    stats = agreement(tiny, held_out(run, scratch))
    print(f"trained tiny model, full prompt, {stats['pairs']} held-out pairs: score accuracy "
          f"{stats['score_accuracy']:.3f}; generate parsed {stats['parsed']}, unparseable "
          f"{stats['unparseable']}; agreement where parsed {stats['agree']}/{stats['parsed']} "
          f"= {stats['agreement']:.3f}; invalid score labels {stats['invalid_labels']}", flush=True)

    pairs = synthetic_pairs(16)
    print(f"\ntimes per batch: median (min-max) of {repeats} side-by-side repeats after a warm-up")
    time_model("tiny-trained", tiny.model, tiny.processor, pairs, (1, 16), repeats,
               force_budget=False)
    small, small_processor, described = random_llava(args.smoke)
    print(f"(larger random model: {described}; its generation is forced to the full answer "
          "budget)")
    big = time_model("small-random", small, small_processor, pairs, (1, 16), repeats,
                     force_budget=True)
    explained = time_explain(Classifier(small, small_processor, "full"), pairs[0], repeats)
    heads = time_heads(small, small_processor, pairs, (1, 16), repeats)
    report(big, heads, explained, stats, repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
