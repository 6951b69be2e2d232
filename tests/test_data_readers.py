"""MVSA release readers and own data, on small fixtures written in tmp_path."""

from __future__ import annotations

import json

import pytest

from llavac.data import read_source, to_hf_dataset

MULTIPLE_HEADER = "ID\ttext,image\ttext,image\ttext,image"


def reasons(source):
    return {(p.id, p.reason) for p in source.problems}


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_single_release_applies_the_xu_mao_rule(make_release, newline):
    folder = make_release(
        [("1", "positive,positive"), ("2", "neutral,negative"), ("3", "positive,negative"),
         ("4", "Neutral, neutral")],
        newline=newline,
    )
    source = read_source(folder)
    assert source.kind == "mvsa_single" and source.rows == 4
    assert [(r.id, r.text_label, r.image_label, r.multimodal_label) for r in source.records] == [
        ("1", "positive", "positive", "positive"),
        ("2", "neutral", "negative", "negative"),
        ("4", "neutral", "neutral", "neutral"),
    ]
    assert reasons(source) == {("3", "conflict")}
    assert source.records[0].text == "tweet 1"
    assert source.records[0].image == str(folder.resolve() / "data" / "1.jpg")
    assert source.encodings == {"utf-8": 4}  # the conflict pair's text is decoded too


def test_multiple_release_takes_the_majority_then_the_rule(make_release):
    folder = make_release(
        [
            ("10", "positive,neutral\tpositive,neutral\tnegative,neutral"),  # positive
            ("11", "positive,neutral\tneutral,negative\tnegative,positive"),  # no text majority
            ("12", "positive,negative\tpositive,negative\tneutral,neutral"),  # conflict
            ("13", "neutral,negative\tneutral,negative\tneutral,negative"),  # negative
        ],
        header=MULTIPLE_HEADER,
    )
    source = read_source(folder)
    assert source.kind == "mvsa_multiple"
    assert [(r.id, r.text_label, r.image_label, r.multimodal_label) for r in source.records] == [
        ("10", "positive", "neutral", "positive"),
        ("13", "neutral", "negative", "negative"),
    ]
    assert reasons(source) == {("11", "no_majority"), ("12", "conflict")}
    assert [r.id for r in source.rule_dropped] == ["11", "12"]


def test_gbk_and_undecodable_texts_are_kept_and_counted(make_release):
    folder = make_release([("1", "positive,positive"), ("2", "positive,positive"),
                           ("3", "positive,positive")])
    (folder / "data" / "2.txt").write_bytes("\u201cquoted\u201d".encode("gbk"))
    (folder / "data" / "3.txt").write_bytes(b"bad \xff byte")
    source = read_source(folder)
    assert [r.text for r in source.records] == ["tweet 1", "\u201cquoted\u201d", "bad \ufffd byte"]
    assert source.encodings == {"utf-8": 1, "gb18030": 1, "replaced": 1}


def test_every_bad_row_is_one_counted_problem(make_release):
    folder = make_release([(str(i), "positive,positive") for i in range(1, 7)])
    label_file = folder / "labelResultAll.txt"
    with label_file.open("a") as f:
        f.write("7\tpositive,happy\n")  # unknown label word
        f.write("2\tneutral,neutral\n")  # duplicate id
        f.write("8\tpositive\n")  # malformed: one label
        f.write("x9\tpositive,positive\n")  # malformed: not an id
    (folder / "data" / "3.jpg").unlink()
    (folder / "data" / "4.txt").unlink()
    source = read_source(folder)
    assert [r.id for r in source.records] == ["1", "2", "5", "6"]
    assert reasons(source) == {("7", "unknown_label"), ("2", "duplicate_id"),
                               ("8", "malformed_line"), (None, "malformed_line"),
                               ("3", "missing_image"), ("4", "missing_text")}
    assert source.rows == len(source.records) + len(source.problems) == 10
    unknown = next(p for p in source.problems if p.reason == "unknown_label")
    assert unknown.file == str(label_file) and "happy" in unknown.detail
    missing = next(p for p in source.problems if p.reason == "missing_image")
    assert missing.file.endswith("3.jpg")


