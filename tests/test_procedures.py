"""The procedure registry: a new data procedure is one entry plus its split file, and every
command that reads data accepts it."""

from __future__ import annotations

import json

import pytest

from llavac.cli import main
from llavac.data.mvsa import read_release
from llavac.data.procedures import PROCEDURES, Procedure, add_procedure, get_procedure
from llavac.data.published import COLUMNS


@pytest.fixture
def toy_procedure(synthetic_release, tmp_path):
    """``toy``: a published split of 16 of the synthetic release's pairs (8 train,
    4 validation, 4 test), registered for one test from a split file in a temp folder."""
    records = read_release(synthetic_release).records[:16]
    parts = "t" * 8 + "v" * 4 + "e" * 4  # one letter per pair: its part in the one fold
    rows = ["\t".join(COLUMNS)] + ["\t".join((r.id, r.multimodal_label, "", "", part))
                                   for r, part in zip(records, parts, strict=True)]
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "mvsa_single.tsv").write_text("\n".join(rows) + "\n")
    yield add_procedure(Procedure("toy", "a toy split", "published",
                                  split_files=tmp_path / "toy"))
    del PROCEDURES["toy"]


def test_a_registered_procedure_is_accepted_by_data_export_train_and_evaluate(
        toy_procedure, synthetic_release, tmp_path):
    release = str(synthetic_release)
    assert main(["data", "export", release, "--procedure", "toy",
                 "--out", str(tmp_path / "split")]) == 0
    manifest = json.loads((tmp_path / "split" / "manifest.json").read_text())
    assert manifest["procedure"] == "toy" and manifest["split_files"] == str(tmp_path / "toy")
    assert {part: counts["total"] for part, counts in manifest["counts"].items()} == {
        "train": 8, "validation": 4, "test": 4}

    data = ["--data", release, "--procedure", "toy"]
    assert main(["train", "--config", "tiny_synthetic", *data, "--output",
                 str(tmp_path / "run"), "train.max_steps=1", "train.progress=false"]) == 0
    assert main(["evaluate", "--adapter", str(tmp_path / "run"), *data, "--output",
                 str(tmp_path / "eval"), "eval.progress=false",
                 "eval.reliance_pairs=0"]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert (metrics["procedure"], metrics["part"], metrics["records"]) == ("toy", "test", 4)


def test_an_unknown_procedure_names_the_registered_ones():
    with pytest.raises(ValueError, match="unknown procedure 'toy': expected one of "
                                         "cheema10, random811, clmlf, qmf, none"):
        get_procedure("toy")
