"""Corpus prediction: streamed readers (JSONL, CSV, Parquet, split folder), bad rows skipped and
reported by id, the refusals that protect an earlier job's output, and a SIGKILL in the middle
of a job followed by ``--resume``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from llavac.args import ClassifierArgs, PredictArgs, PredictConfig
from llavac.cli import main
from llavac.data import read_text
from llavac.data.records import Problem, Record
from llavac.data.stream import count_rows, stream_records
from llavac.models import apply_image_mode, build_tiny, model_type, resolve_inputs
from llavac.predict import Classifier
from llavac.predict.batching import collate, encode_pair, processor_inputs
from llavac.predict.corpus import predict_corpus
from llavac.predict.outfile import check_settings, done_ids, repair
from llavac.prompt import PromptFormat

REPO = Path(__file__).resolve().parents[1]
BAD_IDS = {"gone": "missing_image", "not-an-image": "unreadable_image", "no-text": "missing_text"}


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier.from_pretrained("tiny-llava", device="cpu")


def mvsa_corpus(data: Path, path: Path, n: int) -> list[str]:
    """A JSONL of the first ``n`` real MVSA-Single pairs plus the three bad rows of
    ``BAD_IDS`` in the middle; returns the good ids in input order."""
    folder = data / "mvsa_single" / "data"
    numbers = sorted(int(p.stem) for p in folder.glob("*.jpg"))[:n]
    rows = [{"id": f"mvsa-{k}", "image": str(folder / f"{k}.jpg"),
             "text": read_text(folder / f"{k}.txt").text.strip()} for k in numbers]
    bad = [{"id": "gone", "image": "no/such.jpg", "text": "where is it"},
           {"id": "not-an-image", "image": str(folder / f"{numbers[0]}.txt"), "text": "a text"},
           {"id": "no-text", "image": str(folder / f"{numbers[1]}.jpg")}]
    middle = len(rows) // 2
    rows[middle:middle] = bad
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return [f"mvsa-{k}" for k in numbers]


def config(input: Path, out: Path | None, **predict) -> PredictConfig:
    return PredictConfig(ClassifierArgs(name="tiny-llava", device="cpu"),
                         PredictArgs(input=str(input), output=str(out) if out else None,
                                     progress=False, num_workers=0, **predict))


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.slow  # 2,000 real pairs
def test_two_thousand_real_pairs_with_three_bad_rows(shared_data, tmp_path, classifier):
    """2,000 real MVSA pairs and 3 bad rows: 2,000 predictions in input order, the bad rows
    in the errors file by id and reason and in the summary, nothing else lost."""
    good = mvsa_corpus(shared_data, tmp_path / "in.jsonl", 2000)
    out = tmp_path / "out.jsonl"
    summary = predict_corpus(config(tmp_path / "in.jsonl", out, batch_size=64), classifier)
    assert [p["id"] for p in lines(out)] == good
    errors = {row["id"]: row["reason"] for row in lines(tmp_path / "out.jsonl.errors.jsonl")}
    assert errors == BAD_IDS
    assert (summary.predicted, summary.skipped, summary.already_done) == (
        2000, {"missing_image": 1, "missing_text": 1, "unreadable_image": 1}, 0)
    assert summary.line().startswith(
        "records: 2000 predicted; 3 skipped (missing_image 1, missing_text 1, unreadable_image 1;"
        " first ids: gone, not-an-image, no-text); 0 already done; ")


@pytest.mark.slow  # a CLI subprocess, a kill
def test_sigkill_then_resume_gives_every_id_once(shared_data, tmp_path, classifier, capsys):
    """A job killed while ``--out`` holds a few hundred lines, with its last line torn, resumes
    to every input id exactly once, in input order, with the labels of an uninterrupted run."""
    good = mvsa_corpus(shared_data, tmp_path / "in.jsonl", 600)
    reference = tmp_path / "reference.jsonl"
    predict_corpus(config(tmp_path / "in.jsonl", reference, batch_size=8), classifier)

    out = tmp_path / "out.jsonl"
    args = ["predict", "--model", "tiny-llava", "--device", "cpu", "--input",
            str(tmp_path / "in.jsonl"), "--output", str(out), "--batch-size", "8",
            "--num-workers", "0"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    job = subprocess.Popen([sys.executable, "-m", "llavac.cli", *args], env=env,
                           stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    written = 0
    while written < 200:
        assert job.poll() is None, "the job ended before it could be killed"
        assert time.monotonic() < deadline, "the job wrote too slowly"
        time.sleep(0.02)
        written = out.read_bytes().count(b"\n") if out.exists() else 0
    job.send_signal(signal.SIGKILL)
    job.wait()
    held = out.read_bytes().count(b"\n")
    assert 200 <= held < len(good)
    with out.open("a", encoding="utf-8") as f:  # a write cut short by the kill
        f.write('{"id": "mvsa-')

    assert main(args) == 2  # an earlier job's output: neither resumed nor replaced silently
    assert "pass --resume to continue that job or --overwrite" in capsys.readouterr().err
    assert main([*args, "--method", "generate", "--resume"]) == 2  # not the same job
    assert "method 'score' there, 'generate' now" in capsys.readouterr().err
    assert main([*args, "--resume", "predict.progress=false"]) == 0
    assert f"; {held} already done; " in capsys.readouterr().err

    resumed, expected = lines(out), lines(reference)
    assert [p["id"] for p in resumed] == good
    for got, want in zip(resumed, expected, strict=True):
        assert [got[k] for k in ("text_label", "image_label", "multimodal_label")] == \
            [want[k] for k in ("text_label", "image_label", "multimodal_label")]
        for slot, probs in want["probabilities"].items():
            assert got["probabilities"][slot] == pytest.approx(probs, abs=1e-5)


def small_rows(folder: Path, image_file) -> list[dict]:
    """Eight rows with images relative to ``folder``, texts of different lengths, and bad rows:
    a duplicate id, a number as text."""
    rows = []
    for i in range(8):
        image_file(folder / "img" / f"{i}.png", fmt="PNG", size=(20 + 3 * i, 16))
        rows.append({"id": f"r{i}", "image": f"img/{i}.png", "text": "word " * (1 + 3 * i % 7)})
    rows.insert(3, {"id": "r1", "image": "img/2.png", "text": "again"})
    rows.insert(5, {"id": "num", "image": "img/2.png", "text": 7})
    return rows


def test_readers_stream_jsonl_csv_parquet_and_split_folders(tmp_path, image_file):
    """Every format gives the same records, images resolved against the file's folder, and
    the same problems; a split folder streams its parts in order."""
    rows = small_rows(tmp_path, image_file)
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pq.write_table(pa.Table.from_pylist([{**r, "text": str(r["text"])} if r["id"] != "num"
                                         else {**r, "text": None} for r in rows]),
                   tmp_path / "in.parquet")
    header = "id,image,text\n"
    (tmp_path / "in.csv").write_text(header + "".join(
        f"{r['id']},{r['image']},{r['text']}\n" for r in rows if r["id"] != "num"))
    jsonl, parquet, csv = (list(stream_records(tmp_path / f"in.{ext}"))
                           for ext in ("jsonl", "parquet", "csv"))
    good = [r for r in jsonl if isinstance(r, Record)]
    assert [r.id for r in good] == [f"r{i}" for i in range(8)]
    assert good[2].image == str(tmp_path / "img" / "2.png")
    assert [(p.id, p.reason) for p in jsonl if isinstance(p, Problem)] == [
        ("r1", "duplicate_id"), ("num", "bad_text")]
    assert [(p.id, p.reason) for p in parquet if isinstance(p, Problem)] == [
        ("r1", "duplicate_id"), ("num", "missing_text")]
    assert [r for r in parquet if isinstance(r, Record)] == good
    assert [r.id for r in csv if isinstance(r, Record)] == [r.id for r in good]
    assert count_rows(tmp_path / "in.parquet") == len(rows) == count_rows(tmp_path / "in.jsonl")
    assert len(list(stream_records(tmp_path / "in.jsonl", limit=3))) == 3

    split = tmp_path / "split"
    split.mkdir()
    (split / "train.jsonl").write_text("".join(r.to_json() + "\n" for r in good[:5]))
    (split / "test.jsonl").write_text("".join(r.to_json() + "\n" for r in good[5:]))
    assert list(stream_records(split)) == good
    with pytest.raises(ValueError, match="must be .jsonl, .csv, .parquet"):
        list(stream_records(tmp_path / "img" / "0.png"))


def test_refusals_overwrite_strict_and_predict_iter(tmp_path, image_file, classifier, capsys):
    """An existing output is never replaced or resumed silently; --overwrite replaces it;
    --strict stops at the first bad row; predict_iter with a worker gives the same predictions
    in order, and an unreadable image raises there."""
    rows = small_rows(tmp_path, image_file)
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    first = predict_corpus(config(tmp_path / "in.jsonl", out, batch_size=3), classifier)
    assert (first.predicted, first.skipped) == (8, {"bad_text": 1, "duplicate_id": 1})
    with pytest.raises(ValueError, match="pass --resume to continue that job or --overwrite"):
        predict_corpus(config(tmp_path / "in.jsonl", out), classifier)
    again = predict_corpus(config(tmp_path / "in.jsonl", out, resume=True), classifier)
    assert (again.predicted, again.already_done) == (0, 8)
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:4]))
    replaced = predict_corpus(config(tmp_path / "in.jsonl", out, overwrite=True), classifier)
    assert replaced.predicted == 3 and len(lines(out)) == 3
    with pytest.raises(ValueError, match=r"duplicate_id \(id r1\).*--strict"):
        predict_corpus(config(tmp_path / "in.jsonl", out, overwrite=True, strict=True),
                       classifier)

    records = [Record(f"r{i}", "word " * i, str(tmp_path / "img" / f"{i}.png")) for i in range(8)]
    serial = classifier.predict(records, batch_size=3, progress=False)
    prefetched = list(classifier.predict_iter(iter(records), batch_size=3, progress=False,
                                              num_workers=1))
    assert [p.id for p in prefetched] == [r.id for r in records]
    assert [p.multimodal_label for p in prefetched] == [p.multimodal_label for p in serial]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match="broken.png"):
        classifier.predict([Record("x", "t", str(broken))], progress=False)


def test_repair_cuts_only_a_torn_last_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}\n{"id": "c", "te')
    assert repair(path) == len('{"id": "c", "te')
    assert path.read_text() == '{"id": "a"}\n{"id": "b"}\n'
    assert repair(path) == 0


def test_a_sidecar_rewrite_killed_at_any_moment_leaves_it_whole(tmp_path):
    """OUT.meta.json is written as a resume writes it, over and over, by a process SIGKILLed
    ten times at random moments: each time the sidecar is whole and proves the same job (a
    write in place would leave it torn about as often as not)."""
    meta = tmp_path / "out.jsonl.meta.json"
    settings = {"model": "tiny-llava", "input": str(tmp_path / "in.jsonl"),
                "prompt": "full " * 2000}  # long enough that a write takes a while
    script = ("import json, sys\nfrom pathlib import Path\n"
              "from llavac.predict.outfile import write_settings\n"
              "path, settings = Path(sys.argv[1]), json.loads(sys.argv[2])\n"
              "while True:\n    write_settings(path, settings)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for _ in range(10):
        meta.unlink(missing_ok=True)
        writer = subprocess.Popen([sys.executable, "-c", script, str(meta), json.dumps(settings)],
                                  env=env)
        deadline = time.monotonic() + 60
        while not meta.exists():  # the first write is done: the loop is rewriting it now
            assert writer.poll() is None and time.monotonic() < deadline, "the writer failed"
            time.sleep(0.01)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        check_settings(meta, settings)
    # A kill may leave a temporary file beside it; its name starts with a dot.
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == [meta.name]


@pytest.mark.parametrize("name", ["tiny-llava", "tiny-llava-next", "tiny-paligemma",
                                  "tiny-gemma3", "tiny-idefics3"])
def test_pairs_encoded_one_by_one_collate_to_the_processors_batch(name):
    """Workers encode each pair as its image is decoded; collating those encodings gives
    exactly the tensors the processor gives for the whole batch (images of different sizes,
    so LLaVA-NeXT's tile counts differ; texts of different lengths)."""
    _, processor = build_tiny(name, 0)
    image_mode, system = resolve_inputs(model_type(name), None, None)
    apply_image_mode(processor, image_mode)
    fmt = PromptFormat.from_name("full", system)
    images = [Image.new("RGB", (40 + 90 * i, 30 + 7 * i), (60 * i, 50, 90)) for i in range(3)]
    texts = ["a", "so happy with this view today", "b c d"]
    _, batch = processor_inputs(processor, fmt, images, texts)
    pairs = [encode_pair(processor, fmt, image, text)[1]
             for image, text in zip(images, texts, strict=True)]
    collated = collate(pairs, processor.tokenizer.pad_token_id)
    assert collated.keys() == batch.keys()
    for key, value in batch.items():
        assert torch.equal(collated[key], value), key


def test_ids_with_unicode_line_breaks_survive_a_resume(tmp_path):
    """U+2028, U+0085 and U+000C are line breaks to str.splitlines, not to a JSONL file: ids
    holding them are read back whole."""
    ids = ["a\u2028b", "c\u0085d", "e\x0cf", "plain"]
    out = tmp_path / "out.jsonl"
    out.write_text("".join(json.dumps({"id": i, "multimodal_label": "positive"},
                                      ensure_ascii=False) + "\n" for i in ids),
                   encoding="utf-8")
    assert done_ids(out) == set(ids)


def test_the_local_engine_never_imports_ray(tmp_path, image_file):
    rows = small_rows(tmp_path, image_file)
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    script = ("import sys\nfrom llavac.cli import main\n"
              f"code = main(['predict', '--model', 'tiny-llava', '--device', 'cpu', '--input', "
              f"{str(tmp_path / 'in.jsonl')!r}, '--output', {str(tmp_path / 'out.jsonl')!r}, "
              "'--num-workers', '0', '-q'])\n"
              "assert code == 0 and 'ray' not in sys.modules, sorted(sys.modules)[:5]\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_images_over_the_pixel_bound_or_of_a_refused_format_are_skipped_by_kind(
        tmp_path, image_file, classifier):
    """predict.max_image_pixels bounds a corpus job's images as it bounds the server's: an
    image above it, and one in a format outside the allowlist, are skipped rows counted
    under their own kinds, read from the header before anything is decoded."""
    image_file(tmp_path / "small.png", fmt="PNG", size=(20, 16))
    image_file(tmp_path / "large.png", fmt="PNG", size=(64, 64))
    image_file(tmp_path / "scan.tiff", fmt="TIFF", size=(20, 16))
    rows = [{"id": "small", "image": "small.png", "text": "fine"},
            {"id": "large", "image": "large.png", "text": "too many pixels"},
            {"id": "scan", "image": "scan.tiff", "text": "not an allowed format"}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    summary = predict_corpus(config(tmp_path / "in.jsonl", out, max_image_pixels=32 * 32),
                             classifier)
    assert (summary.predicted, summary.skipped) == (1, {"image_too_large": 1, "format": 1})
    assert [p["id"] for p in lines(out)] == ["small"]
    errors = {e["id"]: e for e in lines(Path(f"{out}.errors.jsonl"))}
    assert "predict.max_image_pixels" in errors["large"]["detail"]
