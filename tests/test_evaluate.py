"""Evaluation end to end: the output folder, the counting rules, the config as a preset.
(The real QMF test split through the tiny model, with its report.html: test_report.py.)"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from llavac.args import ClassifierArgs, DataArgs, EvalArgs, EvalConfig
from llavac.config import load_config
from llavac.evaluation import evaluate
from llavac.predict import Classifier

SLOTS = ("text", "image", "multimodal")


@pytest.fixture(scope="module")
def tiny_llava():
    return Classifier.from_pretrained("tiny-llava", dtype="float32", device="cpu")


def _config(tmp_path, data: DataArgs, **fields) -> EvalConfig:
    return EvalConfig(model=ClassifierArgs(name="tiny-llava", dtype="float32"), data=data,
                      eval=EvalArgs(output=str(tmp_path / "eval"), progress=False, **fields))


def test_zero_shot_generate_counts_unparseable_answers_as_wrong(
        synthetic_release, tiny_llava, tmp_path):
    config = _config(tmp_path, DataArgs(path=str(synthetic_release), procedure="random811"),
                     method="generate")
    metrics = evaluate(config, tiny_llava)
    n = metrics["records"]
    assert metrics["unparseable"] > 0  # an untrained model does not answer in the format
    for slot in SLOTS:
        values = metrics["slots"][slot]
        assert values["n"] == n and values["unparseable"] == metrics["unparseable"]
        # Every unparseable answer is a miss of its gold class, not a dropped record.
        matrix = values["confusion_matrix"]
        assert sum(map(sum, matrix["matrix"])) == n
        assert sum(row[-1] for row in matrix["matrix"]) == values["unparseable"]

    output = tmp_path / "eval"
    names = {path.name for path in output.iterdir()}
    assert {"metrics.json", "predictions.jsonl", "summary.md", "config.yaml",
            "manifest.json", "versions.json"} <= names
    assert {f"confusion_{slot}.png" for slot in SLOTS} <= names
    assert json.loads((output / "metrics.json").read_text()) == metrics
    predictions = [json.loads(line) for line in
                   (output / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == n and all(p["answer"] for p in predictions)  # words, kept
    assert "unparseable answers" in (output / "summary.md").read_text()
    # The saved config is a preset that reproduces this evaluation.
    assert load_config(EvalConfig, output / "config.yaml") == config


def test_records_without_gold_are_excluded_from_that_slot(tmp_path, tiny_llava,
                                                          synthetic_release):
    """Own data with only the multimodal label: text and image metrics are not reported."""
    from llavac.data import load_split

    records = load_split(synthetic_release, procedure="random811").test[:5]
    rows = [{"id": r.id, "image": r.image, "text": r.text,
             "multimodal_label": r.multimodal_label} for r in records]
    rows.append({"id": "nolabel", "image": records[0].image, "text": "no label here"})
    path = tmp_path / "own.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    metrics = evaluate(_config(tmp_path, DataArgs(path=str(path))), tiny_llava)
    assert metrics["records"] == 6
    assert list(metrics["slots"]) == ["multimodal"]
    multimodal = metrics["slots"]["multimodal"]
    assert (multimodal["n"], multimodal["no_gold"]) == (5, 1)
    assert {p.name for p in (tmp_path / "eval").glob("*.png")} == {
        "confusion_multimodal.png", "reliability_multimodal.png", "coverage_multimodal.png"}


def test_unknown_part_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="eval.part: expected one of train, validation"):
        _config(tmp_path, DataArgs(path="unused"), part="dev")


def test_yaml_preset(tmp_path):
    preset = tmp_path / "eval.yaml"
    preset.write_text("model:\n  adapter: runs/x\ndata:\n  path: data/mvsa_single\n"
                      "  procedure: qmf\neval:\n  method: generate\n")
    config = load_config(EvalConfig, preset, ["eval.batch_size=4"])
    assert (config.model.adapter, config.data.procedure, config.eval.method,
            config.eval.batch_size) == ("runs/x", "qmf", "generate", 4)
    assert config.model.name is None  # taken from the adapter's run config at load time


PROVENANCE = ("train_seed", "split_seed", "config_hash", "procedure", "fold", "part", "model",
              "adapter", "method", "prompt", "llavac_version", "git_commit", "torch_version",
              "transformers_version", "peft_version", "accelerate_version",
              "scikit-learn_version", "numpy_version")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A short training run on random811 of a small synthetic release (split seed 2, training
    seed 7) and the same split exported as a folder. Small: its train part is evaluated."""
    from conftest import tiny_train_config

    from llavac.data.export import export_split
    from llavac.data.synthetic import write_synthetic_release
    from llavac.train import train

    root = tmp_path_factory.mktemp("leak")
    release = write_synthetic_release(root / "release", n=120, seed=0)
    run = train(tiny_train_config(release, root / "run", "train.max_steps=2",
                                  "data.split_seed=2", "train.seed=7"))
    split = root / "split"
    export_split(release, "random811", seed=2, out=split)
    return run, split


