"""``llavac predict --engine ray`` on a local 2-CPU Ray: the local engine's answers, bad-row
reports, abstentions and summary lines; a SIGKILLed driver resumed to every id exactly once; a
killed model actor that Ray restarts while the job finishes by itself."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
from test_predict_corpus import BAD_IDS, config, lines, mvsa_corpus, small_rows

from llavac.args import PredictArgs
from llavac.cli import main
from llavac.data.records import Problem
from llavac.predict import Classifier
from llavac.predict.blocks import BlockFolder, BlockResult
from llavac.predict.corpus import predict_corpus
from llavac.predict.summary import CorpusSummary

# Slow: a Ray cluster and its workers. One worker, so one Ray cluster (conftest).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]

REPO = Path(__file__).resolve().parents[1]
LABELS = ("text_label", "image_label", "multimodal_label")
BLOCK = ["--batch-size", "4", "predict.bucket=2"]  # blocks of 8 rows: many, in a short job
# Abstention on both engines: the tiny model's top probabilities lie around 0.36, so some
# slots come out "uncertain" and some not.
MIN_CONFIDENCE = 0.36


@dataclass
class Job:
    """An input, its good ids in order, and what the local engine wrote and said for it."""

    input: Path
    good: list[str]
    local: Path
    records: str  # the local engine's records: line

    def args(self, out: Path, *more: str) -> list[str]:
        return ["predict", "--model", "tiny-llava", "--device", "cpu", "--input", str(self.input),
                "--output", str(out), "--engine", "ray", *BLOCK, "--min-confidence",
                str(MIN_CONFIDENCE), *more]


def make_job(data: Path, folder: Path, pairs: int, classifier: Classifier) -> Job:
    """``pairs`` real MVSA pairs with every kind of bad row (test_predict_corpus.BAD_IDS, a
    non-string text and the first id repeated, at the end), predicted by the local engine."""
    good = mvsa_corpus(data, folder / "in.jsonl", pairs)
    first = json.loads((folder / "in.jsonl").read_text(encoding="utf-8").splitlines()[0])
    with (folder / "in.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps({"id": "number", "image": first["image"], "text": 7}) + "\n")
        f.write(json.dumps({**first, "text": "the same id again"}) + "\n")
    local = folder / "local.jsonl"
    summary = predict_corpus(config(folder / "in.jsonl", local, batch_size=4, bucket=2,
                                    min_confidence=MIN_CONFIDENCE), classifier)
    return Job(folder / "in.jsonl", good, local, summary.line())


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier.from_pretrained("tiny-llava", device="cpu")


@pytest.fixture(scope="module")
def job(shared_data, tmp_path_factory, classifier) -> Job:
    return make_job(shared_data, tmp_path_factory.mktemp("ray_job"), 160, classifier)


def folder_rows(out: Path, pattern: str) -> list[dict]:
    parts = sorted(out.glob(pattern))
    if pattern.endswith(".parquet"):
        return [row for part in parts for row in pq.read_table(part).to_pylist()]
    return [row for part in parts for row in lines(part)]


def check_equal_to_local(out: Path, job: Job, pattern: str = "part-*.jsonl") -> None:
    """Every input id once, in input order, with the local engine's labels, probabilities
    (1e-5) and skipped rows (same input rows, reasons and details)."""
    got, want = folder_rows(out, pattern), lines(job.local)
    assert [p["id"] for p in got] == job.good
    uncertain = sum(p[k] == "uncertain" for p in want for k in LABELS)
    assert 0 < uncertain < 3 * len(want)  # --min-confidence took some slots, not all
    for a, b in zip(got, want, strict=True):
        assert [a[k] for k in LABELS] == [b[k] for k in LABELS]
        for slot, probs in b["probabilities"].items():
            assert a["probabilities"][slot] == pytest.approx(probs, abs=1e-5)
    errors = folder_rows(out, "errors/part-*.jsonl")
    assert errors == lines(job.local.with_name(job.local.name + ".errors.jsonl"))
    assert {row["id"]: row["reason"] for row in errors} == {
        **BAD_IDS, "number": "bad_text", job.good[0]: "duplicate_id"}


def check_same_lines(err: list[str], job: Job, out: Path) -> None:
    """The local engine's records: line (but for the timing) and the wrote line."""
    records = [line for line in err if line.startswith("records: ")]
    assert [line.rsplit(";", 1)[0] for line in records] == [job.records.rsplit(";", 1)[0]]
    assert f"wrote {out}: predictions; skipped rows in {out / 'errors'}" in err


