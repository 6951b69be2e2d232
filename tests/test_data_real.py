"""The data layer on the real MVSA data in ../shared/data (skipped where it is absent).

Expected split contents are recomputed here from the published files with plain Python, not
through ``llavac.data.published``, so the reader and the check do not share a mistake.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter

import pytest

from llavac.data import load_split
from llavac.data.check import check_path
from llavac.data.mvsa import read_release
from llavac.data.procedures import PROCEDURES, apply_procedure
from llavac.data.published import SHIPPED, read_shipped
from llavac.labels import xu_mao_rule

CHEEMA = {"0": "neutral", "1": "positive", "2": "negative"}
CLMLF = {0: "positive", 1: "neutral", 2: "negative"}


@pytest.fixture(scope="module")
def single(shared_data):
    return read_release(shared_data / "mvsa_single")


def by_part(parts):
    return {name: {r.id: r.multimodal_label for r in records} for name, records in parts.items()}


def test_check_reads_every_text_and_opens_every_image(shared_data, record_property):
    start = time.perf_counter()
    report = check_path(shared_data / "mvsa_single")
    seconds = time.perf_counter() - start
    record_property("check_seconds", round(seconds, 2))
    print(f"\nMVSA-Single check: 4,869 texts decoded, 4,869 images opened in {seconds:.1f} s")
    assert (report.rows, report.kept, report.dropped) == (4869, 4511, {"conflict": 358})
    assert report.problems == [] and report.exit_code == 0
    assert report.encodings == {"utf-8": 3738, "gb18030": 1131}  # none needed replacing
    assert len(list((shared_data / "mvsa_single" / "data").glob("*.jpg"))) == 4869
    assert report.labels["multimodal"] == {"negative": 1358, "neutral": 470, "positive": 2683}


def test_gbk_text_keeps_its_quotes(single):
    record = next(r for r in single.records if r.id == "656")
    assert record.text.startswith("RT @KristianLH_: \u201c@rickygervais")


def test_shipped_lists_equal_the_published_files(shared_data):
    published = [p for p in PROCEDURES.values() if p.original is not None]
    assert [p.name for p in published] == ["cheema10", "clmlf", "qmf"]
    for procedure in published:
        folder = shared_data / "splits" / procedure.original[0]
        for corpus in sorted(p.name for p in folder.iterdir()):
            shipped = read_shipped(SHIPPED / procedure.name / f"{corpus}.tsv")
            assert shipped == procedure.read_original(shared_data / "splits", corpus)


def test_qmf_and_clmlf_are_the_published_splits(single, shared_data):
    splits = shared_data / "splits"
    for procedure, sizes in (("qmf", [1555, 518, 519]), ("clmlf", [3611, 450, 450])):
        parts, notes = apply_procedure(single, procedure)
        assert [len(parts[p]) for p in ("train", "validation", "test")] == sizes
        expected = {}
        for name, file in (("train", "train"), ("validation", "dev"), ("test", "test")):
            if procedure == "qmf":
                lines = (splits / "qmf/mvsa_single" / f"{file}.jsonl").read_text().splitlines()
                expected[name] = {r["id"]: r["label"] for r in map(json.loads, lines)}
            else:
                rows = json.loads((splits / "clmlf/mvsa_single" / f"{file}.json").read_text())
                expected[name] = {r["id"]: CLMLF[r["emotion_label"]] for r in rows}
        assert by_part(parts) == expected
        assert not [n for n in notes if n.reason.endswith("mismatch")]


def test_cheema10_folds_are_the_published_folds(single, shared_data):
    folder = shared_data / "splits/cheema2021/mvsa_single"
    rows = [line.split(",") for line in (folder / "valid_pairlist.txt").read_text().split()]
    tests = []
    for k in range(1, 11):
        parts, notes = apply_procedure(single, "cheema10", fold=k)
        expected = {}
        for name, file in (("train", "train"), ("validation", "val"), ("test", "test")):
            indices = (folder / "splits" / f"{file}_{k}.txt").read_text().split()
            expected[name] = {rows[int(i)][0]: CHEEMA[rows[int(i)][1]] for i in indices}
        assert by_part(parts) == expected
        assert notes == []  # every kept pair is used, no label differs
        tests.append(set(expected["test"]))
    assert sum(map(len, tests)) == len(set().union(*tests)) == 4511


def test_random811_is_seeded_disjoint_and_8_1_1(single):
    first, again, other = (apply_procedure(single, "random811", seed=s)[0] for s in (0, 0, 1))
    assert by_part(first) == by_part(again) and by_part(first) != by_part(other)
    ids = [r.id for part in first.values() for r in part]
    assert len(ids) == len(set(ids)) == 4511
    for name, share in (("train", 0.8), ("validation", 0.1), ("test", 0.1)):
        assert abs(len(first[name]) - share * 4511) <= 1


def test_export_path_opens_the_split_images(shared_data):
    start = time.perf_counter()
    split = load_split(shared_data / "mvsa_single", "qmf", strict=True)
    print(f"\nqmf split loaded with its 2,592 images opened in {time.perf_counter() - start:.1f} s")
    assert split.manifest["counts"]["test"] == {"total": 519, "negative": 161, "neutral": 93,
                                                "positive": 265}
    assert split.manifest["skipped"] == {"conflict": 358, "not_in_split": 1919}


def test_mvsa_multiple_statistics_from_the_label_file(shared_data, tmp_path):
    label_file = shared_data / "mvsa_multiple" / "labelResultAll.txt"
    # The label file alone (a release folder without data/): labels, no texts or images.
    shutil.copy(label_file, tmp_path / label_file.name)
    source = read_release(tmp_path)
    assert not source.files_checked
    # The same statistics, recounted with nothing but the file and the rule.
    lines = label_file.read_text().splitlines()[1:]
    kept, dropped = Counter(), Counter()
    for line in lines:
        votes = [cell.split(",") for cell in line.split("\t")[1:]]
        majority = []
        for modality in (0, 1):
            label, count = Counter(v[modality] for v in votes).most_common(1)[0]
            majority.append(label if count >= 2 else None)
        if None in majority:
            dropped["no_majority"] += 1
        elif xu_mao_rule(*majority) is None:
            dropped["conflict"] += 1
        else:
            kept[xu_mao_rule(*majority)] += 1
    assert source.rows == len(lines) == 19600
    assert len(source.records) == sum(kept.values()) == 17027
    assert Counter(p.reason for p in source.problems) == dropped
    assert dropped == {"no_majority": 2231, "conflict": 342}
    assert Counter(r.multimodal_label for r in source.records) == kept
    assert kept == {"positive": 11320, "neutral": 4408, "negative": 1299}
    # Cheema's list lacks two pairs the rule keeps, CLMLF's one more.
    for procedure, sizes, unused in (("cheema10", [13619, 1703, 1703], {"3910", "5995"}),
                                     ("clmlf", [13624, 1700, 1700], {"3910", "5995", "15324"})):
        fold = 1 if procedure == "cheema10" else None
        parts, notes = apply_procedure(source, procedure, fold=fold)
        assert [len(parts[p]) for p in ("train", "validation", "test")] == sizes
        assert {n.id for n in notes if n.reason == "not_in_split"} == unused
        assert not [n for n in notes if n.reason != "not_in_split"]
