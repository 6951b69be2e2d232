"""Checkpoints that survive a kill at any moment.

The Trainer writes ``checkpoint-N/`` file by file (adapter, optimizer, scheduler, RNG states,
``trainer_state.json``) and then deletes old checkpoints beyond ``save_total_limit``. A kill in
between leaves a folder that looks like a checkpoint but cannot be loaded, and the Trainer's
``get_last_checkpoint`` picks it anyway (transformers issues #35782, #35525). Here:

- a checkpoint counts only once its marker ``COMPLETE`` is written, after every rank's files
  are on disk (an existing folder about to be overwritten loses its marker first);
- old checkpoints are rotated only after the new one is complete, so a kill never leaves
  fewer complete checkpoints than before the save;
- a checkpoint's files and folder are flushed to disk before the marker, so after a power
  loss too the marker never outlives the data it vouches for;
- ``--resume`` starts from the newest complete checkpoint, removes the half-written ones
  newer than it (naming each), or starts from the beginning when none is complete.

A checkpoint belongs to its run: the marker records the hash of the run's config (the part
that decides its results, ``run_config_hash``), and a resume refuses a checkpoint written
under another config. Which folders a run may start in, continue or replace is decided in one
place, ``llavac.train.claim``.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from transformers import Trainer

from llavac.config import config_hash, to_dict
from llavac.durable import fsync_tree, write_atomic
from llavac.runs.info import results_key

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


def run_config_hash(config) -> str:
    """The hash a run's checkpoints carry: of the settings that decide its results (a change
    of ``num_workers`` or ``logging_steps`` is the same run, ``runinfo.results_key``)."""
    return config_hash(results_key(to_dict(config)))


def marker(checkpoint: Path) -> dict:
    """What ``COMPLETE`` holds: ``step`` and the run's ``config`` hash (``None`` in markers
    written before checkpoints named their run)."""
    return json.loads((checkpoint / COMPLETE).read_text(encoding="utf-8"))


def mark_complete(checkpoint: Path, step: int, run_hash: str | None = None) -> None:
    """Flush the checkpoint to disk, then write the marker atomically, so that the marker is
    whole or absent and never on disk before the files it vouches for."""
    fsync_tree(checkpoint)
    write_atomic(checkpoint / COMPLETE, json.dumps({"step": step, "config": run_hash}) + "\n")


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
    Trainer's own rotation runs before a checkpoint is known to be complete. ``run_hash``
    (``run_config_hash``) is recorded in every marker."""

    def __init__(self, *args, keep: int | None = None, run_hash: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.keep, self.run_hash = keep, run_hash

    def _save_checkpoint(self, model, trial) -> None:
        checkpoint = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
        if self.args.should_save:
            (checkpoint / COMPLETE).unlink(missing_ok=True)  # partial until rewritten whole
        self.accelerator.wait_for_everyone()
        super()._save_checkpoint(model, trial)
        self.accelerator.wait_for_everyone()  # every rank's shards are on disk
        if self.args.should_save:
            mark_complete(checkpoint, self.state.global_step, self.run_hash)
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


def find_resume_point(folder: Path, run_hash: str | None = None) -> ResumePoint:
    """The newest complete checkpoint under ``folder`` and the half-written ones after it.

    With ``run_hash``, a checkpoint whose marker names another config is refused (an older
    marker names none: the run's ``config.yaml``, compared by the claim, vouches for it).
    """
    skipped = []
    for checkpoint in reversed(checkpoint_folders(folder)):
        if not is_complete(checkpoint):
            skipped.append(checkpoint)
            continue
        written_by = marker(checkpoint).get("config")
        if run_hash is not None and written_by not in (None, run_hash):
            raise ValueError(
                f"--resume: {checkpoint} was written by a run of config {written_by}, not by "
                f"this run (config {run_hash}): it is another run's checkpoint; give "
                "--overwrite to start this run afresh")
        state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
        return ResumePoint(folder, checkpoint, state["global_step"], state["max_steps"], skipped)
    return ResumePoint(folder, skipped=skipped)


def remove_skipped(point: ResumePoint) -> None:
    """Delete the half-written checkpoints: the resumed run writes those steps afresh."""
    for checkpoint in point.skipped:
        shutil.rmtree(checkpoint, ignore_errors=True)
