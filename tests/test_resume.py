"""Training survives a SIGKILL at any moment, on the paper's training path.

Every run here uses the defaults (bf16, gradient checkpointing, LoRA on the language model,
the projector at its own learning rate) on the tiny LLaVA; only the length, batch and rates
are set. A subprocess is killed while a checkpoint is being written, between checkpoints, or
during the final save; ``train(resume=True)`` must then continue from the newest complete
checkpoint, run only the remaining steps and end with the uninterrupted run's adapter.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from llavac.args import TrainConfig
from llavac.config import load_config
from llavac.train import train
from llavac.train.checkpoints import COMPLETE, checkpoint_folders, is_complete

REPO = Path(__file__).resolve().parents[1]
MAX_STEPS, SAVE_STEPS = 8, 3  # checkpoints at steps 3, 6 and 8 (the last step always saves)


def paper_config(data: Path, output: Path, *overrides: str) -> TrainConfig:
    """The default (paper) training config on the tiny LLaVA: nothing switched off."""
    return load_config(TrainConfig, None, [
        "model.name=tiny-llava", f"data.path={data}", "data.procedure=random811",
        f"train.output={output}", "train.progress=false", f"train.max_steps={MAX_STEPS}",
        f"train.save_steps={SAVE_STEPS}", "train.batch_size=4", "train.lr=2e-3",
        "lora.projector_lr=1e-3", "train.save_total_limit=1", *overrides,
    ])


class StepCounter(TrainerCallback):
    """The optimizer steps this process ran."""

    def __init__(self):
        self.steps = []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


# Runs in a subprocess and SIGKILLs itself at one moment: `save` at the start of writing
# the optimizer of checkpoint-<step> (its folder and adapter already exist, the rest not);
# `step` at the end of optimizer step <step>; `final` inside the final save, after the adapter
# and processor are written and before the manifest.
KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from transformers import Trainer, TrainerCallback
    import llavac.train.recipe as recipe
    from test_resume import paper_config

    data, output, moment, step = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, as an OOM kill or a preemption

    class KillAtStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if moment == "step" and state.global_step == step:
                die()

    original = Trainer._save_optimizer_and_scheduler
    def save_then_die(self, output_dir):
        if moment == "save" and self.state.global_step == step:
            die()
        original(self, output_dir)
    Trainer._save_optimizer_and_scheduler = save_then_die
    if moment == "final":
        recipe.plot_loss = die
    recipe.train(paper_config(data, output), callbacks=[KillAtStep()])
""")


def kill_run(data: Path, output: Path, moment: str, step: int = 0) -> None:
    script = output.parent / "killed_run.py"
    script.write_text(KILLED_RUN.format(tests=str(REPO / "tests")))
    result = subprocess.run([sys.executable, str(script), str(data), str(output), moment,
                             str(step)], capture_output=True, text=True, timeout=600)
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]


