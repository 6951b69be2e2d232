"""One entry point from any input to a ``Split``: ``load_split``.

It accepts an exported split folder (``train.jsonl`` / ``validation.jsonl`` / ``test.jsonl``
+ ``manifest.json``, as ``llavac data export`` writes it), an MVSA release folder (a procedure
is then required) or an own-data JSONL / CSV file (procedure ``none`` unless given). Training,
evaluation and export all go through it, so they skip and count the same records.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, fields
from pathlib import Path

from llavac import __version__
from llavac.args import DataArgs
from llavac.data.images import DEFAULT_LIMITS, ImageLimits, check_images
from llavac.data.mvsa import read_release
from llavac.data.owndata import LABEL_FIELDS, read_own
from llavac.data.procedures import PROCEDURES, Procedure, apply_procedure, get_procedure
from llavac.data.published import SHIPPED
from llavac.data.records import (
    MISMATCHES,
    Problem,
    Record,
    Source,
    Split,
    count_by_reason,
    count_labels,
    is_error,
    with_current_names,
)
from llavac.labels import normalize_label

MANIFEST = "manifest.json"
PART_NAMES = ("train", "validation", "test", "all")
REQUIRED = ("id", "text", "image")
MAX_LISTED_PROBLEMS = 100  # the manifest lists this many errors; `llavac data check` lists all


def load_data(args: DataArgs) -> Split:
    """``load_split`` of a config's ``data`` section."""
    return load_split(args.path, procedure=args.procedure, fold=args.fold,
                      seed=args.split_seed, splits_dir=args.splits_dir, strict=args.strict,
                      limits=data_image_limits(args))


def data_image_limits(args: DataArgs) -> ImageLimits:
    """The image limits a config's ``data`` section sets (``data.max_image_pixels``)."""
    return ImageLimits(max_pixels=args.max_image_pixels, key="data.max_image_pixels")


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
    path: str | Path | None,
    procedure: str | None = None,
    fold: int | None = None,
    seed: int = 0,
    splits_dir: str | Path | None = None,
    strict: bool = False,
    limits: ImageLimits = DEFAULT_LIMITS,
) -> Split:
    """The split of ``path`` by ``procedure``, every image opened (within ``limits``) and
    every bad record skipped.

    Skipped records are counted by reason in ``manifest["skipped"]``; with ``strict`` the first
    bad one (a missing or unreadable file, an unknown label, ...) raises ``ValueError`` naming
    its id, file and reason instead. Pairs dropped by the label rule are never errors. An
    exported split folder is read as it was written: ``procedure`` and ``fold``, if given, must
    match its manifest, and so must ``seed`` when ``procedure`` is ``random811`` (without a
    procedure the seed is not compared, since every caller passes one).
    """
    if path is None:
        raise ValueError("no data given: set --data / data.path")
    if procedure is not None:
        get_procedure(procedure)  # an unknown name fails before anything is read
    path = Path(path)
    if _is_exported(path):
        given_seed = seed if procedure is not None else None
        return _checked(read_exported(path, procedure, fold, given_seed), strict, limits)
    source = read_source(path)
    if not source.files_checked:
        raise ValueError(f"{path}: no data/ folder, so no images and texts to split")
    if procedure is None and source.kind != "own":
        raise ValueError(f"{path} is an MVSA release: name a procedure "
                         f"({', '.join(PROCEDURES)})")
    procedure = procedure or "none"
    entry = get_procedure(procedure)
    parts, notes = apply_procedure(source, procedure, fold, seed, splits_dir)
    problems = source.problems + notes
    problems += _open_images(parts, strict, limits, problems)
    errors = [problem for problem in problems if is_error(problem)]
    manifest = {
        "source": str(source.path),
        "kind": source.kind,
        "procedure": procedure,
        "fold": fold,
        "seed": seed if entry.seeded else None,
        "split_files": _split_files(entry, splits_dir),
        "parts": list(entry.parts),
        "rows": source.rows,
        "counts": _counts(parts, entry.parts),
        "skipped": count_by_reason([p for p in problems if p.reason not in MISMATCHES]),
        "label_mismatches": count_by_reason([p for p in notes if p.reason in MISMATCHES]),
        "encodings": source.encodings,
        "errors": _listed(errors),
        "llavac_version": __version__,
    }
    return Split(*(parts.get(name, []) for name in PART_NAMES), manifest=manifest)


