"""A training run's folder belongs to that run: another run's checkpoints are never resumed.

The sequence a user met: a run is interrupted with complete checkpoints; the same command
without a flag must not silently restart over them; ``--overwrite`` with other settings must
leave nothing of the old run behind; ``--resume`` must continue the new run's own checkpoint,
refuse a leftover of another config, and refuse a changed setting by its key.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from conftest import tiny_train_config
from transformers import TrainerCallback

from llavac.cli import main
from llavac.train import train
from llavac.train.checkpoints import COMPLETE, checkpoint_folders, is_complete, run_config_hash
from llavac.train.recipe import with_input_defaults

SHORT = ("train.max_steps=6", "train.save_steps=2", "train.save_total_limit=2",
         "train.batch_size=4", "train.logging_steps=1")
OTHER_LR = "train.lr=1e-3"  # run B's only difference from run A


class Interrupt(TrainerCallback):
    """Stops the run by an exception at the end of step ``step``, as a crash would; the
    checkpoints written before it are complete."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt(f"interrupted at step {self.step}")


class Steps(TrainerCallback):
    def __init__(self):
        self.steps = []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


def interrupted(config, step: int, **kwargs) -> None:
    with pytest.raises(KeyboardInterrupt):
        train(config, callbacks=[Interrupt(step)], **kwargs)


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run_hash(config) -> str:
    """The hash a run's checkpoints carry (of its config with the input defaults filled)."""
    return run_config_hash(with_input_defaults(config))


def complete(run: Path) -> list[str]:
    return [c.name for c in checkpoint_folders(run / "checkpoints") if is_complete(c)]


def cli_refuses(run: Path, argv: list[str], capsys) -> str:
    """``llavac train ...`` exits 2 with one error line and leaves ``run`` byte-identical."""
    before = snapshot(run)
    capsys.readouterr()
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("llavac: error: "), lines
    assert snapshot(run) == before
    return lines[0]


def test_leftover_checkpoints_of_another_run_are_never_resumed(synthetic_release, tmp_path,
                                                               capsys):
    run = tmp_path / "run"
    argv = ["train", "--config", "tiny_synthetic", "--data", str(synthetic_release),
            "--output", str(run), *SHORT]
    run_a = tiny_train_config(synthetic_release, run, *SHORT)
    interrupted(run_a, step=5)  # run A: complete checkpoints 2 and 4, no manifest
    assert complete(run) == ["checkpoint-2", "checkpoint-4"]
    hash_a = run_hash(run_a)
    a_checkpoint = tmp_path / "a-checkpoint-4"
    shutil.copytree(run / "checkpoints" / "checkpoint-4", a_checkpoint)

    # The same command again, without a flag: refused, naming both ways out.
    error = cli_refuses(run, argv, capsys)
    assert "interrupted training run" in error and "checkpoint-4" in error
    assert "--resume" in error and "--overwrite" in error
    # A changed setting on resume: refused by its key.
    error = cli_refuses(run, [*argv, "--resume", OTHER_LR], capsys)
    assert "train.lr is 0.001 here but 0.003" in error
    assert "--resume" in cli_refuses(run, [*argv, "--resume", "--overwrite"], capsys)

    # Run B (another lr) with --overwrite: nothing of run A is left to resume or rotate in.
    run_b = tiny_train_config(synthetic_release, run, *SHORT, OTHER_LR)
    interrupted(run_b, step=3, overwrite=True)
    assert complete(run) == ["checkpoint-2"]
    marker = json.loads((run / "checkpoints" / "checkpoint-2" / COMPLETE).read_text())
    assert marker == {"step": 2, "config": run_hash(run_b)} and hash_a != marker["config"]

    # A leftover of run A beside it (newer, complete): resume refuses it, naming both configs.
    shutil.copytree(a_checkpoint, run / "checkpoints" / "checkpoint-4")
    error = cli_refuses(run, [*argv, "--resume", OTHER_LR], capsys)
    assert "checkpoint-4 was written by a run of config" in error
    assert hash_a in error and run_hash(run_b) in error
    shutil.rmtree(run / "checkpoints" / "checkpoint-4")

    # Run B resumes from its own checkpoint; settings that do not change the results may.
    steps = Steps()
    capsys.readouterr()
    train(tiny_train_config(synthetic_release, run, *SHORT, OTHER_LR, "train.logging_steps=2",
                            "train.num_workers=0"), resume=True, callbacks=[steps])
    assert "resuming from checkpoint-2 (step 2 of 6)" in capsys.readouterr().err
    assert steps.steps == [3, 4, 5, 6]
    assert (run / "manifest.json").is_file()


def test_a_finished_run_resumes_as_nothing_to_do_and_refuses_a_changed_setting(
        synthetic_release, tmp_path, capsys):
    run = tmp_path / "run"
    config = tiny_train_config(synthetic_release, run, "train.max_steps=1", "train.batch_size=4")
    train(config)
    argv = ["train", "--config", "tiny_synthetic", "--data", str(synthetic_release),
            "--output", str(run), "train.max_steps=1", "train.batch_size=4"]
    error = cli_refuses(run, [*argv, "--resume", "train.seed=3"], capsys)
    assert "train.seed is 3 here but 0" in error
    error = cli_refuses(run, argv, capsys)
    assert "finished result" in error and "--overwrite" in error
    before = snapshot(run)
    assert main([*argv, "--resume", "train.progress=true"]) == 0
    assert "nothing to resume" in capsys.readouterr().err
    assert snapshot(run) == before


def test_overwrite_leaves_a_folder_that_holds_no_run_alone(synthetic_release, tmp_path):
    """--overwrite replaces a run; files that are not a run's are never deleted."""
    from llavac.train.claim import claim_run

    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "mine.txt").write_text("not a training run")
    config = tiny_train_config(synthetic_release, folder)
    assert claim_run(folder, config, resume=False, overwrite=True) == "new"
    assert claim_run(folder, config, resume=True, overwrite=False) == "new"
    assert (folder / "mine.txt").read_text() == "not a training run"


def test_a_run_refused_by_its_data_writes_nothing(synthetic_release, tmp_path):
    """config.yaml is written once the data and the model are loaded: a run that fails
    before leaves no folder to be refused as interrupted next time."""
    image = next((synthetic_release / "data").glob("*.jpg"))
    unlabelled = tmp_path / "pairs.jsonl"
    unlabelled.write_text(json.dumps({"id": "1", "image": str(image), "text": "hi"}) + "\n")
    run = tmp_path / "run"
    config = tiny_train_config(unlabelled, run, "data.procedure=none")
    with pytest.raises(ValueError, match="lack a label"):
        train(config)
    assert not run.exists()
