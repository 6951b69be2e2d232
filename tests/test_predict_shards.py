"""Sharded prediction: ``torchrun --nproc_per_node 2`` on the CPU (gloo) predicts disjoint
shards into ``OUT.part-RANK`` and merges them into the single-process output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_predict_corpus import BAD_IDS, config, lines, mvsa_corpus

from llavac.predict import Classifier
from llavac.predict.corpus import predict_corpus

REPO = Path(__file__).resolve().parents[1]
LABEL_FIELDS = ("text_label", "image_label", "multimodal_label")


def test_torchrun_two_processes_merge_to_the_single_process_output(shared_data, tmp_path):
    good = mvsa_corpus(shared_data, tmp_path / "in.jsonl", 120)
    single = tmp_path / "single.jsonl"
    classifier = Classifier.from_pretrained("tiny-llava", device="cpu")
    predict_corpus(config(tmp_path / "in.jsonl", single, batch_size=8), classifier)

    merged = tmp_path / "merged.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", "-m", "llavac.cli", "predict", "--model", "tiny-llava",
               "--device", "cpu", "--input", str(tmp_path / "in.jsonl"), "--out", str(merged),
               "--batch-size", "8", "--num-workers", "0", "predict.progress=false"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "predicted 120, skipped 3" in done.stderr

    want, got = lines(single), lines(merged)
    assert [p["id"] for p in got] == [p["id"] for p in want] == good
    for a, b in zip(got, want, strict=True):
        assert [a[k] for k in LABEL_FIELDS] == [b[k] for k in LABEL_FIELDS]
        for slot, probs in b["probabilities"].items():
            assert a["probabilities"][slot] == pytest.approx(probs, abs=1e-5)
    errors = lines(tmp_path / "merged.jsonl.errors.jsonl")
    assert {row["id"]: row["reason"] for row in errors} == BAD_IDS
    assert [row["row"] for row in errors] == sorted(row["row"] for row in errors)
    assert not list(tmp_path.glob("merged.jsonl*.part-*"))  # merged, then removed
    assert json.loads((tmp_path / "merged.jsonl.meta.json").read_text())["world_size"] == 2
