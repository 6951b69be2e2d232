"""Hyperparameter sweeps (Optuna) and experiment tracking (the Trainer's report_to)."""

from __future__ import annotations

import csv

import optuna
import pytest
import yaml
from conftest import tiny_train_config

from llavac.cli import main
from llavac.data.synthetic import write_synthetic_release
from llavac.studies.sweep import load_space
from llavac.train import train


@pytest.fixture(scope="module")
def small_release(tmp_path_factory):
    return write_synthetic_release(tmp_path_factory.mktemp("small"), n=90, seed=1)


def _events(folder):
    return list(folder.glob("**/events.out.tfevents.*"))


def test_report_to_tensorboard_leaves_event_files_in_the_run_folder(small_release, tmp_path):
    run = train(tiny_train_config(small_release, tmp_path / "run", "train.max_steps=3",
                                  "train.logging_steps=1", "train.report_to=tensorboard"))
    assert _events(run)


def test_report_to_is_checked():
    with pytest.raises(ValueError, match="train.report_to: expected one of none, tensorboard"):
        tiny_train_config("x", "y", "train.report_to=comet")


@pytest.mark.slow  # an Optuna study of trainings, then a retraining
def test_sweep_continues_its_study_and_best_yaml_retrains(small_release, tmp_path, capsys):
    out = tmp_path / "sweep"
    command = ["sweep", "--config", "tiny_synthetic", "--data", str(small_release),
               "--output", str(out), "train.max_steps=4", "train.progress=false",
               "train.report_to=tensorboard"]
    assert main([*command, "--trials", "2"]) == 0
    assert main([*command, "--trials", "3", "--resume"]) == 0
    study = optuna.load_study(study_name="llavac", storage=f"sqlite:///{out / 'study.db'}")
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert [t.number for t in complete] == [0, 1, 2]
    assert len({t.params["train.lr"] for t in complete}) == 3  # TPE sampled the space
    with (out / "trials.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 3
    assert (out / "history.png").stat().st_size > 0
    for number in range(3):  # each trial validated (never tested) and logged
        trial = out / "trials" / f"trial-{number}"
        assert yaml.safe_load((trial / "eval" / "config.yaml").read_text())["eval"]["part"] \
            == "validation"
        assert _events(trial / "train")
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["train"]["lr"] == study.best_trial.params["train.lr"]
    assert main(["train", "--config", str(out / "best.yaml"),
                 f"train.output={tmp_path / 'retrained'}"]) == 0
    assert (tmp_path / "retrained" / "manifest.json").is_file()
    assert "best value" in capsys.readouterr().out


def test_sweep_needs_a_validation_part(tmp_path, capsys):
    own = tmp_path / "own.jsonl"
    own.write_text('{"id": "1", "text": "t", "image": "x.jpg", "multimodal_label": "neutral"}\n')
    assert main(["sweep", "--data", str(own), "--procedure", "none", "--output",
                 str(tmp_path / "s"), "--model", "tiny-llava"]) == 2
    assert "validation part" in capsys.readouterr().err


@pytest.mark.parametrize("metric", ["ece", "train_seconds", "nope"])
def test_the_swept_metric_is_a_resampled_score_of_the_metrics_table(metric, small_release,
                                                                     tmp_path, capsys):
    """ECE is lower-is-better, training time no score of the validation part: refused, with
    the choices METRICS gives, before the study folder exists."""
    out = tmp_path / "s"
    assert main(["sweep", "--data", str(small_release), "--procedure", "random811",
                 "--model", "tiny-llava", "--output", str(out), "--metric", metric]) == 2
    assert ("sweep.metric: expected one of accuracy, weighted_f1, macro_f1, got "
            f"'{metric}'") in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("space, message", [
    ({"train.nope": {"type": "float", "low": 0, "high": 1}}, "not a training config key"),
    ({"train.lr": {"type": "float", "low": 1.0e-5}}, "expected"),
    ({"train.lr": [1, 2]}, "expected"),
])
def test_bad_search_space_names_the_key(tmp_path, space, message):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    with pytest.raises(ValueError, match=message):
        load_space(path)


def test_median_pruning_on_the_training_loss_stops_a_worse_trial():
    from transformers import TrainerState

    from llavac.studies.sweep import PruneOnLoss

    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(
        n_startup_trials=1, n_warmup_steps=0))
    step = TrainerState(global_step=5)
    good = study.ask()
    PruneOnLoss(good).on_log(None, step, None, logs={"loss": 0.2})
    study.tell(good, 0.9)
    worse = study.ask()
    PruneOnLoss(worse).on_log(None, step, None, logs={"learning_rate": 1e-3})  # no loss: no-op
    with pytest.raises(optuna.TrialPruned, match="training loss 0.9000 at step 5"):
        PruneOnLoss(worse).on_log(None, step, None, logs={"loss": 0.9})


def test_a_study_continues_only_with_its_own_settings(tmp_path):
    """What a rerun may do with the study in its folder: its config.yaml is compared with
    the rerun's settings, defaults filled in, before anything is written."""

    from llavac.args import SweepConfig
    from llavac.config import load_config, save_config
    from llavac.studies.sweep import claim_study

    config = load_config(SweepConfig, "tiny_synthetic", [f"sweep.output={tmp_path}"])
    assert claim_study(config) is False  # no study yet
    save_config(config, tmp_path / "config.yaml")

    def rerun(*overrides: str) -> bool:
        return claim_study(load_config(SweepConfig, "tiny_synthetic",
                                       [f"sweep.output={tmp_path}", *overrides]))

    with pytest.raises(ValueError, match="give --resume to continue it"):
        rerun()
    assert rerun("sweep.resume=true", "sweep.trials=50") is False  # more trials: the same study
    assert rerun("sweep.resume=true", "train.num_workers=2") is False  # not a result setting
    with pytest.raises(ValueError, match=r"data.procedure is 'qmf' here but 'random811'"):
        rerun("sweep.resume=true", "data.procedure=qmf")  # another validation set
    assert rerun("train.lr=1e-3", "sweep.overwrite=true") is True  # replaced once it holds
    saved = tmp_path / "config.yaml"
    assert "overwrite" not in saved.read_text() and "resume" not in saved.read_text()
