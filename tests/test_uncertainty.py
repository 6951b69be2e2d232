"""Calibration, uncertainty and significance through the commands (issue 11): two tiny runs
trained on the real QMF split and evaluated on its test part, every figure in metrics.json
recomputed independently from predictions.jsonl (sklearn / numpy / scipy, not llavac's
helpers), ``llavac compare`` against scipy's exact binomial test, ``llavac calibrate`` then
``evaluate --part validation``, the temperature in the score path, and abstention."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_train_config
from scipy.stats import binomtest
from sklearn.metrics import accuracy_score, f1_score, log_loss

from llavac.cli import main
from llavac.evaluation.calibration import apply_temperature
from llavac.labels import LABELS
from llavac.predict import Classifier
from llavac.train import train

SLOTS = ("text", "image", "multimodal")
# Slow: two trainings and two evaluations on the real QMF split. One worker trains the
# module's runs (module fixtures are per worker).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("uncertainty")]


def _train_qmf(data, tmp_path_factory, seed: int):
    """The tiny LLaVA (base weights from ``seed``) trained on the real QMF train part.

    Four steps at a low rate: the two runs then still disagree on many pairs, so the paired
    tests have discordant pairs to count. Trained longer, both collapse onto the majority
    label and every comparison is a trivial tie.
    """
    output = tmp_path_factory.mktemp(f"qmf-seed{seed}") / "run"
    return train(tiny_train_config(data, output, "data.procedure=qmf", "train.max_steps=4",
                                   "train.lr=1e-4", f"model.seed={seed}", f"train.seed={seed}",
                                   "train.save_steps=100000", "train.logging_steps=1000"))


def _evaluate(run, data, output, *extra: str) -> dict:
    assert main(["evaluate", "--adapter", str(run), "--data", str(data), "--procedure", "qmf",
                 "--batch-size", "32", "--output", str(output), "eval.progress=false",
                 "eval.reliance_pairs=0", *extra]) == 0  # reliance: 2 more passes a pair
    return json.loads((output / "metrics.json").read_text())


@pytest.fixture(scope="module")
def qmf(shared_data):
    return shared_data / "mvsa_single"


@pytest.fixture(scope="module")
def test_records(qmf):
    """The first 24 pairs of the QMF test part (the split is read once: it opens every image)."""
    from llavac.data import load_split

    return load_split(qmf, procedure="qmf").test[:24]


@pytest.fixture(scope="module")
def runs(qmf, tmp_path_factory):
    return [_train_qmf(qmf, tmp_path_factory, seed) for seed in (0, 1)]


@pytest.fixture(scope="module")
def evaluations(runs, qmf, tmp_path_factory):
    folders = [tmp_path_factory.mktemp(f"eval{i}") / "eval" for i in range(2)]
    for run, folder in zip(runs, folders, strict=True):
        _evaluate(run, qmf, folder)
    return folders


def _read(folder):
    rows = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    return rows, json.loads((folder / "metrics.json").read_text())


def _resampled(n: int) -> np.ndarray:
    """The documented bootstrap draws: seed 0, 1,000 resamples of n indices each."""
    rng = np.random.default_rng(0)
    return np.stack([rng.integers(0, n, size=n) for _ in range(1000)])


def _weighted_f1_rows(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Weighted F1 of every row of (resamples, n) label matrices, from one-hot counts."""
    gold = y_true[..., None] == np.arange(3)
    pred = y_pred[..., None] == np.arange(3)
    tp, support, predicted = (gold & pred).sum(1), gold.sum(1), pred.sum(1)
    f1 = np.where(support + predicted > 0, 2 * tp / np.maximum(support + predicted, 1), 0.0)
    return (f1 * support).sum(1) / support.sum(1)


def _interval(values: np.ndarray) -> list[float]:
    return list(np.percentile(values, [2.5, 97.5]))


def _ece(probs: np.ndarray, gold: np.ndarray) -> float:
    confidence, correct = probs.max(1), probs.argmax(1) == gold
    bins = np.digitize(confidence, np.linspace(0, 1, 16)[1:-1], right=True)  # (lo, hi]
    return sum(np.mean(bins == b) * abs(correct[bins == b].mean() - confidence[bins == b].mean())
               for b in np.unique(bins))


