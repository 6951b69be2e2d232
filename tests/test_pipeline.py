"""End to end: the demo (which is the learnability test of the tiny LLaVA), the other tiny
families learning the same task, the experiment runner on real data, and one epoch on the
real QMF train split."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time

import pytest
from conftest import tiny_train_config

from llavac.args import ClassifierArgs, DataArgs, EvalArgs, EvalConfig, ExperimentConfig
from llavac.cli import main
from llavac.config import load_config
from llavac.data import load_split
from llavac.data.synthetic import write_synthetic_release
from llavac.evaluation import evaluate
from llavac.studies.experiment import run_experiment
from llavac.train import train


@pytest.mark.slow  # the whole demo, 1,000 pairs
def test_demo_trains_a_tiny_llava_that_needs_both_modalities(tmp_path, capsys):
    """The synthetic multimodal label needs image and text (either alone: <= 5/7 = 71 %)."""
    start = time.perf_counter()
    assert main(["demo", "--output", str(tmp_path / "demo")]) == 0
    seconds = time.perf_counter() - start
    captured = capsys.readouterr()
    out, err = captured.out, captured.err
    print(f"llavac demo took {seconds:.1f} s")
    # It says, first and last, that the data is synthetic and made to be learnable.
    said = [line for line in err.splitlines() if line.strip()]
    assert said[0].startswith("Note: the demo's data is synthetic") and said[-1] == said[0]

    metrics = json.loads((tmp_path / "demo" / "eval" / "metrics.json").read_text())
    assert metrics["records"] >= 60  # a real held-out split, never seen in training
    for slot in ("text", "image", "multimodal"):
        assert metrics["slots"][slot]["accuracy"] >= 0.95, (slot, metrics["slots"][slot])
    assert "| multimodal |" in out and "Artifacts:" in err
    for path in ("release/labelResultAll.txt", "split/train.jsonl", "split/test.jsonl",
                 "split/manifest.json", "train/model/config.json", "train/config.yaml",
                 "train/log.jsonl", "train/loss.png", "eval/predictions.jsonl",
                 "eval/confusion_multimodal.png", "eval/summary.md"):
        assert (tmp_path / "demo" / path).is_file(), path
    # A second demo into the same folder is refused; --overwrite would replace it.
    assert main(["demo", "--output", str(tmp_path / "demo")]) == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.fixture(scope="module")
def demo_sized_release(tmp_path_factory):
    """The demo's 1,000 pairs: the other families need more examples than the 600 of
    ``synthetic_release`` (Gemma3 reached 78 % on those, 100 % on these)."""
    return write_synthetic_release(tmp_path_factory.mktemp("demo_sized"), n=1000)


def _train_and_evaluate(name: str, release, tmp_path) -> dict:
    """``name`` trained 8 epochs on ``release`` (random811), its metrics on the test part."""
    run = train(tiny_train_config(release, tmp_path / "run", f"model.name={name}",
                                  "train.epochs=8"))
    return evaluate(EvalConfig(
        model=ClassifierArgs(adapter=str(run)),
        data=DataArgs(path=str(release), procedure="random811"),
        eval=EvalArgs(output=str(tmp_path / "eval"), progress=False)))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny-llava-next", "tiny-gemma3", "tiny-idefics3",
                                  "tiny-smolvlm", "tiny-qwen2-vl", "tiny-qwen2.5-vl"])
def test_other_tiny_families_learn_the_task(name, demo_sized_release, tmp_path):
    metrics = _train_and_evaluate(name, demo_sized_release, tmp_path)
    assert metrics["slots"]["multimodal"]["accuracy"] >= 0.9, metrics["slots"]["multimodal"]


@pytest.mark.slow
def test_tiny_paligemma_learns_the_image_label(demo_sized_release, tmp_path):
    """Known limitation: the tiny PaliGemma learns the image label, but its text keyword only
    after a plateau whose length depends on the seed, so the multimodal label is not pinned.

    What is known: this is optimisation, not masking. The tiny PaliGemma learns the image
    label first and the text keyword only after a seed-dependent plateau; over 6 seeds at
    8 epochs its text accuracy ranged 30-100 %. Seen again here (8 epochs, 1,000 pairs):
    seed 0 text 0.45 / image 1.00 / multimodal 0.76, seed 1 0.28 / 0.97 / 0.67, seed 2
    0.47 / 0.99 / 0.73. The prefix-LM masks (prompt bidirectional, answer causal as the
    processor's ``suffix=``), the prompt and the positions (from 1) were checked, and the
    scorer matches the suffix forward pass (tests/test_predict.py). A strict xfail on the
    multimodal accuracy would hang on where one seed's plateau ends on one machine, so this
    test asserts what holds for every seed: the image slot is learnt, and the multimodal
    label beats always answering the most common one.
    """
    metrics = _train_and_evaluate("tiny-paligemma", demo_sized_release, tmp_path)["slots"]
    assert metrics["image"]["accuracy"] >= 0.9, metrics["image"]
    gold = [r.multimodal_label for r in load_split(demo_sized_release, "random811").test]
    majority = max(map(gold.count, set(gold))) / len(gold)
    assert metrics["multimodal"]["accuracy"] > majority + 0.1, (metrics["multimodal"], majority)


@pytest.mark.slow  # nine real-data trainings and evaluations
def test_experiment_over_two_cheema_folds_and_qmf_is_resumable(shared_data, tmp_path, capsys):
    config = load_config(ExperimentConfig, "tiny_experiment", [
        f"data.path={shared_data / 'mvsa_single'}", f"experiment.output={tmp_path / 'exp'}",
    ])
    output = run_experiment(config)
    rows = list(csv.DictReader((output / "results.csv").open()))
    assert [(r["procedure"], r["fold"], r["method"]) for r in rows] == [
        (procedure, fold, method) for procedure, fold in [("cheema10", "1"), ("cheema10", "2"),
                                                          ("qmf", "")]
        for method in ("generate", "score")]
    for row in rows:  # each row's accuracy, recounted from its run's predictions and gold
        split = load_split(shared_data / "mvsa_single", row["procedure"],
                           int(row["fold"]) if row["fold"] else None)
        gold = {r.id: r.multimodal_label for r in split.test}
        predictions = (output / "runs" / row["run"] / "eval" / row["method"]
                       / "predictions.jsonl").read_text()
        hits = [gold[p["id"]] == p["multimodal_label"]
                for p in map(json.loads, predictions.splitlines())]
        assert len(hits) == len(gold) and row["config_hash"]
        assert float(row["accuracy"]) == pytest.approx(sum(hits) / len(hits))
    table = (output / "results.md").read_text()
    assert "P1: Cheema et al. 10 folds" in table and "76.24 | 76.36" in table
    assert "P3: the QMF split" in table and "85.36 | 85.06" in table
    for method in ("generate", "score"):
        qmf_eval = json.loads((output / "runs" / "qmf-seed0" / "eval" / method /
                               "metrics.json").read_text())
        assert qmf_eval["records"] == 519 and qmf_eval["trained_on_overlap"] == 0

    stamps = {p: p.stat().st_mtime_ns for p in (output / "runs").rglob("metrics.json")}
    capsys.readouterr()
    run_experiment(config)
    out = capsys.readouterr().err  # progress goes to the llavac logger, on stderr
    assert out.count("done before") == 3 and "training" not in out
    assert stamps == {p: p.stat().st_mtime_ns for p in (output / "runs").rglob("metrics.json")}
    assert len(stamps) == 6  # three runs, two methods


@pytest.mark.slow
def test_one_epoch_on_the_real_qmf_train_split(shared_data, tmp_path):
    start = time.perf_counter()
    run = train(tiny_train_config(shared_data / "mvsa_single", tmp_path / "run",
                                  "data.procedure=qmf", "train.epochs=1", "train.tuning=lora"))
    manifest = json.loads((run / "manifest.json").read_text())
    print(f"one epoch on {manifest['train_records']} real pairs: "
          f"{time.perf_counter() - start:.0f} s")
    assert manifest["train_records"] == 1555
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 195 or log[-1]["epoch"] >= 0.95


@pytest.mark.slow  # six trainings and evaluations
def test_experiment_reuses_only_runs_of_the_same_settings(synthetic_release, tmp_path, capsys,
                                                          monkeypatch):
    output = tmp_path / "exp"
    base = [f"data.path={synthetic_release}", f"experiment.output={output}",
            "experiment.procedures=random811", "train.max_steps=2", "train.logging_steps=1"]
    run_experiment(load_config(ExperimentConfig, "tiny_experiment", base))
    first = (output / "results.csv").read_text()
    check_both_methods_and_provenance(output)

    capsys.readouterr()  # settings that do not change results do not retrain
    run_experiment(load_config(ExperimentConfig, "tiny_experiment",
                               [*base, "train.num_workers=1", "train.progress=true"]))
    assert "done before" in capsys.readouterr().err
    assert (output / "results.csv").read_text() == first

    # Another llavac version may give other numbers: re-evaluated (the adapter is reused).
    monkeypatch.setattr("llavac.runs.info.__version__", "99.0")
    run_experiment(load_config(ExperimentConfig, "tiny_experiment", base))
    out = capsys.readouterr().err
    assert "done before" not in out and ": evaluating" in out and ": training" not in out
    monkeypatch.undo()

    # Another learning rate: the old run's adapter and checkpoints are not reused.
    run_experiment(load_config(ExperimentConfig, "tiny_experiment", [*base, "train.lr=1e-3"]))
    out = capsys.readouterr().err
    assert "training" in out and "done before" not in out
    train_folder = output / "runs" / "random811-seed0" / "train"
    assert load_config(ExperimentConfig, train_folder / "config.yaml").train.lr == 1e-3
    steps = [json.loads(line)["step"] for line in (train_folder / "log.jsonl").open()]
    assert steps == [1, 2]
    rows = list(csv.DictReader((output / "results.csv").open()))
    assert len(rows) == 2 and rows[0]["config_hash"] not in first

    # A run that died while saving (no manifest yet, no run.json) is trained again.
    (train_folder / "manifest.json").unlink()
    (train_folder.parent / "run.json").unlink()
    capsys.readouterr()
    run_experiment(load_config(ExperimentConfig, "tiny_experiment", [*base, "train.lr=1e-3"]))
    assert ": training" in capsys.readouterr().err
    assert (train_folder / "manifest.json").is_file()


def check_both_methods_and_provenance(output):
    """A run evaluated the paper's way (generate) and by scoring: one row each with every
    provenance column; the table has both methods' columns and the unparseable count."""
    from llavac.studies.results import RESULT_COLUMNS

    rows = list(csv.DictReader((output / "results.csv").open()))
    assert [row["method"] for row in rows] == ["generate", "score"]
    for row in rows:
        assert tuple(row) == RESULT_COLUMNS
        assert (row["train_seed"], row["split_seed"], row["procedure"]) == ("0", "0", "random811")
        # Empty by design: fold (not cheema10), variant (none named), ECE of generate.
        optional = {"fold", "variant"} | ({"ece"} if row["method"] == "generate" else set())
        assert all(row[column] for column in RESULT_COLUMNS if column not in optional), row
        metrics = json.loads((output / "runs" / "random811-seed0" / "eval" / row["method"] /
                              "metrics.json").read_text())
        assert row["config_hash"] == metrics["provenance"]["config_hash"]
        assert int(row["unparseable"]) == metrics["unparseable"]
    assert rows[1]["unparseable"] == "0"  # scoring cannot produce an unparseable answer
    header, _, line = (output / "results.md").read_text().splitlines()[:3]
    columns = header.strip("| ").split(" | ")
    at = columns.index("generate accuracy")
    assert columns[at : at + 3] == ["generate accuracy", "generate weighted F1", "unparseable"]
    assert "score accuracy" in header and "paper accuracy" in header
    generate_unparseable = line.strip("| ").split(" | ")[at + 2]
    assert generate_unparseable == f"{rows[0]['unparseable']} / {rows[0]['records']}"


@pytest.mark.slow  # two CLI processes, a kill
def test_an_experiment_killed_mid_run_finishes_on_rerun_and_reuses_its_finished_runs(
        synthetic_release, tmp_path):
    """The same command after a SIGKILL in the second run's training: the experiment's saved
    settings (input defaults filled in) match the new ones, the finished run is not
    retrained and the interrupted one is trained to the end."""
    output = tmp_path / "exp"
    command = [sys.executable, "-m", "llavac.cli", "experiment", "--config", "tiny_experiment",
               f"data.path={synthetic_release}", f"experiment.output={output}",
               "experiment.procedures=[random811]", "experiment.seeds=[0, 1]",
               "experiment.methods=[score]", "experiment.reliance_pairs=0", "train.max_steps=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first, second = output / "runs" / "random811-seed0", output / "runs" / "random811-seed1"
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:  # the second run has written its config: it is training
        wait_for(lambda: (second / "train" / "config.yaml").is_file(), process, timeout=240)
    finally:
        process.kill()  # SIGKILL: no handler runs, nothing is flushed
        process.wait()
    assert (first / "run.json").is_file() and not (second / "run.json").exists()
    finished = {p: p.stat().st_mtime_ns for p in (first / "train").rglob("*") if p.is_file()}

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "random811-seed0: done before" in rerun.stderr
    assert "random811-seed1: training" in rerun.stderr
    assert finished == {p: p.stat().st_mtime_ns for p in (first / "train").rglob("*")
                        if p.is_file()}
    rows = list(csv.DictReader((output / "results.csv").open()))
    assert [row["run"] for row in rows] == ["random811-seed0", "random811-seed1"]


def wait_for(condition, process: subprocess.Popen, timeout: float) -> None:
    """Poll ``condition`` until it holds; fail if ``process`` ends or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the process ended first (exit {process.returncode})"
        assert time.monotonic() < deadline, f"not within {timeout} s"
        time.sleep(0.02)  # a poll interval, not a wait standing in for the event


@pytest.mark.slow  # two processes under torchrun
def test_experiment_under_torchrun_trains_on_both_ranks_and_evaluates_once(
        synthetic_release, tmp_path):
    output = tmp_path / "exp"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
         "2", "-m", "llavac.cli", "experiment", "--config", "tiny_experiment",
         f"data.path={synthetic_release}", f"experiment.output={output}",
         "experiment.procedures=random811", "train.max_steps=2"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Progress goes to the llavac logger (stderr): one training line per rank, one evaluation.
    assert result.stderr.count(": training") == 2
    assert result.stderr.count(": evaluating") == 1
    manifest = json.loads((output / "runs" / "random811-seed0" / "train" /
                           "manifest.json").read_text())
    assert manifest["world_size"] == 2
    assert len(list(csv.DictReader((output / "results.csv").open()))) == 2  # both methods


@pytest.mark.parametrize("preset", ["llavac_p1_cheema10", "llavac_p2_random811", "llavac_p3_qmf",
                                    "ablation_multimodal_only"])
def test_paper_presets_evaluate_the_papers_way_first_then_score(preset):
    config = load_config(ExperimentConfig, preset)
    assert config.experiment.methods == ["generate", "score"]
    # The training recipe is the paper's: nothing switched off.
    assert (config.train.bf16, config.train.gradient_checkpointing, config.train.tuning,
            config.lora.projector_lr) == (True, True, "lora", 2e-5)


def test_the_old_single_method_key_still_reads():
    with pytest.warns(FutureWarning, match="experiment.methods"):
        config = load_config(ExperimentConfig, None, ["experiment.method=score"])
    assert config.experiment.methods == ["score"]
    with pytest.raises(ValueError, match="experiment.methods: expected a list of distinct"):
        load_config(ExperimentConfig, None, ["experiment.methods=[score, guess]"])