def test_bad_header_and_missing_label_file_are_errors_naming_the_file(make_release, tmp_path):
    folder = make_release([("1", "positive,positive")], header="id\tlabel")
    with pytest.raises(ValueError, match="labelResultAll.txt: unreadable header"):
        read_source(folder)
    with pytest.raises(FileNotFoundError, match="no labelResultAll.txt"):
        read_source(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_source(tmp_path / "nowhere")


def test_labels_without_data_folder_give_statistics_only(make_release):
    folder = make_release([("1", "positive,positive"), ("2", "negative,positive")], files=False)
    (folder / "data").rmdir()
    source = read_source(folder)
    assert not source.files_checked
    assert [r.multimodal_label for r in source.records] == ["positive"]
    assert reasons(source) == {("2", "conflict")}


@pytest.fixture
def own_folder(tmp_path, image_file):
    for name in ("a", "b", "c"):
        image_file(tmp_path / "img" / f"{name}.jpg")
    return tmp_path


def test_own_jsonl_with_relative_paths_and_the_rule(own_folder):
    rows = [
        {"image": "img/a.jpg", "text": " hi ", "multimodal_label": "Positive"},
        {"id": "x", "image": "img/b.jpg", "text": "t", "text_label": "neutral",
         "image_label": "negative"},
        {"image": "img/c.jpg", "text": "unlabelled"},
        {"image": "img/c.jpg", "text": "t", "text_label": "positive", "image_label": "negative"},
        {"image": "img/c.jpg", "text": "t", "label": "great"},  # the deprecated name
        {"image": "img/missing.jpg", "text": "t"},
        {"image": "img/c.jpg"},
    ]
    lines = [json.dumps(row) for row in rows] + ["", "{not json", "[1, 2]"]
    path = own_folder / "own.jsonl"
    path.write_text("\n".join(lines) + "\n")
    source = read_source(path)
    assert source.kind == "own" and source.rows == 9
    assert [(r.id, r.text, r.multimodal_label) for r in source.records] == [
        ("1", "hi", "positive"), ("x", "t", "negative"), ("3", "unlabelled", None)]
    assert source.records[0].image == str(own_folder / "img" / "a.jpg")
    assert reasons(source) == {("4", "conflict"), ("5", "unknown_label"), ("6", "missing_image"),
                               ("7", "missing_text"), (None, "malformed_line")}
    assert sum(p.reason == "malformed_line" for p in source.problems) == 2


def test_own_csv_and_its_errors(own_folder):
    path = own_folder / "own.csv"
    path.write_text("image,text,text_label,image_label\n"
                    "img/a.jpg,\"a, quoted\",positive,neutral\n"
                    "img/b.jpg,b,,\n"
                    "img/c.jpg,c,negative\n")
    source = read_source(path)
    assert [(r.id, r.text, r.text_label, r.multimodal_label) for r in source.records] == [
        ("2", "a, quoted", "positive", "positive"), ("3", "b", None, None)]
    assert reasons(source) == {(None, "malformed_line")}
    (own_folder / "bad.csv").write_text("picture,text\nimg/a.jpg,a\n")
    with pytest.raises(ValueError, match="bad.csv: the CSV header lacks image"):
        read_source(own_folder / "bad.csv")
    (own_folder / "own.txt").write_text("x")
    with pytest.raises(ValueError, match="must be .jsonl or .csv"):
        read_source(own_folder / "own.txt")


def test_hf_dataset_with_paths_or_decoded_images(make_release):
    records = read_source(make_release([("1", "positive,neutral")])).records
    dataset = to_hf_dataset(records)
    assert dataset.column_names == ["id", "text", "image", "text_label", "image_label",
                                    "multimodal_label"]
    assert dataset[0]["image"] == records[0].image and dataset[0]["multimodal_label"] == "positive"
    decoded = to_hf_dataset(records, decode_images=True)
    assert decoded[0]["image"].size == (8, 6)
