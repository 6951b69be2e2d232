"""Own data: a JSONL or CSV file of image + text pairs, with or without labels.

Each row has ``image`` (a path relative to the file, or absolute) and ``text``, and any of
``text_label``, ``image_label`` and ``multimodal_label`` (``label``, its name before 0.2, is
still read). When only the two unimodal
labels are given, the multimodal label comes from the Xu & Mao rule, exactly as for MVSA.
``id`` is optional; without it a row is named by its line number in the file.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from llavac.data.records import Problem, Record, Source, collect, with_current_names
from llavac.data.text import decode_bytes
from llavac.labels import SLOT_FIELDS, normalize_label, xu_mao_rule

SUFFIXES = (".jsonl", ".csv")
LABEL_FIELDS = tuple(SLOT_FIELDS.values())


def read_own(path: Path) -> Source:
    """Records of an own-data file; image files are checked to exist, not decoded."""
    path = Path(path).resolve()
    if path.suffix.lower() not in SUFFIXES:
        raise ValueError(f"{path}: own data must be .jsonl or .csv")
    text, encoding = decode_bytes(path.read_bytes())
    jsonl = path.suffix.lower() == ".jsonl"
    rows = jsonl_rows(text.splitlines()) if jsonl else csv_rows(io.StringIO(text), path)
    source = collect(path, "own", (own_record(row, number, path) for number, row in rows))
    source.encodings = {encoding: len(source.records)} if source.records else {}
    return source


def jsonl_rows(lines: Iterable[str]) -> Iterator[tuple[int, dict | str]]:
    """(line number, fields) per non-blank line; a string instead of fields says what is wrong.

    ``lines`` may be a list or an open file: the streaming reader (``llavac.data.stream``)
    passes the file, so a corpus is never held in memory.
    """
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            fields = json.loads(line)
        except json.JSONDecodeError as error:
            yield number, f"not JSON: {error}"
            continue
        yield number, fields if isinstance(fields, dict) else "not a JSON object"


def csv_rows(lines: Iterable[str], path: Path) -> Iterator[tuple[int, dict | str]]:
    """(line number, fields) per CSV row of ``lines`` (a list or an open file, newline="")."""
    reader = csv.DictReader(lines)
    missing = {"image", "text"} - set(reader.fieldnames or ())
    if missing:
        raise ValueError(f"{path}: the CSV header lacks {', '.join(sorted(missing))}")
    for fields in reader:
        if None in fields or None in fields.values():
            yield reader.line_num, "the row has a different number of cells than the header"
        else:
            yield reader.line_num, fields


def own_id(fields: dict, number: int) -> str:
    """A row's id: its ``id`` field, else its row number."""
    return str(fields["id"]) if fields.get("id") not in (None, "") else str(number)


def own_record(fields: dict | str, number: int, path: Path) -> Record | Problem:
    """The record of one own-data row (or the problem that skips it), the one row rule of the
    eager reader and the streaming one: ``image`` relative to ``path``'s folder and checked to
    exist, ``text`` a string, label words normalised, the Xu & Mao rule where only the two
    unimodal labels are given. ``number`` names the row in problems (and is its id without
    one)."""
    if isinstance(fields, str):
        return Problem(None, str(path), "malformed_line", f"line {number}: {fields}")
    fields = with_current_names(fields)
    row_id = own_id(fields, number)

    def problem(reason: str, detail: str, file: Path = path) -> Problem:
        return Problem(row_id, str(file), reason, f"line {number}: {detail}")

    if fields.get("text") is None:
        return problem("missing_text", "no text field")
    if not isinstance(fields["text"], str):
        return problem("bad_text", f"text is a {type(fields['text']).__name__}, not a string")
    if fields.get("image") in (None, ""):
        return problem("missing_image", "no image field")
    image = (path.parent / str(fields["image"])).resolve()  # an absolute path stays as it is
    if not image.is_file():
        return problem("missing_image", f"no file {fields['image']!r}", image)
    try:
        labels = {
            name: normalize_label(str(fields[name])) if fields.get(name) not in (None, "") else None
            for name in LABEL_FIELDS
        }
    except ValueError as error:
        return problem("unknown_label", str(error))
    if labels["multimodal_label"] is None and labels["text_label"] and labels["image_label"]:
        labels["multimodal_label"] = xu_mao_rule(labels["text_label"], labels["image_label"])
        if labels["multimodal_label"] is None:
            pair = f"text {labels['text_label']}, image {labels['image_label']}"
            return problem("conflict", pair)
    return Record(row_id, str(fields["text"]).strip(), str(image), **labels)
