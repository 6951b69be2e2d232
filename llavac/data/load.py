"""One entry point from any input to a ``Split``: ``load_split``.

It accepts an exported split folder (``train.jsonl`` / ``validation.jsonl`` / ``test.jsonl``
+ ``manifest.json``, as ``llavac data export`` writes it), an MVSA release folder (a procedure
is then required) or an own-data JSONL / CSV file (procedure ``none`` unless given). Training,
evaluation and export all go through it, so they skip and count the same records.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path

from llavac import __version__
from llavac.data.images import check_images
from llavac.data.mvsa import read_release
from llavac.data.owndata import read_own
from llavac.data.procedures import PUBLISHED, apply_procedure, parts_of
from llavac.data.records import (
    MISMATCHES,
    Record,
    Source,
    Split,
    count_by_reason,
    count_labels,
    is_error,
)

MANIFEST = "manifest.json"
PART_NAMES = ("train", "validation", "test")
REQUIRED = ("id", "text", "image")
MAX_LISTED_PROBLEMS = 100  # the manifest lists this many errors; `llavac data check` lists all


def read_source(path: str | Path) -> Source:
    """Read a release folder or an own-data file (images are checked to exist, not opened)."""
    path = Path(path)
    if path.is_dir():
        return read_release(path)
    if path.is_file():
        return read_own(path)
    raise FileNotFoundError(f"{path}: no such file or folder")


def _is_exported(path: Path) -> bool:
    return path.is_dir() and any((path / f"{name}.jsonl").is_file() for name in PART_NAMES)


def load_split(
    path: str | Path,
    procedure: str | None = None,
    fold: int | None = None,
    seed: int = 0,
    splits_dir: str | Path | None = None,
    strict: bool = False,
) -> Split:
    """The split of ``path`` by ``procedure``, every image opened and every bad record skipped.

    Skipped records are counted by reason in ``manifest["skipped"]``; with ``strict`` the first
    bad one (a missing or unreadable file, an unknown label, ...) raises ``ValueError`` naming
    its id, file and reason instead. Pairs dropped by the label rule are never errors. An
    exported split folder is read as it was written (``procedure``, if given, must match).
    """
    path = Path(path)
    if _is_exported(path):
        return _checked(read_exported(path, procedure), strict)
    source = read_source(path)
    if not source.files_checked:
        raise ValueError(f"{path}: no data/ folder, so no images and texts to split")
    if procedure is None and source.kind != "own":
        raise ValueError(f"{path} is an MVSA release: name a procedure (cheema10, random811, ...)")
    procedure = procedure or "none"
    parts, notes = apply_procedure(source, procedure, fold, seed, splits_dir)
    problems = source.problems + notes
    for name in parts:
        parts[name], unreadable = check_images(parts[name], desc=f"opening {name} images")
        problems += unreadable
    errors = [problem for problem in problems if is_error(problem)]
    if strict and errors:
        first = errors[0]
        raise ValueError(f"{first.file}: {first.reason} (id {first.id}) {first.detail}".rstrip())
    manifest = {
        "source": str(source.path),
        "kind": source.kind,
        "procedure": procedure,
        "fold": fold,
        "seed": seed if procedure == "random811" else None,
        "split_files": _split_files(procedure, splits_dir),
        "parts": list(parts_of(procedure)),
        "rows": source.rows,
        "counts": {
            name: {"total": len(parts.get(name, [])), **count_labels(parts.get(name, []))}
            for name in parts_of(procedure)
        },
        "skipped": count_by_reason([p for p in problems if p.reason not in MISMATCHES]),
        "label_mismatches": count_by_reason([p for p in notes if p.reason in MISMATCHES]),
        "encodings": source.encodings,
        "errors": [asdict(problem) for problem in errors[:MAX_LISTED_PROBLEMS]],
        "llavac_version": __version__,
    }
    return Split(*(parts.get(name, []) for name in PART_NAMES), manifest=manifest)


def _checked(split: Split, strict: bool) -> Split:
    """An exported split with the images that no longer open skipped (or, strict, fatal):
    the files may have changed since the export."""
    unreadable = []
    for name in PART_NAMES:
        kept, problems = check_images(getattr(split, name), desc=f"opening {name} images")
        setattr(split, name, kept)
        unreadable += problems
    if strict and unreadable:
        first = unreadable[0]
        raise ValueError(f"{first.file}: {first.reason} (id {first.id}) {first.detail}".rstrip())
    skipped = dict(split.manifest.get("skipped", {}))
    for reason, count in count_by_reason(unreadable).items():
        skipped[reason] = skipped.get(reason, 0) + count
    split.manifest = {**split.manifest, "skipped": skipped}
    return split


def _split_files(procedure: str, splits_dir: str | Path | None) -> str | None:
    if procedure not in PUBLISHED:
        return None
    return str(Path(splits_dir).resolve()) if splits_dir is not None else "shipped"


def read_exported(folder: Path, procedure: str | None = None) -> Split:
    """A split folder written by ``export_split``; its manifest comes along."""
    manifest_path = folder / MANIFEST
    manifest = json.loads(manifest_path.read_text("utf-8")) if manifest_path.is_file() else {}
    if procedure is not None and manifest.get("procedure") not in (None, procedure):
        raise ValueError(f"{folder} holds a {manifest['procedure']} split, not {procedure}")
    names = {field.name for field in fields(Record)}
    parts = {}
    for name in PART_NAMES:
        part = folder / f"{name}.jsonl"
        parts[name] = []
        if not part.is_file():
            continue
        lines = part.read_text("utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            try:
                row = json.loads(line)
                if any(row.get(key) is None for key in REQUIRED):
                    raise ValueError(f"needs {', '.join(REQUIRED)}")
            except (ValueError, AttributeError) as error:  # JSONDecodeError is a ValueError
                raise ValueError(f"{part}:{number}: not a record ({error})") from error
            parts[name].append(Record(**{key: row.get(key) for key in names}))
    return Split(parts["train"], parts["validation"], parts["test"], manifest=manifest)