def test_evaluating_a_run_on_its_training_records_is_refused(trained_run, tmp_path, capsys):
    from llavac.cli import main

    run, split = trained_run
    n_train = len((split / "train.jsonl").read_text().splitlines())
    capsys.readouterr()
    args = ["evaluate", "--adapter", str(run), "--data", str(split), "--output",
            str(tmp_path / "eval"), "eval.progress=false"]
    assert main([*args, "--part", "train"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"llavac: error: {n_train} of the {n_train} records of the train "
                            "part were trained on by")
    assert "--allow-overlap" in error and len(error.splitlines()) == 1
    assert not (tmp_path / "eval" / "metrics.json").exists()

    assert main([*args, "--part", "train", "--allow-overlap"]) == 0  # the deliberate exception
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["trained_on_overlap"] == n_train


def test_overwrite_keeps_the_earlier_result_until_the_new_one_is_made(trained_run, tmp_path,
                                                                      capsys):
    from llavac.cli import main

    run, split = trained_run
    output = tmp_path / "eval"
    args = ["evaluate", "--adapter", str(run), "--data", str(split), "--output", str(output),
            "eval.progress=false", "eval.reliance_pairs=0"]
    assert main(args) == 0
    earlier = (output / "metrics.json").read_bytes()
    # Refused once the model is loaded and the data read: the earlier result is back.
    assert main([*args, "--part", "train", "--overwrite"]) == 2
    assert "were trained on" in capsys.readouterr().err
    assert (output / "metrics.json").read_bytes() == earlier
    assert main([*args, "--part", "validation", "--overwrite"]) == 0
    assert json.loads((output / "metrics.json").read_text())["part"] == "validation"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["eval"]  # nothing left aside


def test_evaluation_on_test_carries_its_provenance(trained_run, tmp_path):
    import warnings

    run, split = trained_run
    config = EvalConfig(model=ClassifierArgs(adapter=str(run)), data=DataArgs(path=str(split)),
                        eval=EvalArgs(output=str(tmp_path / "eval"), progress=False))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # nothing from transformers' internals
        metrics = evaluate(config)
    provenance = metrics["provenance"]
    assert set(PROVENANCE) <= set(provenance)
    assert (provenance["train_seed"], provenance["split_seed"]) == (7, 2)
    assert provenance["global_batch_size"] == 8  # the tiny_synthetic preset's
    assert (provenance["procedure"], provenance["part"], provenance["method"]) == (
        "random811", "test", "score")
    assert provenance["model"] == "tiny-llava" and provenance["adapter"] == str(run)
    assert metrics["trained_on_overlap"] == 0
    for name in ("torch", "transformers", "peft", "accelerate", "scikit-learn", "numpy"):
        assert provenance[f"{name}_version"][0].isdigit(), name
    assert len(provenance["config_hash"]) == 12
    # From a checkout, the commit of the code that produced the numbers.
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).parent).stdout.strip()
    assert provenance["git_commit"] == head
    manifest = json.loads((tmp_path / "eval" / "manifest.json").read_text())
    assert manifest["model"]["adapter"] == str(run)
