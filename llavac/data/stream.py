"""Records of a corpus one at a time: JSONL, CSV, Parquet or an exported split folder.

``load_split`` reads a whole file and opens every image before anything is trained; a corpus
to label may be millions of rows, so prediction streams it instead. Rows follow the own-data
rules (:func:`llavac.data.owndata.own_record`: image paths relative to the file, text a string,
label words normalised), and a repeated id is a ``duplicate_id`` problem as in ``collect``.
Only the ids seen so far are kept, so memory does not grow with the rows' contents.
"""

from __future__ import annotations

from collections.abc import Container, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from llavac.data.owndata import csv_rows, jsonl_rows, own_id, own_record
from llavac.data.records import Problem, Record

SUFFIXES = (".jsonl", ".csv", ".parquet")
PART_NAMES = ("train", "validation", "test", "all")  # an exported split's files, in this order
PARQUET_BATCH = 1024  # rows decoded from a Parquet file at a time


def input_files(path: str | Path) -> list[Path]:
    """The data files of ``path``: itself, or an exported split folder's part files."""
    path = Path(path).resolve()
    if path.is_dir():
        files = [path / f"{name}.jsonl" for name in PART_NAMES]
        files = [file for file in files if file.is_file()]
        if not files:
            raise ValueError(f"{path}: a folder without train / validation / test / all.jsonl "
                             "(not an exported split)")
        return files
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.suffix.lower() not in SUFFIXES:
        raise ValueError(f"{path}: a corpus must be .jsonl, .csv, .parquet or a split folder")
    return [path]


def _rows(path: Path) -> Iterator[tuple[int, dict | str]]:
    """(row number, fields) of one file, read lazily."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        number = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=PARQUET_BATCH):
            for fields in batch.to_pylist():
                number += 1
                yield number, fields
        return
    try:
        with path.open(encoding="utf-8-sig", newline="" if suffix == ".csv" else None) as f:
            yield from (jsonl_rows(f) if suffix == ".jsonl" else csv_rows(f, path))
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error})") from None


@dataclass(frozen=True)
class Done:
    """A row whose id is in ``stream_records``' ``done``: not checked any further."""

    id: str


def stream_records(path: str | Path, limit: int | None = None,
                   done: Container[str] = frozenset(), done_rows: Container[int] = frozenset()
                   ) -> Iterator[Record | Problem | Done]:
    """One ``Record``, ``Problem`` or ``Done`` per row of ``path``, in file order (the first
    ``limit`` rows when given). Images are checked to exist, not opened: that happens where
    the pixels are needed. A row whose id is in ``done``, or whose position (0, 1, ... over
    all rows) is in ``done_rows``, belongs to a resumed job's finished part and is only
    named, which saves resolving and checking its paths (most of the reading time); its id
    still counts for the duplicate check."""
    path = Path(path).resolve()
    files = input_files(path)
    seen: set[str] = set()

    def rows() -> Iterator[Record | Problem | Done]:
        position = 0
        for file in files:
            for number, fields in _rows(file):
                row_id = own_id(fields, number) if isinstance(fields, dict) else None
                finished = row_id in done or position in done_rows
                yield Done(row_id) if finished else own_record(fields, number, file)
                position += 1

    for row in islice(rows(), limit):
        if row.id is not None and row.id in seen:
            file = row.file if isinstance(row, Problem) else getattr(row, "image", str(path))
            row = Problem(row.id, file, "duplicate_id", "an earlier row has this id")
        elif row.id is not None:
            seen.add(row.id)
        yield row


def count_rows(path: str | Path, limit: int | None = None) -> int:
    """About how many rows ``path`` holds (at most ``limit``), cheaply, for a progress bar's
    total: Parquet metadata, else newlines (a CSV cell with a line break counts twice)."""
    total = 0
    for file in input_files(path):
        if file.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            total += pq.ParquetFile(file).metadata.num_rows
            continue
        total -= file.suffix.lower() == ".csv"  # the header
        with file.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                total += chunk.count(b"\n")
                if limit is not None and total >= limit:
                    return limit
    return total if limit is None else min(total, limit)
