"""A per-step training log (loss, lr, samples/s, peak memory) and its loss-curve plot."""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import torch
from transformers import TrainerCallback


def peak_memory_mb() -> float:
    """Peak accelerator memory when on CUDA, else the process's peak resident set size."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


class StepLog(TrainerCallback):
    """Appends one JSON line per logged step to ``path`` (main process only).

    On resume, lines past the checkpoint's step are dropped first: those steps are
    trained again, and the log must describe the run that produced the weights.
    """

    def __init__(self, path: Path, samples_per_step: int, resume_step: int = 0):
        self.path = Path(path)
        self.samples_per_step = samples_per_step
        self.resume_step = resume_step
        self._last_time = None
        self._last_step = resume_step

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()
        lines = self.path.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if json.loads(line)["step"] <= self.resume_step]
        self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def on_step_begin(self, args, state, control, **kwargs):
        if self._last_time is None:
            self._last_time = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or logs is None or "loss" not in logs:
            return
        now = time.perf_counter()
        steps = state.global_step - self._last_step
        elapsed = now - self._last_time if self._last_time is not None else 0.0
        entry = {
            "step": state.global_step,
            "epoch": round(state.epoch or 0.0, 4),
            "loss": logs["loss"],
            "lr": logs.get("learning_rate"),
            "grad_norm": logs.get("grad_norm"),
            "samples_per_s": round(steps * self.samples_per_step / elapsed, 3) if elapsed else None,
            "peak_memory_mb": round(peak_memory_mb(), 1),
        }
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
        self._last_time, self._last_step = now, state.global_step


def plot_loss(log_path: Path, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = [json.loads(line) for line in Path(log_path).read_text().splitlines()]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([e["step"] for e in entries], [e["loss"] for e in entries], lw=1.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (answer tokens)")
    ax.grid(alpha=0.3)
    if not entries:  # a run shorter than train.logging_steps
        ax.set_title("no step was logged (run shorter than train.logging_steps)")
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