def adapter(output: Path) -> dict[str, torch.Tensor]:
    return load_file(output / "adapter" / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def reference(synthetic_release, tmp_path_factory):
    """The uninterrupted run and the steps it ran."""
    counter = StepCounter()
    output = train_quietly(paper_config(synthetic_release,
                                        tmp_path_factory.mktemp("ref") / "run"),
                           callbacks=[counter])
    assert counter.steps == list(range(1, MAX_STEPS + 1))
    return output


def resume(data: Path, output: Path, capsys) -> tuple[list[int], str]:
    """Resume in this process: the steps it ran and what it printed."""
    counter = StepCounter()
    capsys.readouterr()
    train_quietly(paper_config(data, output), resume=True, callbacks=[counter])
    return counter.steps, capsys.readouterr().err  # the llavac logger writes to stderr


def train_quietly(config: TrainConfig, **kwargs) -> Path:
    """``train``, asserting that it raised no deprecation warning (transformers and peft
    internals included): a user cannot act on them."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        output = train(config, **kwargs)
    deprecations = [f"{w.filename}:{w.lineno}: {w.message}" for w in caught
                    if issubclass(w.category, (FutureWarning, DeprecationWarning))]
    assert not deprecations
    return output


def assert_same_adapter(output: Path, reference: Path) -> None:
    expected, actual = adapter(reference), adapter(output)
    assert expected.keys() == actual.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], atol=1e-5, rtol=0)


@pytest.mark.slow  # a CLI subprocess, a kill
def test_kill_while_a_checkpoint_is_written(synthetic_release, reference, tmp_path, capsys):
    output = tmp_path / "run"
    kill_run(synthetic_release, output, "save", step=6)
    checkpoints = output / "checkpoints"
    # checkpoint-6 exists with its adapter but no optimizer; checkpoint-3 was kept because
    # checkpoint-6 never became complete (save_total_limit=1).
    assert (checkpoints / "checkpoint-6" / "adapter_model.safetensors").is_file()
    assert not is_complete(checkpoints / "checkpoint-6")
    assert [c.name for c in checkpoint_folders(checkpoints) if is_complete(c)] == ["checkpoint-3"]

    steps, out = resume(synthetic_release, output, capsys)
    assert f"{checkpoints / 'checkpoint-6'} is half-written" in out
    assert "resuming from checkpoint-3 (step 3 of 8)" in out
    assert steps == [4, 5, 6, 7, 8]
    assert_same_adapter(output, reference)
    assert [c.name for c in checkpoint_folders(checkpoints)] == ["checkpoint-8"]


@pytest.mark.slow  # a CLI subprocess, a kill
def test_kill_at_the_first_checkpoint_starts_from_the_beginning(synthetic_release, reference,
                                                                tmp_path, capsys):
    output = tmp_path / "run"
    kill_run(synthetic_release, output, "save", step=3)
    steps, out = resume(synthetic_release, output, capsys)
    assert "no complete checkpoint in" in out and "starting from the beginning" in out
    assert steps == list(range(1, MAX_STEPS + 1))
    assert_same_adapter(output, reference)


@pytest.mark.slow  # a CLI subprocess, a kill
def test_kill_between_checkpoints(synthetic_release, reference, tmp_path, capsys):
    output = tmp_path / "run"
    kill_run(synthetic_release, output, "step", step=7)
    assert not (output / "adapter").exists()
    steps, out = resume(synthetic_release, output, capsys)
    assert out.splitlines()[0] == "resuming from checkpoint-6 (step 6 of 8)"
    assert steps == [7, 8]
    assert_same_adapter(output, reference)
    log = [json.loads(line)["step"] for line in (output / "log.jsonl").read_text().splitlines()]
    assert log == list(range(1, MAX_STEPS + 1))  # one line per step of the weights' history


@pytest.mark.slow  # a CLI subprocess, a kill
def test_kill_during_the_final_save(synthetic_release, reference, tmp_path, capsys):
    output = tmp_path / "run"
    kill_run(synthetic_release, output, "final")
    assert (output / "adapter").is_dir() and not (output / "manifest.json").exists()
    steps, out = resume(synthetic_release, output, capsys)
    assert "resuming from checkpoint-8 (step 8 of 8): training had finished" in out
    assert steps == []
    assert (output / "manifest.json").is_file() and (output / "loss.png").is_file()
    assert_same_adapter(output, reference)
    # A finished run is left as it is.
    steps, out = resume(synthetic_release, output, capsys)
    assert steps == [] and "nothing to resume" in out


def test_a_rewritten_checkpoint_is_partial_until_complete(tmp_path):
    """The marker of a folder about to be overwritten goes first."""
    from llavac.train.checkpoints import mark_complete, rotate

    folders = [tmp_path / f"checkpoint-{step}" for step in (2, 4, 6, 8)]
    for folder in folders:
        folder.mkdir()
    for folder in folders[:3]:
        mark_complete(folder, int(folder.name.split("-")[1]))
    assert json.loads((folders[0] / COMPLETE).read_text()) == {"step": 2, "config": None}
    rotate(tmp_path, keep=2)  # the half-written checkpoint-8 does not count
    assert [f.name for f in checkpoint_folders(tmp_path)] == ["checkpoint-4", "checkpoint-6",
                                                             "checkpoint-8"]
    (folders[1] / COMPLETE).unlink()
    rotate(tmp_path, keep=1)  # a half-written one older than the newest complete is removed
    assert [f.name for f in checkpoint_folders(tmp_path)] == ["checkpoint-6", "checkpoint-8"]


def test_the_paper_path_learns_trains_the_right_parameters_and_predicts(
        synthetic_release, reference):
    """bf16 + gradient checkpointing + LoRA + projector at its own lr, as configured by
    default: the loss falls, the adapter holds exactly the LoRA matrices and the projector,
    and it loads and predicts without a deprecation warning."""
    config = yaml_config(reference)
    assert (config["train"]["bf16"], config["train"]["gradient_checkpointing"],
            config["train"]["tuning"]) == (True, True, "lora")
    losses = [json.loads(line)["loss"] for line in
              (reference / "log.jsonl").read_text().splitlines()]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5, losses

    from llavac.data import load_split
    from llavac.predict import Classifier

    records = load_split(synthetic_release, procedure="random811").test[:4]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        classifier = Classifier.from_pretrained(adapter=reference, dtype="float32")
        predictions = classifier.predict(records, "score", progress=False)
    assert [p.id for p in predictions] == [r.id for r in records]
    assert all(p.multimodal_label is not None for p in predictions)


def yaml_config(run: Path) -> dict:
    import yaml

    return yaml.safe_load((run / "config.yaml").read_text())
