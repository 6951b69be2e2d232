"""The command line never surprises: bad invocations get one error line and exit 2 with
nothing written, finished results are not overwritten silently, an unreachable hub fails
fast, and a training log file is readable."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llavac.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def split(tmp_path_factory, synthetic_release) -> Path:
    """An exported random811 split of the synthetic release (600 pairs), and beside it the
    inputs of the bad invocations: files, a study and run folders as llavac writes them."""
    from llavac.data.export import export_split

    out = tmp_path_factory.mktemp("cli") / "split"
    export_split(synthetic_release, "random811", out=out)
    # A corpus whose image column is misnamed (``predict --input``): a bad column, one line.
    (out.parent / "bad_column.csv").write_text("id,picture,text\n1,a.jpg,so happy\n")
    # Own data whose image paths are relative to another folder: every record missing_image.
    (out.parent / "elsewhere.jsonl").write_text("".join(
        f'{{"id": "{i}", "image": "images/{i}.jpg", "text": "t", "multimodal_label": '
        '"positive"}\n' for i in range(3)))
    # A split whose validation part is its train part (what the run below trained on).
    leaky = out.parent / "leaky"
    shutil.copytree(out, leaky)
    shutil.copy(leaky / "train.jsonl", leaky / "validation.jsonl")
    return out


@pytest.fixture(scope="module")
def folders(split, finished_run, tmp_path_factory) -> dict[str, Path]:
    """Folders a rerun must leave alone: a finished run with a calibration, an unfinished
    run (interrupted before its manifest), and a study's settings (a sweep's config.yaml)."""
    from llavac.args import SweepConfig
    from llavac.config import load_config, save_config

    root = tmp_path_factory.mktemp("folders")
    calibrated = root / "calibrated"
    shutil.copytree(finished_run, calibrated)
    (calibrated / "calibration.json").write_text('{"temperatures": {"multimodal": 1.5}}\n')
    unfinished = root / "unfinished"
    shutil.copytree(finished_run, unfinished)
    (unfinished / "manifest.json").unlink()
    study = root / "study"
    study.mkdir()
    save_config(load_config(SweepConfig, "tiny_synthetic", [
        f"data.path={split}", f"sweep.output={study}"]), study / "config.yaml")
    (study / "best.yaml").write_text("# the best trial's config\n")
    return {"calibrated": calibrated, "unfinished": unfinished, "study": study,
            "run": finished_run}


def _bad(split: Path, folders: dict[str, Path]) -> list[list[str]]:
    """Bad invocations: those a user met, then more of the same kinds."""
    data = ["--data", str(split)]
    tiny = ["--model", "tiny-llava"]
    elsewhere = str(split.parent / "elsewhere.jsonl")
    leaky = ["--data", str(split.parent / "leaky")]
    run, study = str(folders["run"]), str(folders["study"])
    sweep = ["sweep", "--config", "tiny_synthetic", *data, "--output", study]
    return [
        # met by a user (the table)
        ["predict", *tiny, "--input", str(split), "--batch-size", "-4"],
        ["predict", *tiny, "--input", str(split), "--batch-size", "0"],
        ["evaluate", *tiny, *data, "--batch-size", "-4"],
        ["train", *tiny, *data, "--max-steps", "-3"],
        ["predict", "--adapter", "does/not/exist", "--input", str(split)],
        # more of the same kinds
        ["train", *tiny, *data, "--procedure", "fivefold"],
        ["train", *tiny, *data, "--fold", "11"],
        ["train", *tiny, *data, "--tuning", "qlora"],
        ["train", *tiny, *data, "--method", "score"],  # --method is score | generate only
        ["train", *tiny, *data, "train.lr=-1"],
        ["train", *tiny, *data, "train.lr=abc"],
        ["train", *tiny, *data, "train.epochs=0"],
        ["train", *tiny, *data, "lora.dropout=1.5"],
        ["train", *tiny, *data, "train.num_workers=-1"],
        ["train", *tiny, *data, "nosuch.key=1"],
        ["train", *tiny, *data, "train.lr"],
        ["train", *tiny, "--data", "no/such/folder"],
        ["train", *tiny],
        ["evaluate", *tiny, *data, "--part", "dev"],
        ["evaluate", *tiny, *data, "--method", "beam"],
        ["evaluate", *tiny, "--data", "no/such/folder"],
        ["predict", *tiny, "--text", "an image is missing"],
        ["predict", *tiny, "--input", str(split), "--method", "guess"],
        ["train", *tiny, *data, "--threads", "0"],
        ["train", *tiny, *data, "--no-such-flag"],
        ["data", "export", str(split), "--procedure", "tenfold", "--output", "x"],
        ["experiment", "--config", "no_such_preset"],
        ["evaluate", *tiny, *data, "--reliance-pairs", "-1"],
        ["explain", *tiny, "--text", "an image is missing"],
        ["explain", *tiny, "--image", "no/such.jpg", "--text", "t"],
        ["explain", *tiny, "--input", "no/such.jsonl"],
        ["explain", *tiny, "--input", str(split), "--grid", "0"],
        ["report", "no/such/folder"],
        ["report", str(split)],  # a folder without an evaluation
        # a corpus with a bad column writes no output that the fixed rerun would refuse
        ["predict", *tiny, "--input", str(split.parent / "bad_column.csv"), "--output",
         "p.jsonl"],
        ["predict", *tiny, "--input", str(split), "--output", "p.jsonl", "--concurrency", "2"],
        ["predict", *tiny, "--input", str(split), "--engine", "ray"],  # no --output folder
        ["predict", *tiny, "--input", str(split), "--engine", "ray", "--num-workers", "2"],
        # issue 26, 3: image paths relative to the wrong folder: the reason, counted
        ["data", "export", elsewhere, "--procedure", "none", "--output", "x"],
        ["train", *tiny, "--data", elsewhere, "--procedure", "none"],
        # issue 26, 5: a study with other settings, or the same one without --resume
        [*sweep, "train.lr=1e-3"],
        [*sweep, "--procedure", "none"],  # not how the split was made: nothing written before
        sweep,
        # issue 26, 6: calibrate and robustness refuse what evaluate refuses
        ["calibrate", str(folders["calibrated"]), *data],
        ["calibrate", str(folders["unfinished"]), *data],
        ["calibrate", run, *leaky],
        ["calibrate", *data],  # no RUN
        ["robustness", run, *data, "--part", "train", "--output", "r"],
        ["robustness", run, "--adapter", run, *data, "--output", "r"],
        ["robustness", str(folders["unfinished"]), *data, "--output", "r"],
        # issue 26, 8: smaller points
        ["demo", "--procedure", "qmf", "--output", "d"],  # MVSA's id list on synthetic data
        ["serve", *tiny, "--adapter", "no/such/run"],  # refused before uvicorn starts
        ["serve", *tiny, "--adapter", str(split)],  # a folder, but not a run
        ["export", "--output", "e"],  # no RUN
        ["compare", str(split)],  # one EVAL folder of two
        ["data", "check"],  # no PATH
        ["report", str(split), "report.nosuch=1"],
        ["experiment", "--config", "tiny_experiment", "data.path=no/such", "--output", "e"],
    ]


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_each_bad_invocation_is_one_error_line_exit_2_nothing_written(
        split, folders, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    snapshots = {name: _snapshot(folder) for name, folder in folders.items()}
    for argv in _bad(split, folders):
        before = _snapshot(tmp_path), _snapshot(split)
        with pytest.raises(SystemExit) as exited:  # argparse's own errors exit
            raise SystemExit(main([*argv, "--output", str(tmp_path / "out")]
                                  if argv[0] in ("train", "evaluate") else argv))
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert exited.value.code == 2, (argv, err)
        assert len(lines) == 1 and lines[0].startswith("llavac: error: "), (argv, err)
        assert "Traceback" not in err
        assert (_snapshot(tmp_path), _snapshot(split)) == before, argv
        assert all(_snapshot(folder) == snapshots[name] for name, folder in folders.items())


def test_errors_name_the_flag_or_key(split, capsys):
    main(["train", "--model", "tiny-llava", "--data", str(split), "--max-steps", "-3"])
    assert "--max-steps: train.max_steps" in capsys.readouterr().err
    main(["train", "--model", "tiny-llava", "--data", str(split), "train.epochs=0"])
    assert "train.epochs" in capsys.readouterr().err


def test_procedure_names_are_case_insensitive(split, tmp_path):
    from llavac.args import DataArgs

    assert DataArgs(procedure="QMF").procedure == "qmf"


def test_every_command_of_the_table_takes_config_flags_and_overrides(capsys):
    from llavac.cli.table import COMMANDS

    assert len(COMMANDS) == 16  # data check / export and the 14 others
    for command in COMMANDS:
        with pytest.raises(SystemExit) as exited:
            main([*command.name.split(), "--help"])
        out = capsys.readouterr().out
        assert exited.value.code == 0
        assert "--config YAML" in out and "key=value" in out, command.name
        assert "config keys (key=value, defaults shown):" in out, command.name
        for flag in [*command.flags, *command.positionals]:  # each names its key
            assert flag.option in out and f"{flag.key}" in out, (command.name, flag)


def test_version(capsys):
    from llavac import __version__

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out == f"llavac {__version__}\n"


def test_a_0_2_run_folder_with_train_method_loads_predicts_and_resumes(
        finished_run, split, tmp_path, capsys):
    """0.2 saved ``train.method``: its run folders keep working, with a warning."""
    old = tmp_path / "run-0.2"
    shutil.copytree(finished_run, old)
    config = (old / "config.yaml").read_text()
    assert "  tuning: full\n" in config
    (old / "config.yaml").write_text(config.replace("  tuning: full\n", "  method: full\n"))
    first = json.loads((split / "test.jsonl").read_text().splitlines()[0])
    assert main(["predict", "--adapter", str(old), "--image", first["image"], "--text",
                 first["text"]]) == 0
    assert json.loads(capsys.readouterr().out)["multimodal_label"] in ("negative", "neutral",
                                                                 "positive")
    with pytest.warns(FutureWarning, match="'train.method' is deprecated: use 'train.tuning'"):
        assert main(["train", "--config", str(old / "config.yaml"), "--output", str(old),
                     "--resume"]) == 0  # its settings compared: the same, nothing to redo
    err = capsys.readouterr().err
    assert "llavac: warning: config key 'train.method' is deprecated" in err


def test_text_mode_names_why_nothing_was_usable(split, capsys):
    assert main(["data", "check", str(split.parent / "elsewhere.jsonl")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("llavac: error: unusable: ")
    assert "dropped: missing_image 3" in err and len(err.splitlines()) == 1


def test_quiet_prints_no_table_and_out_still_reads(finished_run, split, tmp_path, capsys):
    evaluate = ["evaluate", "--adapter", str(finished_run), "--data", str(split),
                "eval.reliance_pairs=0", "eval.progress=false"]
    assert main([*evaluate, "--output", str(tmp_path / "eval"), "-q"]) == 0
    shown = capsys.readouterr()
    assert shown.out == "" and "records:" not in shown.err
    first = json.loads((split / "test.jsonl").read_text().splitlines()[0])
    assert main(["predict", "--adapter", str(finished_run), "--image", first["image"],
                 "--text", first["text"], "--out", str(tmp_path / "one.jsonl")]) == 0
    assert "--out is deprecated: use --output" in capsys.readouterr().err
    assert json.loads((tmp_path / "one.jsonl").read_text())["id"] == Path(first["image"]).name


def test_help_shows_config_keys_and_defaults(capsys):
    for command in ("train", "evaluate", "predict"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        assert "--config" in out and "key=value" in out and "default:" in out
        assert "--threads" in out and "--quiet" in out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "train.lr=0.0002" in out and "none" in out  # every key; procedure none is listed


def _llavac(*args: str, env: dict | None = None, **streams) -> subprocess.CompletedProcess:
    streams = streams or {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    return subprocess.run([sys.executable, "-m", "llavac.cli", *args], cwd=REPO, text=True,
                          timeout=300, env={**os.environ, **(env or {})}, **streams)


def test_an_uncached_hub_model_without_network_fails_fast_in_one_line(split, tmp_path):
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "http://127.0.0.1:9"}
    start = time.perf_counter()
    done = _llavac("train", "--data", str(split), "--output", str(tmp_path / "run"), env=env)
    seconds = time.perf_counter() - start
    errors = [line for line in done.stderr.splitlines() if line.startswith("llavac: error:")]
    assert done.returncode == 2 and seconds < 30, (seconds, done.stderr)
    assert len(errors) == 1 and "llava-hf/llava-1.5-7b-hf" in errors[0]
    assert "not in the local Hugging Face cache" in errors[0] and "--model PATH" in errors[0]
    assert "Traceback" not in done.stderr and "Retry" not in done.stderr
    assert "about 14 GB" in done.stderr  # it said what it was about to fetch
    offline = _llavac("train", "--data", str(split), "--output", str(tmp_path / "run"),
                      env={**env, "HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 2 and "HF_HUB_OFFLINE is set" in offline.stderr


@pytest.mark.slow  # a CLI subprocess trains
def test_a_finished_run_is_not_overwritten_and_the_log_file_is_readable(split, tmp_path):
    run = tmp_path / "run"
    args = ("train", "--config", "tiny_synthetic", "--data", str(split), "--output", str(run),
            "--max-steps", "4", "train.logging_steps=2", "train.batch_size=4")
    with (tmp_path / "log").open("w") as log:
        first = _llavac(*args, stderr=log, stdout=subprocess.PIPE)
    assert first.returncode == 0
    text = (tmp_path / "log").read_text()
    assert "\r" not in text and "warn" not in text.lower(), text
    assert "step 2/4  loss " in text and "step 4/4  loss " in text
    assert re.search(r"records: \d+ used from the train part; none skipped", text), text
    assert f"wrote {run}" in text

    before = _snapshot(run)
    again = _llavac(*args)
    assert again.returncode == 2 and str(run) in again.stderr
    assert "--overwrite" in again.stderr and "--resume" in again.stderr
    assert _snapshot(run) == before  # byte-identical

    (run / "stale.txt").write_text("left by the old run")
    replaced = _llavac(*args, "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert (run / "manifest.json").is_file() and not (run / "stale.txt").exists()


def test_usage_line_counts_bad_records_by_reason_with_their_ids():
    from llavac.data.records import usage_line

    manifest = {"skipped": {"conflict": 5, "missing_image": 2, "unreadable_image": 1},
                "errors": [{"id": "12"}, {"id": "40"}, {"id": "77"}]}
    assert usage_line(manifest, 100, "train") == (
        "records: 100 used from the train part; 3 skipped (missing_image 2, "
        "unreadable_image 1; first ids: 12, 40, 77); left out on purpose: conflict 5")
    assert usage_line({"skipped": {}}, 7, "test") == "records: 7 used from the test part; " \
                                                     "none skipped"


def test_evaluation_hints_name_the_usual_cause():
    from llavac.evaluation.metrics import hints, slot_metrics

    gold = ["positive", "neutral", "negative", "positive"]
    one_class = {"records": 4, "unparseable": 0,
                 "slots": {"multimodal": slot_metrics(gold, ["positive"] * 4)}}
    (hint,) = hints(one_class)
    assert "every pair got the multimodal label 'positive'" in hint
    rambling = {"records": 4, "unparseable": 3,
                "slots": {"multimodal": slot_metrics(gold, [None, None, None, "neutral"])}}
    (hint,) = hints(rambling)
    assert "3 of 4 answers did not parse" in hint
    varied = {"records": 4, "unparseable": 0,
              "slots": {"multimodal": slot_metrics(gold, ["positive", "neutral", "neutral",
                                                          "negative"])}}
    assert hints(varied) == []
