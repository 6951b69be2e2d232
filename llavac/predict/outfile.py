"""The files of a local corpus job: predictions, their sidecar and the errors file.

``OUT`` holds one prediction per line (JSONL), appended and flushed batch by batch, so a job
killed at any moment keeps what it finished; at most its last line is cut short, and
:func:`repair` drops it. ``OUT.meta.json`` records the settings that decide the labels, so a
resume can prove it continues the same job; it is replaced whole, never rewritten in place
(:func:`llavac.durable.write_atomic`), so a kill cannot leave it torn. ``OUT.errors.jsonl``
lists the skipped rows.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from llavac.durable import write_atomic

_ID_DECODER = json.JSONDecoder()
_ID_PREFIX = '{"id": '  # how Prediction.to_json starts every line


def sibling(out: Path, suffix: str) -> Path:
    return out.with_name(out.name + suffix)


def meta_path(out: Path) -> Path:
    return sibling(out, ".meta.json")


def errors_path(out: Path) -> Path:
    return sibling(out, ".errors.jsonl")


def repair(path: Path) -> int:
    """Cut a partial last line (a write the kill interrupted); return the bytes removed."""
    if not path.exists():
        return 0
    with path.open("rb+") as f:
        size = f.seek(0, os.SEEK_END)
        end = size
        while end > 0:  # scan back in blocks to the last newline
            start = max(0, end - 65536)
            f.seek(start)
            block = f.read(end - start)
            newline = block.rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
        f.truncate(end)
    return size - end


def _line_id(line: str) -> str:
    """A prediction line's id, decoding only the id when the line starts as ours."""
    if line.startswith(_ID_PREFIX):
        return _ID_DECODER.raw_decode(line, len(_ID_PREFIX))[0]
    return str(json.loads(line)["id"])


def done_ids(*paths: Path) -> set[str]:
    """The ids already written to ``paths`` (absent ones skipped)."""
    done: set[str] = set()
    for path in paths:
        if path.exists():
            with path.open(encoding="utf-8") as f:
                done.update(_line_id(line) for line in f if line.strip())
    return done


def check_settings(path: Path, settings: dict) -> None:
    """Raise naming every setting in which the job of sidecar ``path`` differs from this one."""
    if not path.exists():
        raise FileNotFoundError(f"--resume: {path} is missing, so nothing proves the output "
                                "belongs to this job; use --overwrite to start over")
    try:
        held = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"--resume: {path} is not the JSON a job writes ({error}); use "
                         "--overwrite to start over") from None
    differences = [f"{key} {held.get(key)!r} there, {value!r} now"
                   for key, value in settings.items() if held.get(key) != value]
    if differences:
        raise ValueError(f"--resume: {path} was written by a different job ("
                         + "; ".join(differences) + "); use --overwrite to start over")


def write_settings(path: Path, settings: dict) -> None:
    write_atomic(path, json.dumps(settings, indent=2) + "\n")
