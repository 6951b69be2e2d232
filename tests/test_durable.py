"""Files a crash cannot tear: a replaced file is the old one or the new one, never a mixture,
and a checkpoint's marker reaches the disk only after the files it vouches for."""

from __future__ import annotations

import json
import os

import pytest

from llavac import durable
from llavac.durable import fsync_tree, write_atomic
from llavac.runs.info import write_json


def test_write_atomic_replaces_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "manifest.json"
    write_json({"rows": 1}, path)
    assert json.loads(path.read_text()) == {"rows": 1}

    def killed(*args):
        raise KeyboardInterrupt  # a kill between writing the new file and renaming it

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(os, "replace", killed)
        write_atomic(path, '{"rows": 2, "and": "much more"}\n')
    assert json.loads(path.read_text()) == {"rows": 1}  # the old file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # no temporary left
    write_atomic(path, '{"rows": 2}\n')
    assert json.loads(path.read_text()) == {"rows": 2}


def test_fsync_tree_flushes_every_file_then_the_folders(tmp_path, monkeypatch):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/x.bin", "a/b/y.bin", "z.bin"):
        (tmp_path / name).write_bytes(b"data")
    flushed = []
    monkeypatch.setattr(durable, "fsync_path", lambda path: flushed.append(str(path)))
    fsync_tree(tmp_path)
    files = {str(tmp_path / name) for name in ("a/x.bin", "a/b/y.bin", "z.bin")}
    assert set(flushed[:3]) == files
    assert flushed[3:] == [str(tmp_path / "a" / "b"), str(tmp_path / "a"), str(tmp_path)]


def test_a_checkpoint_is_flushed_before_its_marker(tmp_path, monkeypatch):
    from llavac.train import checkpoints

    checkpoint = tmp_path / "checkpoint-4"
    checkpoint.mkdir()
    (checkpoint / "adapter_model.safetensors").write_bytes(b"weights")
    events = []
    monkeypatch.setattr(checkpoints, "fsync_tree", lambda folder: events.append("flush"))
    real = checkpoints.write_atomic
    monkeypatch.setattr(checkpoints, "write_atomic",
                        lambda path, text: (events.append("marker"), real(path, text)))
    checkpoints.mark_complete(checkpoint, 4, "abc123")
    assert events == ["flush", "marker"]
    assert checkpoints.marker(checkpoint) == {"step": 4, "config": "abc123"}
