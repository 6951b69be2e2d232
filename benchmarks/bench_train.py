"""Training-step overhead: the project's recipe (Trainer + collator + LoRA) vs a bare loop.

    python benchmarks/bench_train.py [--steps 10] [--repeats 5] [--threads 1] [--profile] [--smoke]

Both sides train the same model: a random LLaVA of ``SMALL_SIZES`` (~13.8M parameters),
saved once to a temporary folder so that the project side loads it by path exactly as a
hub checkpoint is loaded, with the paper's LoRA preset (``make_trainable(LoraArgs())``: r 128,
alpha 256, dropout 0.05 on every language-model linear layer, projector trained in full; AdamW
with the projector's own group (``split_projector_groups``)), batch 8, float32, no gradient
checkpointing (CPU), on the synthetic release (random811 train split).

- project: ``llavac.train.train(config)`` with ``train.max_steps=--steps`` -- data loading
  through ``TrainCollator`` in the Trainer's DataLoader (``num_workers`` 0, the default),
  gradient clipping, the LR schedule, logging every step (``train.logging_steps`` default 1)
  and the ``StepLog`` callback, as a user's run does;
- bare: ``model(**batch).loss.backward(); opt.step(); opt.zero_grad()`` on batches collated
  beforehand, everything built by the recipe's own ``setup`` (same records, model files, LoRA,
  prompt with the model family's system sentence and image mode) and the same optimizer
  groups. (Until 0.2 the bare side built its own collator, which missed the system sentence
  0.2 added to LLaVA prompts and trained on shorter sequences than the recipe.)

Figures (steady state: the first ``--skip`` steps of every run are left out):
- step time: ``on_step_begin`` -> ``on_step_end`` of a ``TrainerCallback`` (forward, backward,
  clipping, optimizer and scheduler; no data loading, no logging) vs the same span of the bare
  loop; ``trainer_overhead`` is the median over repeats of their per-repeat ratio;
- loop wall per step: from the end of the last warm-up step to the end of the run, over
  the steps in it; it includes data loading, logging and callbacks (the bare loop's has none);
- samples/s from the loop wall, and peak RSS of each side (the kernel's peak mark is reset
  before each side runs). Each repeat runs both sides, in alternating order.

``--profile`` (automatic when the overhead is above target) runs one more project run under
cProfile and prints where the loop's time goes. Last line: ``RESULT trainer_overhead=...``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    add_smoke_flag,
    add_threads_flag,
    banner,
    machine,
    median,
    peak_rss_mb,
    quiet,
    random_llava,
    reset_peak_rss,
    result_line,
    rss_mb,
    set_threads,
    synthetic_release,
    target,
)

TARGET = 1.10


class StepTimer(TrainerCallback):
    """Step spans (on_step_begin -> on_step_end) and step-end times of a Trainer run."""

    def __init__(self):
        self.spans: list[float] = []
        self.ends: list[float] = []
        self._begin = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._begin = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self.spans.append(now - self._begin)
        self.ends.append(now)

    def on_log(self, args, state, control, **kwargs):
        # the end of a step is after its logging, for the loop-wall figure
        if self.ends:
            self.ends[-1] = time.perf_counter()


def steady(spans: list[float], ends: list[float], skip: int) -> tuple[float, float]:
    """(median step span, loop wall per step) over the steps after the first ``skip``."""
    spans, n = spans[skip:], len(ends) - skip
    return median(spans), (ends[-1] - ends[skip - 1]) / n if skip else float("nan")


def config_for(model_dir: Path, release: Path, output: Path, steps: int, batch: int):
    from llavac.args import DataArgs, LoraArgs, ModelArgs, TrainArgs, TrainConfig

    return TrainConfig(
        model=ModelArgs(name=str(model_dir), dtype="float32"),
        data=DataArgs(path=str(release), procedure="random811"),
        lora=LoraArgs(),  # the paper's preset
        train=TrainArgs(output=str(output), batch_size=batch, bf16=False,
                        gradient_checkpointing=False, max_steps=steps, save_steps=100000,
                        progress=False),
    )


def run_project(config, steps: int, skip: int, profile: bool = False) -> dict:
    """One ``llavac.train.train`` run; its steady-state step span and loop wall per step."""
    from llavac.train import train

    timer = StepTimer()
    reset_peak_rss()
    base = rss_mb()
    start = time.perf_counter()
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    train(config, callbacks=[timer])
    if profiler:
        profiler.disable()
    total = time.perf_counter() - start
    span, wall = steady(timer.spans, timer.ends, skip)
    return {"span": span, "wall": wall, "total": total, "peak_rss": peak_rss_mb(),
            "rss_before": base, "profiler": profiler, "steps": len(timer.spans)}


def prepare_bare(config, steps: int, batch: int):
    """Model, optimizer and ``steps`` pre-collated batches, from the recipe's own ``setup``
    (the same records, model loading, LoRA, prompt and image inputs as ``train`` uses)."""
    from transformers import set_seed

    from llavac.train.recipe import setup, split_projector_groups, with_input_defaults

    config = with_input_defaults(config)
    set_seed(config.train.seed)
    built = setup(config)
    batches = [built.collator(built.records[i * batch:(i + 1) * batch]) for i in range(steps)]
    trainable = [p for p in built.model.parameters() if p.requires_grad]
    optimizer = split_projector_groups(
        torch.optim.AdamW(trainable, lr=config.train.lr, weight_decay=config.train.weight_decay),
        built.model, config.lora.projector_lr)
    return built.model, optimizer, batches


def run_bare(config, steps: int, batch: int, skip: int) -> dict:
    model, optimizer, batches = prepare_bare(config, steps, batch)
    reset_peak_rss()
    base = rss_mb()
    model.train()
    spans, ends = [], []
    for inputs in batches:
        begin = time.perf_counter()
        loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        now = time.perf_counter()
        spans.append(now - begin)
        ends.append(now)
    span, wall = steady(spans, ends, skip)
    tokens = sum(int(b["attention_mask"].sum()) for b in batches) / len(batches)
    return {"span": span, "wall": wall, "peak_rss": peak_rss_mb(), "rss_before": base,
            "tokens": tokens}


def print_profile(profiler: cProfile.Profile, top: int = 25) -> None:
    for key, title in (("tottime", "own time"), ("cumulative", "cumulative time")):
        buffer = io.StringIO()
        stats = pstats.Stats(profiler, stream=buffer).strip_dirs().sort_stats(key)
        stats.print_stats(top)
        print(f"-- cProfile of one project run, top {top} by {title} --")
        lines = buffer.getvalue().splitlines()
        start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
        print("\n".join(lines[start:start + top + 1]))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per run")
    parser.add_argument("--skip", type=int, default=2, help="warm-up steps left out per run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    add_threads_flag(parser)
    parser.add_argument("--profile", action="store_true",
                        help="profile one project run even when the overhead is on target")
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    if args.smoke:  # the tiny default sizes, 3 steps of batch 2, one repeat, the profile too
        args.steps, args.skip, args.repeats, args.batch = 3, 1, 1, 2
        args.profile = True
    return args


def save_model(scratch: Path, args) -> Path:
    """The random LLaVA saved once, so the project side loads it by path as a hub checkpoint."""
    model, processor, described = random_llava(args.smoke)
    model_dir = scratch / "small-llava"
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    print(f"model: random LLaVA, {described}, paper LoRA preset "
          f"(r128/alpha256/dropout0.05, projector trained), batch {args.batch}, float32; "
          f"{args.steps} steps per run, first {args.skip} left out, {args.repeats} repeats")
    return model_dir


def run_repeats(model_dir: Path, release: Path, scratch: Path, args) -> tuple[list, list]:
    """Each repeat runs both sides, in alternating order; the first pair is a warm-up, left
    out. (project runs, bare runs)."""
    project, bare = [], []
    for repeat in range(args.repeats + 1):
        order = ("project", "bare") if repeat % 2 else ("bare", "project")
        for side in order:
            if side == "project":
                config = config_for(model_dir, release, scratch / f"run{repeat}", args.steps,
                                    args.batch)
                result = run_project(config, args.steps, args.skip)
                (project if repeat else []).append(result)
            else:
                config = config_for(model_dir, release, scratch / f"bare{repeat}", args.steps,
                                    args.batch)
                result = run_bare(config, args.steps, args.batch, args.skip)
                (bare if repeat else []).append(result)
        if repeat:
            p, b = project[-1], bare[-1]
            print(f"repeat {repeat}: step project {1e3 * p['span']:7.1f} ms, bare "
                  f"{1e3 * b['span']:7.1f} ms (x{p['span'] / b['span']:.3f}); loop wall/step "
                  f"project {1e3 * p['wall']:7.1f} ms, bare {1e3 * b['wall']:7.1f} ms "
                  f"(x{p['wall'] / b['wall']:.3f}); train() call {p['total']:.1f} s", flush=True)
    return project, bare


def summarise(project: list, bare: list, args) -> dict:
    """The medians over repeats, printed side by side, and the target; the RESULT figures."""
    overhead = median(p["span"] / b["span"] for p, b in zip(project, bare, strict=True))
    wall_overhead = median(p["wall"] / b["wall"] for p, b in zip(project, bare, strict=True))
    step_p, step_b = median(p["span"] for p in project), median(b["span"] for b in bare)
    wall_p, wall_b = median(p["wall"] for p in project), median(b["wall"] for b in bare)
    rss_p, rss_b = max(p["peak_rss"] for p in project), max(b["peak_rss"] for b in bare)
    total = median(p["total"] for p in project)
    print(f"\ntokens per batch (bare batches): {bare[0]['tokens']:.0f}")
    print(f"step time (median):      project {1e3 * step_p:7.1f} ms   bare {1e3 * step_b:7.1f} ms"
          f"   ratio {overhead:.3f} (median of per-repeat ratios)")
    print(f"loop wall per step:      project {1e3 * wall_p:7.1f} ms   bare {1e3 * wall_b:7.1f} ms"
          f"   ratio {wall_overhead:.3f}")
    print(f"samples/s (loop wall):   project {args.batch / wall_p:7.2f}      bare "
          f"{args.batch / wall_b:7.2f}")
    print(f"peak RSS:                project {rss_p:7.0f} MB   bare {rss_b:7.0f} MB "
          f"(process RSS before: {project[0]['rss_before']:.0f} / {bare[0]['rss_before']:.0f} MB)")
    print(f"whole train() call:      {total:.1f} s for {args.steps} steps "
          f"(setup: split + image check, model load, Trainer; save: adapter, plot)")
    target("trainer_overhead", overhead, "<=", TARGET)
    return {"trainer_overhead": overhead, "wall_overhead": wall_overhead,
            "project_step_ms": 1e3 * step_p, "bare_step_ms": 1e3 * step_b,
            "project_wall_ms": 1e3 * wall_p, "bare_wall_ms": 1e3 * wall_b,
            "project_samples_per_s": args.batch / wall_p,
            "bare_samples_per_s": args.batch / wall_b,
            "project_peak_rss_mb": rss_p, "bare_peak_rss_mb": rss_b}


def main(argv=None) -> int:
    args = parse_args(argv)
    set_threads(args.threads)
    quiet()
    banner("bench_train")
    print(machine())
    scratch = Path(tempfile.mkdtemp(prefix="bench_train_"))
    release = synthetic_release(scratch, args.smoke)
    model_dir = save_model(scratch, args)
    project, bare = run_repeats(model_dir, release, scratch, args)
    figures = summarise(project, bare, args)
    if args.profile or figures["trainer_overhead"] > TARGET or figures["wall_overhead"] > TARGET:
        print()
        config = config_for(model_dir, release, scratch / "profiled", args.steps, args.batch)
        profiled = run_project(config, args.steps, args.skip, profile=True)
        print_profile(profiled["profiler"])
    print(result_line(**figures, repeats=args.repeats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
