"""Training progress a person can read, on a terminal and in a log file alike.

The Trainer's own callbacks print every log as a Python dict with its floats quoted
(``{'loss': '6.108', ...}``) and, in a log file, a progress bar that is one giant line of
``\\r``. :func:`replace_trainer_output` swaps them for one line per logging step, numbers as
numbers, plus a live bar only when stderr is a terminal.
"""

from __future__ import annotations

import time

from transformers import PrinterCallback, ProgressCallback, Trainer, TrainerCallback
from transformers.trainer_callback import TrainerControl, TrainerState

from llavac.console import log, on_terminal


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


class StepLines(TrainerCallback):
    """``step 50/300  loss 0.4123  lr 1.90e-04  8.7 samples/s  ETA 2m10s`` per logging step."""

    def __init__(self, samples_per_step: int):
        self.samples_per_step = samples_per_step
        self.start = 0.0
        self.first_step = 0

    def on_train_begin(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        self.start, self.first_step = time.perf_counter(), state.global_step

    def on_log(self, args, state: TrainerState, control: TrainerControl, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return
        done = state.global_step - self.first_step
        elapsed = time.perf_counter() - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (state.max_steps - state.global_step) / rate if rate else 0.0
        line = (f"step {state.global_step}/{state.max_steps}  loss {logs['loss']:.4f}  "
                f"lr {logs.get('learning_rate', 0.0):.2e}  "
                f"{rate * self.samples_per_step:.1f} samples/s  ETA {_duration(eta)}")
        _write(line)


class QuietProgress(ProgressCallback):
    """The Trainer's progress bar without its dict printing (``StepLines`` says it)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        pass


def _write(line: str) -> None:
    # Below a live bar, tqdm.write keeps the bar intact; elsewhere it is a plain log line.
    if on_terminal():
        from tqdm import tqdm

        tqdm.write(line)
    else:
        log.info(line)


def replace_trainer_output(trainer: Trainer, samples_per_step: int, bar: bool) -> None:
    """Readable step lines, and a live bar only on a terminal (``bar`` and stderr a TTY)."""
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if bar and on_terminal():
        trainer.add_callback(QuietProgress)
    trainer.add_callback(StepLines(samples_per_step))