def test_ray_gives_the_local_engines_answers_bad_rows_and_lines(job, tmp_path, ray_cluster,
                                                                capsys):
    capsys.readouterr()
    assert main(job.args(tmp_path / "ray", "predict.progress=false")) == 0
    check_equal_to_local(tmp_path / "ray", job)
    check_same_lines(capsys.readouterr().err.splitlines(), job, tmp_path / "ray")


def test_ray_labels_a_corpus_with_a_head_run_as_the_local_engine(head_run, shared_data,
                                                                 tmp_path, ray_cluster):
    """A head run's actors read their heads: the local engine's labels and probabilities."""
    good = mvsa_corpus(shared_data, tmp_path / "in.jsonl", 24)
    base = ["predict", "--adapter", str(head_run), "--device", "cpu", "--input",
            str(tmp_path / "in.jsonl"), *BLOCK, "predict.progress=false"]
    assert main([*base, "--output", str(tmp_path / "local.jsonl")]) == 0
    assert main([*base, "--output", str(tmp_path / "ray"), "--engine", "ray"]) == 0
    got, want = folder_rows(tmp_path / "ray", "part-*.jsonl"), lines(tmp_path / "local.jsonl")
    assert [row["id"] for row in got] == good
    for a, b in zip(got, want, strict=True):
        assert [a[k] for k in LABELS] == [b[k] for k in LABELS]
        assert set(b["probabilities"]) == {"text", "image", "multimodal"}
        for slot, probs in b["probabilities"].items():
            assert a["probabilities"][slot] == pytest.approx(probs, abs=1e-5)


@pytest.mark.slow  # test_ray_gives_the_local_engines_answers_bad_rows_and_lines, on 300
def test_two_thousand_real_pairs_as_the_local_engine(shared_data, tmp_path, classifier,
                                                     ray_cluster, capsys):
    job = make_job(shared_data, tmp_path, 2000, classifier)
    capsys.readouterr()
    assert main(job.args(tmp_path / "ray", "predict.progress=false")) == 0
    check_equal_to_local(tmp_path / "ray", job)
    check_same_lines(capsys.readouterr().err.splitlines(), job, tmp_path / "ray")


def wait_for(condition, what: str, job, seconds: float = 300):
    """Poll ``condition()`` until it holds; ``job`` (a process or a thread) must not end first."""
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        alive = job.poll() is None if isinstance(job, subprocess.Popen) else job.is_alive()
        assert alive, f"the job ended before {what}"
        assert time.monotonic() < deadline, f"no {what} within {seconds} s"
        time.sleep(0.05)
    return value


def model_actors() -> list[psutil.Process]:
    """The processes of the model actor pool (Ray names a worker after what it runs)."""
    return [process for process in psutil.process_iter(["cmdline"])
            if "ModelActor" in " ".join(process.info["cmdline"] or ())]


def test_killed_driver_resumes_and_killed_actor_restarts_every_id_once(
        job, tmp_path, ray_cluster, capsys):
    """A quiet driver (Parquet results) is SIGKILLed after 3 blocks are committed: the same
    command is refused, another --min-confidence is refused on resume. During the --resume,
    the model actor is SIGKILLed: Ray restarts it, the job finishes by itself, and every id
    is there once, as the local engine wrote it."""
    out = tmp_path / "ray"
    args = job.args(out, "--ray-address", ray_cluster, "--out-format", "parquet")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with (tmp_path / "stderr").open("w") as stderr:
        driver = subprocess.Popen([sys.executable, "-m", "llavac.cli", *args, "-q"], env=env,
                                  stderr=stderr)
        folder = BlockFolder(out, "parquet")
        wait_for(lambda: len(folder.committed_blocks()) >= 3, "3 committed blocks", driver)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    quiet = (tmp_path / "stderr").read_text()
    assert "predicting" not in quiet and "Running Dataset" not in quiet  # no progress at all
    committed = folder.committed_blocks()
    assert 3 <= len(committed) < len(job.good) // 8

    capsys.readouterr()
    assert main(args) == 2  # an earlier job's output: neither resumed nor replaced silently
    assert "pass --resume to continue it or --overwrite" in capsys.readouterr().err
    assert main([*args, "--min-confidence", "0.5", "--resume"]) == 2  # not the same job
    assert "min_confidence 0.36 there, 0.5 now" in capsys.readouterr().err

    exit_code, earlier = [], {process.pid for process in model_actors()}  # none, or dying
    resume = threading.Thread(target=lambda: exit_code.append(
        main([*args, "--resume", "predict.progress=false"])))
    resume.start()
    victim = wait_for(lambda: len(folder.committed_blocks()) > len(committed) + 1 and [
        p for p in model_actors() if p.pid not in earlier], "a model actor at work", resume)[0]
    victim.send_signal(signal.SIGKILL)
    at_kill = len(folder.committed_blocks())
    wait_for(lambda: [p for p in model_actors() if p.pid != victim.pid],
             "a restarted model actor", resume)
    resume.join(timeout=300)
    assert exit_code == [0] and at_kill < len(folder.committed_blocks())

    check_equal_to_local(out, job, "part-*.parquet")
    done = sum(folder.read_record(block)["predicted"] for block in committed)
    assert f"; {done} already done; " in capsys.readouterr().err


