"""Checkpoints that survive a kill at any moment.

The Trainer writes ``checkpoint-N/`` file by file (adapter, optimizer, scheduler, RNG states,
``trainer_state.json``) and then deletes old checkpoints beyond ``save_total_limit``. A kill in
between leaves a folder that looks like a checkpoint but cannot be loaded, and the Trainer's
``get_last_checkpoint`` picks it anyway (transformers issues #35782, #35525). Here:

- a checkpoint counts only once its marker ``COMPLETE`` is written, after every rank's files
  are on disk (an existing folder about to be overwritten loses its marker first);
- old checkpoints are rotated only after the new one is complete, so a kill never leaves
  fewer complete checkpoints than before the save;
- ``--resume`` starts from the newest complete checkpoint, removes the half-written ones
  newer than it (naming each), or starts from the beginning when none is complete.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from transformers import Trainer

COMPLETE = "COMPLETE"  # written last into a checkpoint folder; holds its step as JSON
_NAME = re.compile(r"^checkpoint-(\d+)$")  # the Trainer's PREFIX_CHECKPOINT_DIR naming


def step_of(folder: Path) -> int:
    return int(_NAME.match(folder.name).group(1))


def checkpoint_folders(folder: Path) -> list[Path]:
    """The ``checkpoint-N`` folders under ``folder``, oldest step first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and _NAME.match(p.name)]
    return sorted(found, key=step_of)


def is_complete(checkpoint: Path) -> bool:
    return (checkpoint / COMPLETE).is_file()


def mark_complete(checkpoint: Path, step: int) -> None:
    """Write the marker atomically (a temp file renamed), so it is whole or absent."""
    temp = checkpoint / f".{COMPLETE}.tmp"
    temp.write_text(json.dumps({"step": step}) + "\n", encoding="utf-8")
    os.replace(temp, checkpoint / COMPLETE)


def rotate(folder: Path, keep: int | None) -> None:
    """Delete complete checkpoints beyond the newest ``keep`` and half-written ones older
    than the newest complete one; never the newest complete checkpoint."""
    complete = [c for c in checkpoint_folders(folder) if is_complete(c)]
    if not complete:
        return
    newest = step_of(complete[-1])
    stale = complete[: -keep] if keep else []
    stale += [c for c in checkpoint_folders(folder) if not is_complete(c) and step_of(c) < newest]
    for checkpoint in stale:
        shutil.rmtree(checkpoint, ignore_errors=True)


class CrashSafeTrainer(Trainer):
    """The Trainer with checkpoints marked complete after they are written, and rotated after
    that. Give ``TrainingArguments(save_total_limit=None)`` and ``keep`` here instead: the
    Trainer's own rotation runs before a checkpoint is known to be complete."""

    def __init__(self, *args, keep: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.keep = keep

    def _save_checkpoint(self, model, trial) -> None:
        checkpoint = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
        if self.args.should_save:
            (checkpoint / COMPLETE).unlink(missing_ok=True)  # partial until rewritten whole
        self.accelerator.wait_for_everyone()
        super()._save_checkpoint(model, trial)
        self.accelerator.wait_for_everyone()  # every rank's shards are on disk
        if self.args.should_save:
            mark_complete(checkpoint, self.state.global_step)
            rotate(checkpoint.parent, self.keep)


@dataclass
class ResumePoint:
    """Where a resumed run continues: a complete checkpoint, or the beginning."""

    folder: Path  # the checkpoints folder
    checkpoint: Path | None = None  # None: from the beginning
    step: int = 0
    max_steps: int | None = None
    skipped: list[Path] = field(default_factory=list)  # half-written, newer than checkpoint

    @property
    def finished(self) -> bool:
        """The checkpoint of the last step: only the final save is left to do."""
        return self.checkpoint is not None and self.step >= (self.max_steps or 0) > 0

    def message(self) -> str:
        """The one line a resumed run prints."""
        if self.checkpoint is None:
            why = "no complete checkpoint" if self.skipped else "no checkpoint"
            return f"{why} in {self.folder}: starting from the beginning"
        line = f"resuming from {self.checkpoint.name} (step {self.step} of {self.max_steps})"
        if self.finished:
            line += ": training had finished, redoing the final save"
        return line

    def warnings(self) -> list[str]:
        return [f"warning: {c} is half-written (no {COMPLETE} marker): skipped and removed"
                for c in self.skipped]


def find_resume_point(folder: Path) -> ResumePoint:
    """The newest complete checkpoint under ``folder`` and the half-written ones after it."""
    skipped = []
    for checkpoint in reversed(checkpoint_folders(folder)):
        if not is_complete(checkpoint):
            skipped.append(checkpoint)
            continue
        state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
        return ResumePoint(folder, checkpoint, state["global_step"], state["max_steps"], skipped)
    return ResumePoint(folder, skipped=skipped)


def remove_skipped(point: ResumePoint) -> None:
    """Delete the half-written checkpoints: the resumed run writes those steps afresh."""
    for checkpoint in point.skipped:
        shutil.rmtree(checkpoint, ignore_errors=True)
