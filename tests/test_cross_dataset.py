"""Cross-dataset experiments: train on one source, test on another (eval_data)."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from llavac.args import DataArgs, ExperimentConfig
from llavac.config import load_config
from llavac.data import load_split
from llavac.data.synthetic import write_synthetic_release
from llavac.studies.experiment import run_experiment


def test_synthetic_multiple_layout_reads_with_majority_labels(tmp_path):
    single = load_split(write_synthetic_release(tmp_path / "s", n=60, seed=2), "none")
    multiple = load_split(write_synthetic_release(tmp_path / "m", n=60, seed=2, annotators=3),
                          "none")
    assert multiple.manifest["kind"] == "mvsa_multiple"
    assert [(r.id, r.text_label, r.image_label) for r in multiple.all] == \
        [(r.id, r.text_label, r.image_label) for r in single.all]


def test_single_to_multiple_experiment_names_both_sources(tmp_path, capsys):
    single = write_synthetic_release(tmp_path / "MVSA_Single_synth", n=120, seed=0)
    multiple = write_synthetic_release(tmp_path / "MVSA_Multiple_synth", n=150, seed=5,
                                       annotators=3)
    config = load_config(ExperimentConfig, "tiny_experiment", [
        f"data.path={single}", f"eval_data.path={multiple}", "experiment.procedures=random811",
        f"experiment.output={tmp_path / 'exp'}", "train.max_steps=3", "experiment.methods=score",
    ])
    run_experiment(config)
    with (tmp_path / "exp" / "results.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    assert row["train_data"] == "MVSA_Single_synth (random811)"
    assert row["test_data"] == "MVSA_Multiple_synth (random811)"
    table = (tmp_path / "exp" / "results.md").read_text()
    assert "| train data | test data |" in table and "MVSA_Multiple_synth (random811)" in table
    run = tmp_path / "exp" / "runs" / "random811-seed0"
    tested = yaml.safe_load((run / "eval" / "score" / "config.yaml").read_text())["data"]
    assert tested["path"] == str(multiple)
    expected = len(load_split(multiple, "random811").test)
    assert json.loads((run / "eval" / "score" / "metrics.json").read_text())["records"] == expected
    capsys.readouterr()
    run_experiment(config)  # same settings: reused, not re-evaluated
    assert "skipped" in capsys.readouterr().err


def test_eval_data_without_path_is_the_training_data():
    from llavac.studies.experiment import eval_data

    config = ExperimentConfig(data=DataArgs(path="a", procedure="qmf"))
    assert eval_data(config, config.data) is config.data
    config.eval_data = DataArgs(path="b")
    assert eval_data(config, config.data) == DataArgs(path="b", procedure="qmf")


def test_bad_eval_data_names_its_key(tmp_path):
    with pytest.raises(ValueError, match="data.fold"):
        load_config(ExperimentConfig, None, ["eval_data.fold=11"])
    # Procedure names are the registry's: checked as the runs are planned, before anything
    # is written.
    output = tmp_path / "exp"
    config = load_config(ExperimentConfig, None, ["eval_data.procedure=bogus",
                                                  f"experiment.output={output}"])
    with pytest.raises(ValueError, match="eval_data.procedure: unknown procedure 'bogus'"):
        run_experiment(config)
    assert not output.exists()
