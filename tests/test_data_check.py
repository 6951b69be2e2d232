"""``llavac data check``: counts, problems and exit codes, through the library and the CLI."""

from __future__ import annotations

import json

from llavac.cli import main
from llavac.data.check import check_path

JSON_KEYS = {"rows", "kept", "dropped", "labels", "problems", "encodings", "seconds", "exit_code"}


def test_clean_release_exits_0_and_counts_everything(make_release, capsys):
    folder = make_release([("1", "positive,neutral"), ("2", "negative,negative"),
                           ("3", "positive,negative")])
    report = check_path(folder)
    assert (report.rows, report.kept, report.dropped) == (3, 2, {"conflict": 1})
    assert report.problems == [] and report.exit_code == 0  # a conflict is not a problem
    assert report.labels == {
        "text": {"negative": 1, "neutral": 0, "positive": 1},
        "image": {"negative": 1, "neutral": 1, "positive": 0},
        "multimodal": {"negative": 1, "neutral": 0, "positive": 1},
    }
    assert main(["data", "check", str(folder), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert JSON_KEYS <= out.keys() and out["kept"] == 2
    assert main(["data", "check", str(folder)]) == 0
    assert "3 rows, 2 kept" in capsys.readouterr().out


def test_every_problem_kind_is_reported_with_id_and_file(make_release, image_file, capsys):
    rows = [(str(i), "positive,positive") for i in range(1, 12)]
    folder = make_release(rows, newline="\r\n")
    data = folder / "data"
    for name, mode in (("1", "CMYK"), ("2", "L")):
        image_file(data / f"{name}.jpg", mode)
    image_file(data / "3.jpg", "P", "PNG")  # PNG bytes under a .jpg name: fine
    image_file(data / "4.jpg", "RGBA", "PNG")
    (data / "5.jpg").write_bytes((data / "5.jpg").read_bytes()[:100])  # truncated
    (data / "6.jpg").write_text("no image")
    (data / "7.jpg").unlink()
    (data / "8.txt").unlink()
    (data / "9.txt").write_bytes("\u201cgbk\u201d".encode("gbk"))
    with (folder / "labelResultAll.txt").open("a", newline="") as f:
        f.write("12\tpositive,sad\r\n10\tneutral,neutral\r\nbroken line\r\n")
    report = check_path(folder)
    found = {(p.id, p.reason) for p in report.problems}
    assert found == {("5", "unreadable_image"), ("6", "unreadable_image"), ("7", "missing_image"),
                     ("8", "missing_text"), ("12", "unknown_label"), ("10", "duplicate_id"),
                     (None, "malformed_line")}
    assert report.kept == 7 and report.rows == 14 and report.exit_code == 1
    assert report.encodings == {"utf-8": 8, "gb18030": 1}  # 7 and 8 lack a file
    assert all(p.file for p in report.problems)
    assert main(["data", "check", str(folder), "--json"]) == 1
    listed = json.loads(capsys.readouterr().out)["problems"]
    assert {(p["id"], p["reason"]) for p in listed} == found


def test_unreadable_image_of_a_dropped_pair_is_still_a_problem(make_release):
    folder = make_release([("1", "positive,positive"), ("2", "positive,negative")])
    (folder / "data" / "2.jpg").write_text("no image")
    report = check_path(folder)
    assert report.dropped == {"conflict": 1}
    assert [(p.id, p.reason) for p in report.problems] == [("2", "unreadable_image")]


def test_unusable_inputs_exit_2_naming_the_file(make_release, tmp_path, capsys):
    assert check_path(tmp_path / "nowhere").exit_code == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    report = check_path(empty)
    assert report.exit_code == 2 and "no labelResultAll.txt" in report.error
    bad_header = make_release([("1", "positive,positive")], header="ID\tlabels", name="bad")
    assert main(["data", "check", str(bad_header), "--json"]) == 2
    out = json.loads(capsys.readouterr().out)
    assert "labelResultAll.txt: unreadable header" in out["error"]
    nothing = make_release([("1", "positive,positive")], name="nothing")
    (nothing / "data" / "1.jpg").unlink()
    report = check_path(nothing)
    assert report.exit_code == 2 and "nothing usable" in report.error
    assert "unusable" in report.format_text()


def test_release_without_data_folder_reports_label_statistics(make_release):
    folder = make_release([("1", "positive,positive\tneutral,neutral\tpositive,positive")],
                          header="ID\ttext,image\ttext,image\ttext,image", files=False)
    (folder / "data").rmdir()
    report = check_path(folder)
    assert (report.kind, report.kept, report.exit_code) == ("mvsa_multiple", 1, 1)
    assert [p.reason for p in report.problems] == ["missing_data_folder"]


def test_own_data_check(tmp_path, image_file):
    image_file(tmp_path / "a.png", "RGBA", "PNG")
    (tmp_path / "own.jsonl").write_text('{"image": "a.png", "text": "t"}\n')
    report = check_path(tmp_path / "own.jsonl")
    assert (report.kind, report.kept, report.exit_code) == ("own", 1, 0)
    assert report.labels["multimodal"] == {"negative": 0, "neutral": 0, "positive": 0,
                                           "unlabelled": 1}
