"""The data processing procedures: which pairs go to train, validation and test.

Each procedure is one :class:`Procedure` entry of the registry below, and nothing else in
llavac knows procedures by name: the command line's ``--procedure`` choices, the folds an
experiment plans, whether a split seed matters and the paper's numbers beside a result all
come from the entry. Adding a procedure is one entry (:func:`add_procedure`) plus, for a
published split, its id list (``<split_files>/<corpus>.tsv``, the format of
``splitfiles/README.md``).

The registered names are the command line's contract and follow the LLaVAC paper:

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llavac.config import ConfigKeyError
from llavac.data.published import (
    SHIPPED,
    Published,
    read_cheema,
    read_clmlf,
    read_qmf,
    read_shipped,
)
from llavac.data.records import Problem, Record, Source
from llavac.labels import SLOT_FIELDS

Parts = dict[str, list[Record]]  # "train" / "validation" / "test" -> records
SPLIT_KINDS = ("published", "seeded", "none")


@dataclass(frozen=True)
class Procedure:
    """One way to split a source's pairs into parts."""

    name: str  # what --procedure / data.procedure say
    title: str  # how a results table names it
    # Where the split comes from: "published" (an id list per corpus, read from
    # split_files), "seeded" (random 8:1:1 by data.split_seed) or "none" (one part, all).
    split: str
    folds: int = 1  # a published split's folds; with more than one, data.fold picks one
    split_files: Path | None = None  # published: the folder of <corpus>.tsv id lists
    # published: the original files' folder under --splits DIR, and their reader.
    original: tuple[str, Callable[[Path], Published]] | None = None
    # LLaVAC's multimodal accuracy and weighted F1 in % on MVSA-Single (arXiv 2502.02938).
    paper: tuple[float, float] | None = None

    def __post_init__(self):
        if self.split not in SPLIT_KINDS:
            raise ValueError(f"procedure {self.name}: split must be one of {SPLIT_KINDS}")
        if (self.split == "published") != (self.split_files is not None):
            raise ValueError(f"procedure {self.name}: a published split, and only one, "
                             "names its split_files")

    @property
    def parts(self) -> tuple[str, ...]:
        """The parts it produces (no split: one part, ``all``)."""
        return ("all",) if self.split == "none" else ("train", "validation", "test")

    @property
    def seeded(self) -> bool:
        """Whether data.split_seed decides the split (an experiment's seed then varies it)."""
        return self.split == "seeded"

    @property
    def fold_numbers(self) -> list[int | None]:
        """The folds an experiment may run: ``[None]`` for a procedure without folds."""
        return list(range(1, self.folds + 1)) if self.folds > 1 else [None]

    def published(self, corpus: str, splits_dir: Path | None = None) -> Published:
        """The published split of ``corpus`` (``mvsa_single`` / ``mvsa_multiple``): from the
        original files under ``splits_dir`` when given, else from the shipped list."""
        if splits_dir is not None:
            return self.read_original(Path(splits_dir), corpus)
        path = self.split_files / f"{corpus}.tsv"
        if not path.is_file():
            raise ValueError(f"there is no published {self.name} split of {corpus}")
        return read_shipped(path)

    def read_original(self, splits_dir: Path, corpus: str) -> Published:
        """The original published files (layout ``<splits_dir>/<folder>/<corpus>/``)."""
        if self.original is None:
            raise ValueError(f"{self.name}: llavac ships its id lists only (no --splits reader)")
        name, reader = self.original
        folder = Path(splits_dir) / name / corpus
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no published {self.name} split of {corpus} here")
        return reader(folder)


PROCEDURES: dict[str, Procedure] = {}  # the registry, by name, in the order of --help


def add_procedure(procedure: Procedure) -> Procedure:
    """Register ``procedure`` (a name registered before is replaced)."""
    PROCEDURES[procedure.name] = procedure
    return procedure


def list_procedures() -> list[str]:
    return list(PROCEDURES)


def get_procedure(name: str, key: str = "data.procedure") -> Procedure:
    """The registered procedure ``name``; an unknown one is an error naming the config
    ``key`` that gave it."""
    if name not in PROCEDURES:
        raise ConfigKeyError(key, f"{key}: unknown procedure {name!r}: expected one of "
                                  f"{', '.join(PROCEDURES)}")
    return PROCEDURES[name]


for _entry in (
    Procedure("cheema10", "P1: Cheema et al. 10 folds", "published", folds=10,
              split_files=SHIPPED / "cheema10", original=("cheema2021", read_cheema),
              paper=(76.24, 76.36)),
    Procedure("random811", "P2: random 8:1:1 after the Xu & Mao rule", "seeded",
              paper=(77.05, 76.76)),
    Procedure("clmlf", "P2: the public CLMLF 8:1:1 split", "published",
              split_files=SHIPPED / "clmlf", original=("clmlf", read_clmlf),
              paper=(77.05, 76.76)),
    Procedure("qmf", "P3: the QMF split", "published", split_files=SHIPPED / "qmf",
              original=("qmf", read_qmf), paper=(85.36, 85.06)),
    Procedure("none", "no split (all)", "none"),
):
    add_procedure(_entry)


def apply_procedure(
    source: Source,
    procedure: str,
    fold: int | None = None,
    seed: int = 0,
    splits_dir: Path | None = None,
) -> tuple[Parts, list[Problem]]:
    """Split ``source.records`` by ``procedure``; also return what the split left out and why."""
    entry = get_procedure(procedure)
    if fold is None and entry.folds > 1:
        raise ValueError(f"{procedure} needs --fold 1..{entry.folds}")
    if fold is not None and entry.folds == 1:
        with_folds = " or ".join(p.name for p in PROCEDURES.values() if p.folds > 1)
        raise ValueError(f"{procedure} has no folds: only {with_folds} takes a fold")
    if entry.split == "none":
        return {"all": list(source.records)}, []
    if entry.seeded:
        return random_811(source.records, seed), []
    if source.kind == "own":
        unpublished = " or ".join(p.name for p in PROCEDURES.values() if p.split != "published")
        raise ValueError(f"{procedure} is a published MVSA split: own data uses {unpublished}")
    return _published_split(source, entry, fold or 1, splits_dir)


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
    source: Source, entry: Procedure, fold: int, splits_dir: Path | None
) -> tuple[Parts, list[Problem]]:
    procedure = entry.name
    published = entry.published(source.kind, splits_dir)
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
