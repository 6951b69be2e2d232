"""``llavac predict --engine ray`` on a local 2-CPU Ray: the local engine's answers and bad-row
reports, a SIGKILLed driver resumed to every id exactly once, and a killed model actor that
Ray restarts while the job finishes by itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from test_predict_corpus import BAD_IDS, config, lines, mvsa_corpus

from llavac.cli import main
from llavac.predict import Classifier
from llavac.predict.blocks import BlockFolder
from llavac.predict.corpus import predict_corpus

pytestmark = pytest.mark.xdist_group("ray")  # one worker, so one Ray cluster (conftest)

REPO = Path(__file__).resolve().parents[1]
LABELS = ("text_label", "image_label", "multimodal_label")


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier.from_pretrained("tiny-llava", device="cpu")


def corpus(data: Path, path: Path, pairs: int) -> list[str]:
    """``pairs`` real MVSA pairs with every kind of bad row: test_predict_corpus.BAD_IDS, then
    a non-string text and a repeated id at the end; returns the good ids in order."""
    good = mvsa_corpus(data, path, pairs)
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"id": "number", "image": first["image"], "text": 7}) + "\n")
        f.write(json.dumps({**first, "text": "the same id again"}) + "\n")
    return good


def ray_args(path: Path, out: Path, *more: str) -> list[str]:
    return ["predict", "--model", "tiny-llava", "--device", "cpu", "--input", str(path),
            "--out", str(out), "--engine", "ray", "--batch-size", "4", "predict.bucket=2", *more]


def folder_lines(out: Path, pattern: str) -> list[dict]:
    return [row for part in sorted(out.glob(pattern)) for row in lines(part)]


def assert_same_predictions(got: list[dict], want: list[dict]) -> None:
    assert [p["id"] for p in got] == [p["id"] for p in want]
    for a, b in zip(got, want, strict=True):
        assert [a[k] for k in LABELS] == [b[k] for k in LABELS]
        for slot, probs in b["probabilities"].items():
            assert a["probabilities"][slot] == pytest.approx(probs, abs=1e-5)


@pytest.mark.parametrize("pairs", [120, pytest.param(2000, marks=pytest.mark.slow)])
def test_ray_gives_the_local_engines_answers_and_bad_rows(
        shared_data, tmp_path, classifier, ray_cluster, capsys, pairs):
    """Same ids, labels and probabilities (1e-5) as the local engine, the same rows in the
    errors with the same reasons and input rows, the same records: line."""
    good = corpus(shared_data, tmp_path / "in.jsonl", pairs)
    local = tmp_path / "local.jsonl"
    summary = predict_corpus(config(tmp_path / "in.jsonl", local, batch_size=4, bucket=2),
                             classifier)
    capsys.readouterr()
    assert main(ray_args(tmp_path / "in.jsonl", tmp_path / "ray", "predict.progress=false")) == 0
    err = capsys.readouterr().err.splitlines()

    out = tmp_path / "ray"
    got = folder_lines(out, "part-*.jsonl")
    assert [p["id"] for p in got] == good
    assert_same_predictions(got, lines(local))
    errors = folder_lines(out, "errors/part-*.jsonl")
    assert errors == lines(tmp_path / "local.jsonl.errors.jsonl")
    assert {row["id"]: row["reason"] for row in errors} == {
        **BAD_IDS, "number": "bad_text", good[0]: "duplicate_id"}
    records = [line for line in err if line.startswith("records: ")]
    assert [r.rsplit(";", 1)[0] for r in records] == [summary.line().rsplit(";", 1)[0]]
    assert f"wrote {out}: predictions; skipped rows in {out / 'errors'}" in err
