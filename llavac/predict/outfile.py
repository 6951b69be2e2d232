"""The files of a corpus job: predictions, their sidecar, the errors file and shard parts.

``OUT`` holds one prediction per line (JSONL), appended and flushed batch by batch, so a job
killed at any moment keeps what it finished; at most its last line is cut short, and
:func:`repair` drops it. ``OUT.meta.json`` records the settings that decide the labels, so a
resume can prove it continues the same job. ``OUT.errors.jsonl`` lists the skipped rows.
Under several processes each rank writes ``OUT.part-RANK`` (``ROW<TAB>prediction`` per line)
and the main process merges the parts into ``OUT`` in input order.
"""

from __future__ import annotations

import heapq
import json
import os
from collections.abc import Iterator
from pathlib import Path

_ID_DECODER = json.JSONDecoder()
_ID_PREFIX = '{"id": '  # how Prediction.to_json starts every line


def sibling(out: Path, suffix: str) -> Path:
    return out.with_name(out.name + suffix)


def meta_path(out: Path) -> Path:
    return sibling(out, ".meta.json")


def errors_path(out: Path) -> Path:
    return sibling(out, ".errors.jsonl")


def part_path(path: Path, rank: int) -> Path:
    return sibling(path, f".part-{rank}")


def parts(path: Path) -> list[Path]:
    """Every ``path.part-N`` present, by rank."""
    found = path.parent.glob(path.name + ".part-*")
    return sorted((p for p in found if p.name.rsplit("-", 1)[1].isdigit()),
                  key=lambda p: int(p.name.rsplit("-", 1)[1]))


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
    line = line.split("\t", 1)[-1]
    if line.startswith(_ID_PREFIX):
        return _ID_DECODER.raw_decode(line, len(_ID_PREFIX))[0]
    return str(json.loads(line)["id"])


def done_ids(*paths: Path) -> set[str]:
    """The ids already written to ``paths`` (predictions or shard parts; absent ones skipped)."""
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
    held = json.loads(path.read_text(encoding="utf-8"))
    differences = [f"{key} {held.get(key)!r} there, {value!r} now"
                   for key, value in settings.items() if held.get(key) != value]
    if differences:
        raise ValueError(f"--resume: {path} was written by a different job ("
                         + "; ".join(differences) + "); use --overwrite to start over")


def write_settings(path: Path, settings: dict) -> None:
    path.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")


def _numbered(path: Path) -> Iterator[tuple[int, str]]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            row, text = line.split("\t", 1)
            yield int(row), text


def merge_parts(out: Path) -> int:
    """Append the shard parts of ``out`` to it in input order, skipping ids it holds already
    (a merge the kill interrupted), then delete the parts. Returns the lines appended."""
    found = parts(out)
    repair(out)
    held = done_ids(out)
    appended = 0
    with out.open("a", encoding="utf-8") as f:
        for _, line in heapq.merge(*(_numbered(p) for p in found)):
            if _line_id(line) not in held:
                f.write(line)
                appended += 1
        f.flush()
        os.fsync(f.fileno())
    for path in found:
        path.unlink()
    return appended


def merge_errors(path: Path) -> None:
    """One errors file from the shards' error parts, by input row."""
    found = parts(path)
    rows = [json.loads(line) for p in found for line in p.read_text("utf-8").splitlines()]
    rows.sort(key=lambda row: row["row"])
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows),
                    encoding="utf-8")
    for p in found:
        p.unlink()
