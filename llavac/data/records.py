"""The few types that carry data through the pipeline.

``Record`` is one image + text pair with its (possibly missing) labels; the JSONL written by
``llavac data export`` is this record, one per line. ``Problem`` is anything a reader skipped,
so it can be counted and shown. ``Split`` is train / validation / test plus a manifest that
travels into every output folder.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llavac.labels import LABELS, SLOT_FIELDS


@dataclass
class Record:
    id: str
    text: str
    image: str  # absolute path to the image file
    text_label: str | None = None
    image_label: str | None = None
    multimodal_label: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


# Field names of older files that still read: ``label`` was the multimodal label's name
# before 0.2 (own-data files and exported splits). Deprecated; written files use the new one.
DEPRECATED_FIELDS = {"label": "multimodal_label"}


def with_current_names(row: dict) -> dict:
    """``row`` with deprecated field names renamed, unless the new name is present too."""
    row = dict(row)
    for old, new in DEPRECATED_FIELDS.items():
        if old in row and new not in row:
            row[new] = row.pop(old)
    return row


@dataclass(frozen=True)
class Problem:
    id: str | None  # None when the problem is not tied to one record (a malformed line)
    file: str
    reason: str  # a short machine-readable kind, e.g. "missing_image", "conflict"
    detail: str = ""


# Reasons a reader drops a pair on purpose: the Xu & Mao rule and the MVSA-Multiple majority
# vote. They are counted, but they are not errors in the data.
RULE_DROPS = frozenset({"conflict", "no_majority"})
# Reasons a split records without anything being wrong: a kept pair the published split does not
# use, and a published label that differs from the release's (the published one is used).
MISMATCHES = frozenset(f"{field}_mismatch" for field in SLOT_FIELDS.values())
SPLIT_NOTES = frozenset({"not_in_split"}) | MISMATCHES


def is_error(problem: Problem) -> bool:
    """True for problems that mean bad input (a missing file, an unknown label word, ...)."""
    return problem.reason not in RULE_DROPS | SPLIT_NOTES


@dataclass
class Split:
    """The parts of a procedure: train / validation / test, or (procedure ``none``) ``all``."""

    train: list[Record]
    validation: list[Record]
    test: list[Record]
    all: list[Record] = field(default_factory=list)
    manifest: dict = field(default_factory=dict)

    def parts(self) -> dict[str, list[Record]]:
        """Non-empty parts by name, in the order train, validation, test, all."""
        named = {"train": self.train, "validation": self.validation, "test": self.test,
                 "all": self.all}
        return {name: records for name, records in named.items() if records}

    def part(self, name: str | None, default: str) -> tuple[str, list[Record]]:
        """``(name, records)`` of part ``name``; ``None`` means ``default`` (``train`` for
        training, ``test`` for evaluation), or ``all`` when the split has only that part."""
        if name is None:
            name = "all" if self.all and not (self.train or self.test) else default
        return name, getattr(self, name)


def count_labels(records: list[Record], field_name: str = "multimodal_label") -> dict[str, int]:
    """Records per label of ``field_name`` in ``LABELS`` order, then ``unlabelled`` if any."""
    counts = Counter(getattr(record, field_name) or "unlabelled" for record in records)
    return {label: counts.pop(label, 0) for label in LABELS} | dict(counts)


def usage_line(manifest: dict, used: int, part: str, shown: int = 5) -> str:
    """One line on what a command read: records used, bad ones skipped by reason with their
    first ids, and pairs the procedure left out on purpose (rule drops, other splits)."""
    skipped = manifest.get("skipped", {})
    on_purpose = RULE_DROPS | SPLIT_NOTES
    bad = {reason: n for reason, n in skipped.items() if reason not in on_purpose}
    left_out = {reason: n for reason, n in skipped.items() if reason in on_purpose}
    line = f"records: {used} used from the {part} part"
    if bad:
        ids = [str(e["id"]) for e in manifest.get("errors", []) if e.get("id") is not None]
        reasons = ", ".join(f"{reason} {n}" for reason, n in bad.items())
        line += f"; {sum(bad.values())} skipped ({reasons}; first ids: {', '.join(ids[:shown])})"
    else:
        line += "; none skipped"
    if left_out:
        line += "; left out on purpose: " + ", ".join(f"{r} {n}" for r, n in left_out.items())
    return line


def empty_part(path, part: str, manifest: dict) -> ValueError:
    """The error for a part with no usable record, with the reasons its records were skipped
    (image paths read from the wrong folder show up as ``missing_image``)."""
    return ValueError(f"{path}: the {part} part is empty ({usage_line(manifest, 0, part)})")


def count_by_reason(problems: list[Problem]) -> dict[str, int]:
    return dict(sorted(Counter(p.reason for p in problems).items()))


@dataclass
class Source:
    """What a reader got from one MVSA release folder or own-data file.

    ``records`` are the usable pairs with the rule applied; every row that is not among them is
    in ``problems`` with its reason. ``rule_dropped`` keeps the pairs the label rule dropped
    (files attached) so ``data check`` can still open their images. ``files_checked`` is False
    for a release folder without its ``data/`` folder: the records then carry labels only.
    """

    path: Path
    kind: str  # "mvsa_single", "mvsa_multiple" or "own"
    rows: int
    records: list[Record]
    problems: list[Problem] = field(default_factory=list)
    encodings: dict[str, int] = field(default_factory=dict)
    rule_dropped: list[Record] = field(default_factory=list)
    files_checked: bool = True


def collect(path: Path, kind: str, rows: Iterable[Record | Problem]) -> Source:
    """Gather a reader's per-row results into a ``Source``.

    Every reader yields one ``Record`` or one ``Problem`` per data row; this is the one place a
    repeated id is caught (the first row with an id wins, later ones become ``duplicate_id``),
    so ``rows == len(records) + len(problems)`` always holds.
    """
    source = Source(path=Path(path), kind=kind, rows=0, records=[])
    seen: set[str] = set()
    for row in rows:
        source.rows += 1
        if row.id is not None and row.id in seen:
            detail = f"row {source.rows}: an earlier row has this id"
            row = Problem(row.id, str(path), "duplicate_id", detail)
        elif row.id is not None:
            seen.add(row.id)
        (source.records if isinstance(row, Record) else source.problems).append(row)
    return source