# The scorer's float32 probabilities miss a sum of 1 by ~1e-7; log_loss warns, and is exact.
@pytest.mark.filterwarnings("ignore:The y_prob values do not sum to one")
def test_metrics_json_equals_an_independent_recomputation(evaluations):
    for folder in evaluations:
        rows, metrics = _read(folder)
        assert metrics["records"] == len(rows) == 519
        assert metrics["calibration"] == {"headline": "raw", "temperatures": None}
        for slot in SLOTS:
            values = metrics["slots"][slot]
            gold = np.array([LABELS.index(row["gold"][slot]) for row in rows])
            pred = np.array([LABELS.index(row[f"{slot}_label"]) for row in rows])
            probs = np.array([[row["probabilities"][slot][label] for label in LABELS]
                              for row in rows])
            assert values["accuracy"] == pytest.approx(accuracy_score(gold, pred))
            assert values["weighted_f1"] == pytest.approx(
                f1_score(gold, pred, labels=[0, 1, 2], average="weighted", zero_division=0))
            assert values["nll"] == pytest.approx(log_loss(gold, probs, labels=[0, 1, 2]),
                                                  rel=1e-6)
            brier = np.mean(np.sum((probs - np.eye(3)[gold]) ** 2, axis=1))
            assert values["brier"] == pytest.approx(brier)
            assert values["ece"] == pytest.approx(_ece(probs, gold))
            order = np.argsort(-probs.max(1), kind="stable")
            wrong = probs.argmax(1)[order] != gold[order]
            assert values["aurc"] == pytest.approx(
                np.mean(np.cumsum(wrong) / np.arange(1, len(gold) + 1)))
            draws = _resampled(len(gold))
            assert values["accuracy_ci"] == pytest.approx(
                _interval((gold[draws] == pred[draws]).mean(1)))
            assert values["weighted_f1_ci"] == pytest.approx(
                _interval(_weighted_f1_rows(gold[draws], pred[draws])))
            assert values["accuracy_ci"][0] <= values["accuracy"] <= values["accuracy_ci"][1]
            kept = probs.max(1) >= 0.5
            assert values["selective"][0]["coverage"] == pytest.approx(kept.mean())
        for name in ("reliability_multimodal.png", "coverage_multimodal.png"):
            assert (folder / name).stat().st_size > 0
        summary = (folder / "summary.md").read_text()
        assert "accuracy 95 % CI" in summary and "Probabilities: **raw**" in summary


