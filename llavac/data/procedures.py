"""The data processing procedures: which pairs go to train, validation and test.

The names are the command line's contract and follow the LLaVAC paper:

- ``cheema10`` (P1): Cheema et al. 2021's ten published folds, ``fold`` 1..10.
- ``random811`` (P2): a seeded random 8:1:1 split of the pairs the Xu & Mao rule keeps.
- ``clmlf``: CLMLF's published 8:1:1 split, the public instance of P2.
- ``qmf`` (P3): QMF's published split of the pairs whose text and image labels agree.
- ``none``: no split; every kept pair in one part named ``all`` (own data: train on it,
  or evaluate on it).

For a published split the record keeps the release's text and image labels, but its
``multimodal_label`` is the published one: the paper evaluates against the published splits,
so that label wins where it differs from the rule's. Each difference is a
``multimodal_label_mismatch`` note (a differing published text or image label a
``text_label_mismatch`` / ``image_label_mismatch``), counted in the manifest; on the MVSA
releases here there are none.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

from llavac.data.published import load_published
from llavac.data.records import Problem, Record, Source
from llavac.labels import SLOT_FIELDS

PROCEDURES = ("cheema10", "random811", "clmlf", "qmf", "none")
PUBLISHED = ("cheema10", "clmlf", "qmf")
Parts = dict[str, list[Record]]  # "train" / "validation" / "test" -> records


def parts_of(procedure: str) -> tuple[str, ...]:
    """The parts a procedure produces (``none`` makes one part, ``all``)."""
    return ("all",) if procedure == "none" else ("train", "validation", "test")


def apply_procedure(
    source: Source,
    procedure: str,
    fold: int | None = None,
    seed: int = 0,
    splits_dir: Path | None = None,
) -> tuple[Parts, list[Problem]]:
    """Split ``source.records`` by ``procedure``; also return what the split left out and why."""
    if procedure not in PROCEDURES:
        expected = ", ".join(PROCEDURES)
        raise ValueError(f"unknown procedure {procedure!r}: expected one of {expected}")
    if (fold is not None) != (procedure == "cheema10"):
        raise ValueError("cheema10 needs --fold 1..10, and only cheema10 takes a fold")
    if procedure == "none":
        return {"all": list(source.records)}, []
    if procedure == "random811":
        return random_811(source.records, seed), []
    if source.kind == "own":
        raise ValueError(f"{procedure} is a published MVSA split: own data uses random811 or none")
    return _published_split(source, procedure, fold or 1, splits_dir)


def random_811(records: list[Record], seed: int) -> Parts:
    """Shuffle by ``seed`` (ids sorted first, so row order in the file does not matter) and cut
    8:1:1: train ``round(0.8 n)``, validation ``round(0.1 n)``, test the rest."""
    shuffled = sorted(records, key=lambda record: record.id)
    random.Random(seed).shuffle(shuffled)
    n_train, n_validation = round(0.8 * len(shuffled)), round(0.1 * len(shuffled))
    return {
        "train": shuffled[:n_train],
        "validation": shuffled[n_train : n_train + n_validation],
        "test": shuffled[n_train + n_validation :],
    }


def _published_split(
    source: Source, procedure: str, fold: int, splits_dir: Path | None
) -> tuple[Parts, list[Problem]]:
    published = load_published(procedure, source.kind, splits_dir)
    ids = published.fold(fold)
    by_id = {record.id: record for record in source.records}
    dropped = {problem.id: problem.reason for problem in source.problems}
    file = str(source.path)
    parts: Parts = {name: [] for name in ids}
    notes: list[Problem] = []
    for name, part_ids in ids.items():
        for row_id in part_ids:
            record = by_id.get(row_id)
            if record is None:
                why = dropped.get(row_id, "absent from the release")
                notes.append(Problem(row_id, file, "not_in_release", f"{procedure}: {why}"))
                continue
            entry = published.entries[row_id]
            for field in SLOT_FIELDS.values():
                ours, theirs = getattr(record, field), getattr(entry, field)
                if theirs is not None and ours != theirs:
                    kept = "published" if field == "multimodal_label" else "release"
                    detail = f"{field}: release {ours}, published {theirs} ({kept} kept)"
                    notes.append(Problem(row_id, file, f"{field}_mismatch", detail))
            parts[name].append(dataclasses.replace(record, multimodal_label=entry.multimodal_label))
    used = {row_id for part_ids in ids.values() for row_id in part_ids}
    notes += [
        Problem(record.id, file, "not_in_split", f"not in the published {procedure} split")
        for record in source.records
        if record.id not in used
    ]
    return parts, notes
