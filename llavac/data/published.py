"""The published MVSA splits, read from the original files or from the lists llavac ships.

Three published splits are used by the LLaVAC paper: Cheema et al. 2021's ten folds, CLMLF's
8:1:1 split and QMF's agreeing-pairs split (their procedures are registered in
:mod:`llavac.data.procedures`). Each comes in its own format with its own label encoding;
they are all read into ``Published``:
per id the published labels and, per fold, the part the id belongs to. The shipped lists under
``splitfiles/`` are this structure as a small TSV (ids, labels, parts; no tweet text), derived
by ``python -m llavac.data.splitfiles.build`` and proved equal to the originals by the tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from llavac.labels import normalize_label

SHIPPED = Path(__file__).parent / "splitfiles"  # <procedure>/<corpus>.tsv
PART_LETTERS = {"t": "train", "v": "validation", "e": "test"}  # "-": not in that fold
# Published label encodings.
CHEEMA_CODES = {"0": "neutral", "1": "positive", "2": "negative"}
CLMLF_CODES = {"0": "positive", "1": "neutral", "2": "negative"}
COLUMNS = ("id", "label", "text_label", "image_label", "parts")


@dataclass(frozen=True)
class Entry:
    multimodal_label: str  # the published one
    text_label: str | None  # published only by Cheema et al.
    image_label: str | None
    parts: str  # one letter of PART_LETTERS (or "-") per fold


@dataclass(frozen=True)
class Published:
    entries: dict[str, Entry]  # by id, in the published order

    @property
    def folds(self) -> int:
        return len(next(iter(self.entries.values())).parts)

    def fold(self, k: int) -> dict[str, list[str]]:
        """Ids per part (train, validation, test) of fold ``k`` (1-based)."""
        if not 1 <= k <= self.folds:
            raise ValueError(f"fold {k} does not exist: this split has folds 1..{self.folds}")
        parts: dict[str, list[str]] = {name: [] for name in PART_LETTERS.values()}
        for row_id, entry in self.entries.items():
            letter = entry.parts[k - 1]
            if letter in PART_LETTERS:
                parts[PART_LETTERS[letter]].append(row_id)
        return parts


def read_cheema(folder: Path) -> Published:
    """Cheema et al.'s ``valid_pairlist.txt`` rows ``id,multimodal,text,image`` (0 neutral,
    1 positive, 2 negative) and ``splits/{train,val,test}_<k>.txt`` holding 0-based row
    numbers into it."""
    pairlist = folder / "valid_pairlist.txt"
    rows = [line.split(",") for line in pairlist.read_text().splitlines() if line.strip()]
    folds = len(list((folder / "splits").glob("test_*.txt")))
    parts = [["-"] * folds for _ in rows]
    for k in range(1, folds + 1):
        for letter, name in (("t", "train"), ("v", "val"), ("e", "test")):
            for index in (folder / "splits" / f"{name}_{k}.txt").read_text().split():
                parts[int(index)][k - 1] = letter
    try:
        entries = {
            row_id: Entry(CHEEMA_CODES[m], CHEEMA_CODES[t], CHEEMA_CODES[i], "".join(letters))
            for (row_id, m, t, i), letters in zip(rows, parts, strict=True)
        }
    except (KeyError, ValueError) as error:
        raise ValueError(f"{pairlist}: a row is not 'id,multimodal,text,image' codes") from error
    return Published(entries)


def read_clmlf(folder: Path) -> Published:
    """CLMLF's JSON lists of ``{"id", "text", "emotion_label"}`` (0 positive, 1 neutral,
    2 negative) in ``train/dev/test.json``."""
    return _read_three_files(folder, ".json", lambda text: [
        (row["id"], CLMLF_CODES[str(row["emotion_label"])]) for row in json.loads(text)])


def read_qmf(folder: Path) -> Published:
    """QMF's JSON lines ``{"id", "label", "text", "img"}`` with label words in
    ``train/dev/test.jsonl``."""
    return _read_three_files(folder, ".jsonl", lambda text: [
        (row["id"], normalize_label(row["label"]))
        for row in map(json.loads, filter(str.strip, text.splitlines()))])


def _read_three_files(folder: Path, suffix: str, pairs_of) -> Published:
    """One fold published as ``train``, ``dev`` and ``test`` files; ``pairs_of(text)`` gives
    a file's ``(id, multimodal label)`` pairs."""
    entries = {}
    for letter, name in (("t", "train"), ("v", "dev"), ("e", "test")):
        path = folder / f"{name}{suffix}"
        try:
            pairs = pairs_of(path.read_text(encoding="utf-8"))
        except (KeyError, ValueError) as error:
            raise ValueError(f"{path}: not the published format ({error})") from error
        entries.update((str(row_id), Entry(label, None, None, letter)) for row_id, label in pairs)
    return Published(entries)


def read_shipped(path: Path) -> Published:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    if tuple(lines[0].split("\t")) != COLUMNS:
        raise ValueError(f"{path}: expected the header {' '.join(COLUMNS)}")
    entries = {}
    for line in lines[1:]:
        row_id, label, text_label, image_label, parts = line.split("\t")
        entries[row_id] = Entry(label, text_label or None, image_label or None, parts)
    return Published(entries)


def write_shipped(published: Published, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = ["\t".join(COLUMNS)] + [
        "\t".join((row_id, e.multimodal_label, e.text_label or "", e.image_label or "", e.parts))
        for row_id, e in published.entries.items()
    ]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