def test_bad_input_and_strict_are_one_line(tmp_path, ray_cluster, image_file, capsys):
    """A CSV without an image column: one line, nothing written (so the fixed rerun is not
    refused). --strict: one line naming the bad row, as the local engine's."""
    bad = tmp_path / "in.csv"
    bad.write_text("id,picture,text\n1,a.jpg,so happy\n")
    capsys.readouterr()
    assert main(Job(bad, [], bad, "").args(tmp_path / "ray")) == 2
    assert capsys.readouterr().err == f"llavac: error: {bad}: the CSV header lacks image\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]

    rows = small_rows(tmp_path, image_file)  # a repeated id and a number for a text
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    strict = Job(tmp_path / "in.jsonl", [], bad, "").args(tmp_path / "ray", "--strict",
                                                            "predict.progress=false")
    assert main(strict) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"llavac: error: {tmp_path / 'img' / '2.png'}: duplicate_id (id r1) an earlier row "
        "has this id [--strict]"]


def result(block: int, predicted: int, problems: list[str]) -> BlockResult:
    counts = CorpusSummary(predicted=predicted)
    for line in problems:
        counts.skip(Problem(**{k: v for k, v in json.loads(line).items() if k != "row"}))
    predictions = [json.dumps({"id": f"b{block}-{i}", "multimodal_label": "positive"})
                   for i in range(predicted)]
    return BlockResult(block, predictions, problems, counts)


def test_the_block_folder_claims_only_its_own_job_and_commits_whole_blocks(tmp_path):
    """Refusals (a file, a folder of other things, a job without --resume or --overwrite, other
    settings on resume), --overwrite removing its own files only, and a block committed twice
    (a retry) leaving its newer outcome alone."""
    settings, job = {"method": "score"}, PredictArgs(input="x")
    with pytest.raises(ValueError, match="a file; --engine ray writes a folder"):
        (tmp_path / "file").write_text("x")
        BlockFolder(tmp_path / "file").claim(job, settings)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds no llavac predict job"):
        BlockFolder(tmp_path / "other").claim(dataclasses.replace(job, overwrite=True), settings)

    folder = BlockFolder(tmp_path / "out")
    assert folder.claim(job, settings) == {}
    problem = json.dumps({"row": 3, "id": "x", "file": "f", "reason": "missing_image",
                          "detail": ""})
    folder.commit(result(0, 2, [problem]))
    folder.commit(result(1, 1, []))
    with pytest.raises(ValueError, match="holds a job: pass --resume"):
        folder.claim(job, settings)
    with pytest.raises(ValueError, match="method 'score' there, 'generate' now"):
        folder.claim(dataclasses.replace(job, resume=True), {"method": "generate"})
    earlier = folder.claim(dataclasses.replace(job, resume=True), settings)
    assert sorted(earlier) == [0, 1]
    folder.commit(result(0, 3, []))  # block 0 again, now without the bad row
    assert not folder.errors(0).exists() and len(lines(folder.part(0))) == 3
    summary = folder.summary({1: earlier[1]}, 1.0)
    assert (summary.predicted, summary.already_done, summary.skipped) == (3, 1, {})

    (folder.root / "mine.txt").write_text("kept")
    folder.claim(dataclasses.replace(job, overwrite=True), settings)
    assert sorted(p.name for p in folder.root.iterdir()) == ["_llavac", "errors", "mine.txt"]
    assert folder.committed() == {}