def _open_images(
    parts: dict[str, list[Record]], strict: bool, limits: ImageLimits,
    earlier: Sequence[Problem] = (),
) -> list[Problem]:
    """Open every image of ``parts``, dropping (in place) the records whose image does not
    open, and return one problem per dropped record (``unreadable_image``, ``format`` or
    ``image_too_large``). With ``strict`` the first error among ``earlier`` problems and these
    raises ``ValueError`` naming its file, reason and id."""
    unreadable = []
    for name in parts:
        parts[name], problems = check_images(parts[name], f"opening {name} images", limits)
        unreadable += problems
    errors = [problem for problem in [*earlier, *unreadable] if is_error(problem)]
    if strict and errors:
        first = errors[0]
        raise ValueError(f"{first.file}: {first.reason} (id {first.id}) {first.detail}".rstrip())
    return unreadable


def _counts(parts: dict[str, list[Record]], names: Iterable[str]) -> dict[str, dict[str, int]]:
    """Records per part and label, for the manifest."""
    return {
        name: {"total": len(parts.get(name, [])), **count_labels(parts.get(name, []))}
        for name in names
    }


def _listed(errors: list[Problem]) -> list[dict]:
    return [asdict(problem) for problem in errors[:MAX_LISTED_PROBLEMS]]


def _checked(split: Split, strict: bool, limits: ImageLimits) -> Split:
    """An exported split with the images that no longer open skipped (or, strict, fatal): the
    files may have changed since the export. The manifest's counts, skipped and errors then
    describe the records returned."""
    parts = {name: getattr(split, name) for name in PART_NAMES}
    unreadable = _open_images(parts, strict, limits)
    for name in PART_NAMES:
        setattr(split, name, parts[name])
    manifest = split.manifest
    skipped = dict(manifest.get("skipped", {}))
    for reason, count in count_by_reason(unreadable).items():
        skipped[reason] = skipped.get(reason, 0) + count
    names = manifest.get("parts") or [name for name in PART_NAMES if parts[name]]
    split.manifest = {
        **manifest,
        "counts": _counts(parts, names),
        "skipped": skipped,
        "errors": (manifest.get("errors", []) + _listed(unreadable))[:MAX_LISTED_PROBLEMS],
    }
    return split


def _split_files(entry: Procedure, splits_dir: str | Path | None) -> str | None:
    """Where a published split's ids came from: the original files, the lists llavac ships,
    or a registered procedure's own list folder."""
    if entry.split != "published":
        return None
    if splits_dir is not None:
        return str(Path(splits_dir).resolve())
    return "shipped" if entry.split_files.parent == SHIPPED else str(entry.split_files)


def read_exported(
    folder: Path,
    procedure: str | None = None,
    fold: int | None = None,
    seed: int | None = None,
) -> Split:
    """A split folder written by ``export_split``; its manifest comes along.

    ``procedure``, ``fold`` and ``seed`` (a ``random811`` split's), where given, must match the
    manifest. Label words are normalised as everywhere else; an unknown one is an error naming
    the line, the field and the word.
    """
    manifest_path = folder / MANIFEST
    manifest = json.loads(manifest_path.read_text("utf-8")) if manifest_path.is_file() else {}
    _check_manifest(folder, manifest, procedure, fold, seed)
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
            row = with_current_names(row)
            record = {key: row.get(key) for key in names}
            for key in LABEL_FIELDS:
                try:
                    if record[key] is not None:
                        record[key] = normalize_label(str(record[key]))
                except ValueError as error:
                    raise ValueError(f"{part}:{number}: {key}: {error}") from error
            parts[name].append(Record(**record))
    if manifest.get("procedure") == "none" and parts["test"] and not parts["all"]:
        parts["all"], parts["test"] = parts["test"], []  # exported by 0.1, which named it test
    return Split(**parts, manifest=manifest)


def _check_manifest(
    folder: Path, manifest: dict, procedure: str | None, fold: int | None, seed: int | None
) -> None:
    """Raise when the split asked for is not the one ``folder`` holds (nothing to compare
    without a manifest)."""
    held = manifest.get("procedure")
    if held is None:
        return
    if procedure is not None and procedure != held:
        raise ValueError(f"{folder} holds a {held} split, not {procedure}")
    if fold is not None and manifest.get("fold") != fold:
        has = f"fold {manifest['fold']}" if manifest.get("fold") is not None else "(no fold)"
        raise ValueError(f"{folder} holds {held} {has}, not fold {fold}")
    seeded = held in PROCEDURES and PROCEDURES[held].seeded
    if seed is not None and seeded and manifest.get("seed") != seed:
        raise ValueError(f"{folder} holds {held} seed {manifest.get('seed')}, not seed {seed}")