def test_compare_gives_the_exact_mcnemar_p_and_the_paired_bootstrap(evaluations, capsys):
    assert main(["compare", *map(str, evaluations), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    (rows_a, _), (rows_b, _) = _read(evaluations[0]), _read(evaluations[1])
    assert set(result["slots"]) == set(SLOTS) and result["n"] == 519
    for slot in SLOTS:
        figures = result["slots"][slot]
        gold = np.array([LABELS.index(row["gold"][slot]) for row in rows_a])
        a = np.array([LABELS.index(row[f"{slot}_label"]) for row in rows_a])
        b = np.array([LABELS.index(row[f"{slot}_label"]) for row in rows_b])
        right_a, right_b = a == gold, b == gold
        only_a, only_b = int(np.sum(right_a & ~right_b)), int(np.sum(~right_a & right_b))
        expected_p = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1
        assert (figures["a_only_right"], figures["b_only_right"]) == (only_a, only_b)
        if slot == "multimodal":  # the binomial test, not the no-discordant-pair shortcut
            assert only_a and only_b
        assert figures["mcnemar_p"] == pytest.approx(expected_p, rel=1e-12)
        draws = _resampled(len(gold))
        diffs = (b[draws] == gold[draws]).mean(1) - (a[draws] == gold[draws]).mean(1)
        assert figures["accuracy_diff"] == pytest.approx(right_b.mean() - right_a.mean())
        assert figures["accuracy_diff_ci"] == pytest.approx(_interval(diffs))
        f1_diffs = (_weighted_f1_rows(gold[draws], b[draws])
                    - _weighted_f1_rows(gold[draws], a[draws]))
        assert figures["weighted_f1_diff_ci"] == pytest.approx(_interval(f1_diffs))

    assert main(["compare", *map(str, evaluations)]) == 0
    table = capsys.readouterr().out
    assert "McNemar p" in table and f"{result['slots']['multimodal']['mcnemar_p']:.4g}" in table


def test_compare_refuses_other_ids_or_other_gold(evaluations, tmp_path, capsys):
    changed = tmp_path / "changed"
    shutil.copytree(evaluations[1], changed)
    lines = (changed / "predictions.jsonl").read_text().splitlines()
    (changed / "predictions.jsonl").write_text("\n".join(lines[1:]) + "\n")
    assert main(["compare", str(evaluations[0]), str(changed)]) == 2
    assert "different test ids (1 only in A" in capsys.readouterr().err

    row = json.loads(lines[0])
    row["gold"]["multimodal"] = next(
        label for label in LABELS if label != row["gold"]["multimodal"])
    (changed / "predictions.jsonl").write_text("\n".join([json.dumps(row), *lines[1:]]) + "\n")
    assert main(["compare", str(evaluations[0]), str(changed)]) == 2
    assert f"disagree on the gold labels of id {row['id']!r}" in capsys.readouterr().err


@pytest.mark.slow  # a calibration and an evaluation on real data
def test_calibrate_then_evaluate_validation(runs, qmf, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(runs[0], run)
    assert main(["calibrate", str(run), "--data", str(qmf), "--procedure", "qmf",
                 "--batch-size", "32", "calibrate.progress=false"]) == 0
    assert "validation NLL" in capsys.readouterr().out
    calibration = json.loads((run / "calibration.json").read_text())
    assert set(calibration["temperatures"]) == set(SLOTS)
    assert calibration["fitted_on"]["part"] == "validation"
    assert calibration["fitted_on"]["procedure"] == "qmf" and calibration["fitted_on"]["n"] > 0
    for slot in SLOTS:
        assert calibration["nll_after"][slot] <= calibration["nll_before"][slot]

    metrics = _evaluate(run, qmf, tmp_path / "val", "--part", "validation")
    assert metrics["calibration"] == {"headline": "calibrated",
                                      "temperatures": calibration["temperatures"]}
    for slot in SLOTS:
        values = metrics["slots"][slot]
        # The validation NLL does not rise: evaluate's calibrated and raw figures are the
        # ones the fit reported.
        assert values["nll"] <= values["raw"]["nll"]
        assert values["nll"] == pytest.approx(calibration["nll_after"][slot], rel=1e-5)
        assert values["raw"]["nll"] == pytest.approx(calibration["nll_before"][slot], rel=1e-5)
    summary = (tmp_path / "val" / "summary.md").read_text()
    assert "Probabilities: **calibrated**" in summary
    assert f"multimodal {calibration['temperatures']['multimodal']:.3f}" in summary


def test_calibrate_needs_a_validation_part(tmp_path, image_file, capsys):
    rows = [{"id": str(i), "image": str(image_file(tmp_path / f"{i}.jpg")), "text": "t",
             "multimodal_label": "positive"} for i in range(2)]
    (tmp_path / "own.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (tmp_path / "run").mkdir()
    assert main(["calibrate", str(tmp_path / "run"), "--data", str(tmp_path / "own.jsonl"),
                 "--model", "tiny-llava"]) == 2
    assert "has no validation part" in capsys.readouterr().err


def test_temperature_and_abstention_in_the_score_path(runs, test_records, tmp_path):
    records = test_records
    run = tmp_path / "run"
    shutil.copytree(runs[1], run)
    (run / "calibration.json").write_text(json.dumps({"temperatures": {"multimodal": 3.0}}))
    calibrated = Classifier.from_pretrained(adapter=run, device="cpu")
    raw = Classifier.from_pretrained(adapter=run, device="cpu", calibrated=False)
    assert calibrated.temperatures == {"multimodal": 3.0} and raw.temperatures is None
    scaled, plain = (c.predict(records, batch_size=8, progress=False) for c in (calibrated, raw))
    for s, p in zip(scaled, plain, strict=True):
        assert s.probabilities["text"] == p.probabilities["text"]  # no temperature: as is
        multimodal = [[p.probabilities["multimodal"][label] for label in LABELS]]
        assert list(s.probabilities["multimodal"].values()) == pytest.approx(
            apply_temperature(multimodal, 3.0)[0].tolist(), rel=1e-9)
        assert s.multimodal_label == p.multimodal_label

    tops = sorted(max(s.probabilities["multimodal"].values()) for s in scaled)
    threshold = tops[len(tops) // 2]
    abstained = calibrated.predict(records, batch_size=8, progress=False,
                                   min_confidence=threshold)
    for s, a in zip(scaled, abstained, strict=True):
        assert a.probabilities == s.probabilities
        sure = max(s.probabilities["multimodal"].values()) >= threshold
        assert a.multimodal_label == (s.multimodal_label if sure else "uncertain")
    assert sum(a.multimodal_label == "uncertain" for a in abstained) == len(tops) // 2
    with pytest.raises(ValueError, match="min_confidence needs probabilities"):
        calibrated.predict(records[:1], "generate", progress=False, min_confidence=0.5)


def test_predict_min_confidence_flag(runs, test_records, capsys):
    record = test_records[0]
    command = ["predict", "--adapter", str(runs[0]), "--image", record.image,
               "--text", record.text]
    assert main([*command, "--min-confidence", "1.0"]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {row[f"{slot}_label"] for slot in SLOTS} == {"uncertain"}
    assert set(row["probabilities"]) == set(SLOTS)
    assert main([*command, "--min-confidence", "1.5"]) == 2
    assert "predict.min_confidence: expected a probability" in capsys.readouterr().err


def test_server_returns_calibrated_probabilities_and_abstains(runs, test_records, tmp_path):
    from fastapi.testclient import TestClient

    from llavac.data import open_rgb
    from llavac.serve import create_app

    record = test_records[0]
    run = tmp_path / "run"
    shutil.copytree(runs[0], run)
    (run / "calibration.json").write_text(json.dumps({"temperatures": {"multimodal": 0.5}}))
    classifier = Classifier.from_pretrained(adapter=run, device="cpu")
    (expected,) = classifier.classify([(open_rgb(record.image), record.text)])
    body = {"image_base64": base64.b64encode(Path(record.image).read_bytes()).decode(),
            "text": record.text}
    with TestClient(create_app(classifier)) as client:
        assert client.get("/v1/model").json()["temperatures"] == {"multimodal": 0.5}
        answer = client.post("/v1/classify", json=body).json()
        assert answer["probabilities"]["multimodal"] == pytest.approx(
            expected.probabilities["multimodal"], rel=1e-6)
        sure = client.post("/v1/classify?min_confidence=1", json=body).json()
        assert {sure[f"{slot}_label"] for slot in SLOTS} == {"uncertain"}
        assert sure["probabilities"] == answer["probabilities"]
        bad = client.post("/v1/classify/batch?min_confidence=high", json=[body])
        assert bad.status_code == 422 and bad.json()["field"] == "min_confidence"


def test_experiment_table_intervals_and_paired_comparison(evaluations, tmp_path):
    from llavac.evaluation.compare import compare_evaluations
    from llavac.studies.results import collect_results, comparison_section, write_results

    outputs = [tmp_path / "full", tmp_path / "ablation"]
    for output, evaluation in zip(outputs, evaluations, strict=True):
        shutil.copytree(evaluation, output / "runs" / "qmf-seed0" / "eval" / "score")
        (output / "runs" / "qmf-seed0" / "run.json").write_text(json.dumps(
            {"name": "qmf-seed0", "procedure": "qmf", "fold": None, "seed": 0,
             "model": "tiny-llava", "config_hash": "h", "methods": ["score"]}))
    rows = collect_results(outputs[0], {"qmf-seed0": "h"})
    write_results(rows, outputs[0])
    multimodal = json.loads((evaluations[0] / "metrics.json").read_text())["slots"]["multimodal"]
    low, high = (100 * value for value in multimodal["accuracy_ci"])
    table = (outputs[0] / "results.md").read_text()
    assert f"{100 * multimodal['accuracy']:.2f} [{low:.2f}, {high:.2f}]" in table
    assert "±" not in table.split("\n")[2]  # one run: its interval, not a std of one value

    section = comparison_section(outputs[0], outputs[1], ["qmf-seed0", "not-run"], ["score"])
    figures = compare_evaluations(evaluations[0], evaluations[1])["slots"]["multimodal"]
    (row,) = [line for line in section.splitlines() if line.startswith("| qmf-seed0 | score")]
    assert f"| {figures['mcnemar_p']:.4g} |" in row
    assert f"{100 * figures['accuracy_diff']:+.2f}" in row
    assert "No run evaluated" in comparison_section(outputs[0], tmp_path / "missing",
                                                    ["qmf-seed0"], ["score"])
