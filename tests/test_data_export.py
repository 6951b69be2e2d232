"""Procedures, ``load_split`` and ``llavac data export`` on small fixtures, including a tiny
published-split folder in the original formats."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from llavac.cli import main
from llavac.data import load_split, read_source
from llavac.data.export import export_split
from llavac.data.procedures import apply_procedure, get_procedure, random_811
from llavac.data.published import read_shipped
from llavac.data.splitfiles.build import build

LABELS = ["positive,neutral", "negative,negative", "neutral,neutral", "positive,negative"]


@pytest.fixture
def release(make_release):
    """20 pairs; every fourth (4, 8, ...) is a conflict the rule drops."""
    return make_release([(str(i), LABELS[(i - 1) % 4]) for i in range(1, 21)])


@pytest.fixture
def splits_dir(tmp_path):
    """Published splits of ``release`` in their original formats and label encodings."""
    kept = [i for i in range(1, 21) if i % 4]  # 15 ids
    cheema = {"positive,neutral": "1,1,0", "negative,negative": "2,2,2", "neutral,neutral": "0,0,0"}
    root = tmp_path / "splits"
    folder = root / "cheema2021" / "mvsa_single"
    (folder / "splits").mkdir(parents=True)
    rows = [f"{i},{cheema[LABELS[(i - 1) % 4]]}" for i in kept]
    rows[0] = "1,0,0,0"  # published neutral (text neutral too) where the release says positive
    (folder / "valid_pairlist.txt").write_text("\n".join(rows) + "\n")
    for k in (1, 2):  # fold k tests rows 0..4 or 5..9, validates the next five
        test, val = range(5 * (k - 1), 5 * k), range(5 * k, 5 * k + 5)
        train = [r for r in range(15) if r not in test and r not in val]
        for name, part in (("train", train), ("val", val), ("test", test)):
            (folder / "splits" / f"{name}_{k}.txt").write_text("\n".join(map(str, part)))
    clmlf_codes = {"positive,neutral": 0, "neutral,neutral": 1, "negative,negative": 2}
    words = {"positive,neutral": "positive", "neutral,neutral": "neutral",
             "negative,negative": "negative"}
    parts = {"train": kept[:11], "dev": kept[11:13], "test": kept[13:] + [99]}  # 99: not released
    for procedure in ("clmlf", "qmf"):
        folder = root / procedure / "mvsa_single"
        folder.mkdir(parents=True)
        for name, ids in parts.items():
            if procedure == "clmlf":
                rows = [{"id": str(i), "text": "t", "emotion_label": clmlf_codes[
                    LABELS[(i - 1) % 4]]} for i in ids]
                (folder / f"{name}.json").write_text(json.dumps(rows))
            else:
                rows = [json.dumps({"id": str(i), "label": words[LABELS[(i - 1) % 4]],
                                    "text": "t", "img": f"data/{i}.jpg"}) for i in ids]
                (folder / f"{name}.jsonl").write_text("\n".join(rows))
    return root


def ids(records):
    return [record.id for record in records]


def test_cheema10_reads_folds_and_prefers_the_published_label(release, splits_dir):
    split = load_split(release, "cheema10", fold=2, splits_dir=splits_dir)
    assert ids(split.test) == ["7", "9", "10", "11", "13"]
    assert ids(split.validation) == ["14", "15", "17", "18", "19"]
    assert len(split.train) == 5 and "1" in ids(split.train)
    first = next(r for r in split.train if r.id == "1")
    assert (first.text_label, first.image_label, first.multimodal_label) == (
        "positive", "neutral", "neutral")
    assert split.manifest["label_mismatches"] == {"multimodal_label_mismatch": 1,
                                                  "text_label_mismatch": 1}
    assert split.manifest["skipped"] == {"conflict": 5}
    assert split.manifest["split_files"] == str(splits_dir.resolve())


def test_clmlf_and_qmf_count_what_they_leave_out(release, splits_dir):
    for procedure in ("clmlf", "qmf"):
        split = load_split(release, procedure, splits_dir=splits_dir)
        assert [len(split.train), len(split.validation), len(split.test)] == [11, 2, 2]
        assert split.manifest["skipped"] == {"conflict": 5, "not_in_release": 1}
        assert split.manifest["errors"][0]["id"] == "99"
        with pytest.raises(ValueError, match="not_in_release .id 99."):
            load_split(release, procedure, splits_dir=splits_dir, strict=True)


def test_shipped_lists_round_trip_the_published_files(splits_dir, tmp_path):
    written = build(splits_dir, tmp_path / "lists")
    assert sorted(p.relative_to(tmp_path / "lists").as_posix() for p in written) == [
        "cheema10/mvsa_single.tsv", "clmlf/mvsa_single.tsv", "qmf/mvsa_single.tsv"]
    for procedure in ("cheema10", "clmlf", "qmf"):
        shipped = read_shipped(tmp_path / "lists" / procedure / "mvsa_single.tsv")
        assert shipped == get_procedure(procedure).read_original(splits_dir, "mvsa_single")
    assert shipped.fold(1)["test"] == ["18", "19", "99"]


def test_random811_is_seeded_disjoint_and_8_1_1(release):
    base = read_source(release).records * 7
    records = [dataclasses.replace(record, id=str(i)) for i, record in enumerate(base)]  # 105
    first, again = random_811(records, 0), random_811(records[::-1], 0)
    other = random_811(records, 1)
    assert {k: ids(v) for k, v in first.items()} == {k: ids(v) for k, v in again.items()}
    assert ids(first["test"]) != ids(other["test"])
    assert [len(first[p]) for p in ("train", "validation", "test")] == [84, 10, 11]
    all_ids = ids(first["train"]) + ids(first["validation"]) + ids(first["test"])
    assert sorted(all_ids) == sorted(ids(records))


def test_export_writes_parts_and_manifest_and_loads_back(release, tmp_path, capsys):
    out = tmp_path / "out"
    command = ["data", "export", str(release), "--procedure", "random811", "--split-seed", "3"]
    assert main([*command, "--output", str(tmp_path / "quiet"), "-q"]) == 0
    assert capsys.readouterr().out == ""  # -q: no table
    assert main([*command, "--output", str(tmp_path / "cli")]) == 0
    printed = capsys.readouterr().out
    assert "skipped: conflict 5" in printed and "validation" in printed
    split = export_split(release, "random811", seed=3, out=out)
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json", "test.jsonl", "train.jsonl", "validation.jsonl"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["train"]["total"] == 12 and manifest["seed"] == 3
    again = load_split(out)
    assert again.parts() == split.parts()
    assert again.manifest == manifest
    with pytest.raises(ValueError, match="holds a random811 split, not qmf"):
        load_split(out, "qmf")
    export_split(release, "none", out=out)  # the older parts must not linger
    assert sorted(p.name for p in out.iterdir()) == ["all.jsonl", "manifest.json"]
    assert len(load_split(out).all) == 15
    # An export of 0.1 named procedure none's one part "test": it still reads as "all".
    (out / "all.jsonl").rename(out / "test.jsonl")
    old = load_split(out)
    assert (len(old.all), old.test) == (15, [])


def test_bad_records_are_skipped_or_fatal_with_strict(release, tmp_path):
    (release / "data" / "2.jpg").write_bytes(b"\xff\xd8 broken")
    (release / "data" / "3.txt").unlink()
    split = export_split(release, "random811", out=tmp_path / "out")
    assert split.manifest["skipped"] == {"conflict": 5, "missing_text": 1, "unreadable_image": 1}
    assert sum(len(part) for part in split.parts().values()) == 13
    with pytest.raises(ValueError, match=r"3.txt: missing_text \(id 3\)"):
        export_split(release, "random811", out=tmp_path / "strict", strict=True)
    assert main(["data", "export", str(release), "--procedure", "random811", "--strict",
                 "--output", str(tmp_path / "cli")]) == 2


def test_own_data_defaults_to_one_part_named_all(tmp_path, image_file):
    image_file(tmp_path / "a.jpg")
    (tmp_path / "own.csv").write_text("image,text,label\na.jpg,x,negative\na.jpg,y,\n")
    split = load_split(tmp_path / "own.csv")
    assert (split.train, split.test, ids(split.all)) == ([], [], ["2", "3"])
    assert split.part(None, default="train") == split.part(None, default="test") == (
        "all", split.all)
    assert split.manifest["counts"] == {"all": {"total": 2, "negative": 1, "neutral": 0,
                                                "positive": 0, "unlabelled": 1}}


@pytest.mark.parametrize("procedure, fold, message", [
    ("fivefold", None, "unknown procedure 'fivefold'"),
    ("cheema10", None, "cheema10 needs --fold"),
    ("clmlf", 1, "only cheema10 takes a fold"),
    ("cheema10", 11, "fold 11 does not exist"),
    (None, None, "name a procedure"),
])
def test_procedure_errors(release, splits_dir, procedure, fold, message):
    with pytest.raises(ValueError, match=message):
        load_split(release, procedure, fold=fold, splits_dir=splits_dir)


def test_published_splits_need_an_mvsa_release(tmp_path, image_file, make_release):
    image_file(tmp_path / "a.jpg")
    (tmp_path / "own.jsonl").write_text('{"image": "a.jpg", "text": "x"}\n')
    with pytest.raises(ValueError, match="own data uses random811 or none"):
        apply_procedure(read_source(tmp_path / "own.jsonl"), "clmlf")
    multiple = make_release([("1", "positive,positive\tpositive,positive\tneutral,neutral")],
                            header="ID\ttext,image\ttext,image\ttext,image")
    with pytest.raises(ValueError, match="no published qmf split of mvsa_multiple"):
        load_split(multiple, "qmf")


def test_an_exported_folder_must_hold_the_fold_and_seed_asked_for(release, splits_dir, tmp_path):
    fold1, seeded = tmp_path / "fold1", tmp_path / "seeded"
    export_split(release, "cheema10", fold=1, splits_dir=splits_dir, out=fold1)
    export_split(release, "random811", seed=3, out=seeded)
    assert len(load_split(fold1, "cheema10", fold=1).test) == 5
    assert len(load_split(fold1).test) == 5
    with pytest.raises(ValueError, match=rf"{fold1.name} holds cheema10 fold 1, not fold 3"):
        load_split(fold1, "cheema10", fold=3)
    with pytest.raises(ValueError, match=rf"{seeded.name} holds random811 \(no fold\), not fold 2"):
        load_split(seeded, fold=2)
    with pytest.raises(ValueError, match=rf"{seeded.name} holds random811 seed 3, not seed 0"):
        load_split(seeded, "random811", seed=0)
    assert load_split(seeded, "random811", seed=3).manifest["seed"] == 3
    # Without a procedure the folder is read as written: every caller passes some seed.
    assert load_split(seeded, seed=0).manifest["seed"] == 3


def test_exported_labels_are_normalised_or_an_error_naming_the_line(release, tmp_path):
    out = tmp_path / "out"
    export_split(release, "random811", out=out)
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    rows[0]["multimodal_label"], rows[1]["text_label"] = " Positive", None
    rows[2]["image_label"] = "NEUTRAL"
    (out / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    train = load_split(out).train
    assert (train[0].multimodal_label, train[1].text_label, train[2].image_label) == (
        "positive", None, "neutral")
    rows[1]["text_label"] = "happy"
    (out / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(ValueError, match=r"train\.jsonl:2: text_label: .*'happy'"):
        load_split(out)


def test_no_data_path_is_an_error_naming_the_option():
    with pytest.raises(ValueError, match="no data given: set --data"):
        load_split(None)


def test_an_exported_split_counts_the_images_that_no_longer_open(release, tmp_path):
    out = tmp_path / "out"
    export_split(release, "random811", out=out)
    manifest = json.loads((out / "manifest.json").read_text())
    victim = json.loads((out / "test.jsonl").read_text().splitlines()[0])
    Path(victim["image"]).write_bytes(b"\xff\xd8 broken")
    split = load_split(out)
    assert victim["id"] not in ids(split.test)
    test_counts = split.manifest["counts"]["test"]
    assert test_counts["total"] == manifest["counts"]["test"]["total"] - 1 == len(split.test)
    label = victim["multimodal_label"]
    assert test_counts[label] == manifest["counts"]["test"][label] - 1
    assert split.manifest["counts"]["train"] == manifest["counts"]["train"]
    assert split.manifest["skipped"] == {"conflict": 5, "unreadable_image": 1}
    assert [(e["id"], e["reason"]) for e in split.manifest["errors"]] == [
        (victim["id"], "unreadable_image")]
    with pytest.raises(ValueError, match=rf"unreadable_image \(id {victim['id']}\)"):
        load_split(out, strict=True)
