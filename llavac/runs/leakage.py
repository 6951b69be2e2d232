"""The leakage guard: a training run records the records it trained on, and an evaluation
refuses to report a run on any of them unless asked to (``eval.allow_overlap``).

A record is matched by a fingerprint of its id, text and image file name rather than by id
alone: MVSA-Single and MVSA-Multiple (and own data files) reuse the same numeric ids for
different pairs, while an exported split and its release folder give the same fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from llavac.labels import SLOT_FIELDS
from llavac.runs.folder import TRAINED_ON_FILE, RunFolder


def fingerprint(record) -> str:
    blob = "\0".join([record.id, record.text, Path(record.image).name])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def trained_on(records: Sequence) -> dict:
    """What ``trained_on.json`` holds: the ids, one fingerprint per record, and a hash of
    the ids and labels that names the training data in a line."""
    rows = sorted([r.id, *(getattr(r, f) or "" for f in SLOT_FIELDS.values())] for r in records)
    return {
        "records": len(records),
        "sha256": hashlib.sha256(json.dumps(rows).encode()).hexdigest(),
        "ids": [r.id for r in records],
        "fingerprints": [fingerprint(r) for r in records],
    }


def check_overlap(adapter: str | Path | None, records: Sequence, part: str,
                  allow: bool, key: str | None = "--allow-overlap (eval.allow_overlap=true)"
                  ) -> int | None:
    """How many of ``records`` the run ``adapter`` trained on (None: unknown); a
    ``ValueError`` when there are any and ``allow`` is false. ``key``: the flag that reports
    them anyway (None: the command has none)."""
    seen = RunFolder(adapter).trained_on() if adapter is not None else None
    if seen is None:
        return None
    known = set(seen["fingerprints"])
    overlap = sum(fingerprint(r) in known for r in records)
    if overlap and not allow:
        raise ValueError(
            f"{overlap} of the {len(records)} records of the {part} part were trained on by "
            f"{adapter} (its {TRAINED_ON_FILE}): their scores would measure memory, not "
            "generalisation; use another part"
            + (f", or pass {key} to report them deliberately" if key else ""))
    return overlap
