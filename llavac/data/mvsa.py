"""Readers for the MVSA release folders (Niu et al., MMM 2016).

A release folder holds ``labelResultAll.txt`` and ``data/<id>.jpg`` + ``data/<id>.txt``.
MVSA-Single's label file has one annotator (``ID<TAB>text,image``), MVSA-Multiple's three
(``ID<TAB>text,image<TAB>text,image<TAB>text,image``); the header says which, and one reader
serves both: a modality's label is the one a majority of annotators gave (the only one for
Single, at least 2 of 3 for Multiple), then the Xu & Mao rule gives the multimodal label.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tqdm import tqdm

from llavac.data.records import Problem, Record, Source, collect
from llavac.data.text import decode_bytes, read_text
from llavac.labels import normalize_label, xu_mao_rule

LABEL_FILE = "labelResultAll.txt"
KINDS = {1: "mvsa_single", 3: "mvsa_multiple"}  # annotators -> release


def read_release(folder: Path) -> Source:
    """Records of a release folder with their texts decoded and their image paths checked.

    Files are attached to every row before the rule is applied, so every text of the release is
    decoded and counted; images are opened later (``images.check_images``). Without a ``data/``
    folder the labels are still read and ``files_checked`` is False.
    """
    folder = Path(folder)
    label_file = folder / LABEL_FILE
    if not label_file.is_file():
        raise FileNotFoundError(f"{folder}: no {LABEL_FILE}, so not an MVSA release folder")
    source = _read_votes(label_file)
    data = folder / "data"
    if data.is_dir():
        _attach_files(source, data.resolve())
    else:
        source.files_checked = False
    _apply_rule(source)  # rule drops name the label file, the source is the folder
    source.path = folder.resolve()
    return source


def _read_votes(label_file: Path) -> Source:
    """Every well-formed row as a record with its majority labels (None where there is none)
    and the rule's multimodal label (None where the rule drops the pair)."""
    label_file = Path(label_file)
    lines = decode_bytes(label_file.read_bytes()).text.splitlines()  # LF, CRLF and CR alike
    header = [cell.strip().lower() for cell in lines[0].split("\t")] if lines else []
    annotators = len(header) - 1
    if header[:1] != ["id"] or annotators not in KINDS or set(header[1:]) != {"text,image"}:
        first = lines[0][:80] if lines else ""
        raise ValueError(
            f"{label_file}: unreadable header {first!r}; expected 'ID<TAB>text,image' "
            "(MVSA-Single) or three 'text,image' columns (MVSA-Multiple)"
        )
    rows = (
        _parse_row(line, number, annotators, str(label_file))
        for number, line in enumerate(lines[1:], start=2)
        if line.strip()
    )
    return collect(label_file, KINDS[annotators], rows)


def _parse_row(line: str, number: int, annotators: int, file: str) -> Record | Problem:
    cells = [cell.strip() for cell in line.strip().split("\t")]
    row_id = cells[0] if cells[0].isdigit() else None

    def problem(reason: str, detail: str) -> Problem:
        return Problem(row_id, file, reason, f"line {number}: {detail}")

    votes = [cell.split(",") for cell in cells[1:]]
    if row_id is None or len(votes) != annotators or any(len(vote) != 2 for vote in votes):
        return problem("malformed_line", f"expected an id and {annotators} 'text,image' cells")
    try:
        votes = [(normalize_label(text), normalize_label(image)) for text, image in votes]
    except ValueError as error:
        return problem("unknown_label", str(error))
    text_label = _majority([text for text, _ in votes])
    image_label = _majority([image for _, image in votes])
    label = xu_mao_rule(text_label, image_label) if text_label and image_label else None
    return Record(row_id, "", "", text_label, image_label, label)


def _majority(votes: list[str]) -> str | None:
    """The label more than half of the annotators gave, else None."""
    label, count = Counter(votes).most_common(1)[0]
    return label if 2 * count > len(votes) else None


def _apply_rule(source: Source) -> None:
    """Move the pairs without a multimodal label to ``rule_dropped``, each with its reason."""
    kept = []
    for record in source.records:
        if record.multimodal_label is not None:
            kept.append(record)
            continue
        if record.text_label is None or record.image_label is None:
            missing = " and ".join(
                name for name in ("text", "image") if getattr(record, f"{name}_label") is None
            )
            reason, detail = "no_majority", f"no {missing} label given by most annotators"
        else:
            reason, detail = "conflict", f"text {record.text_label}, image {record.image_label}"
        source.problems.append(Problem(record.id, str(source.path), reason, detail))
        source.rule_dropped.append(record)
    source.records = kept


def _attach_files(source: Source, data: Path) -> None:
    """Read each record's text and check its image exists; records without files become
    problems. Counts the encoding of every text read."""
    encodings: Counter[str] = Counter()
    records, source.records = source.records, []
    for record in tqdm(records, desc="reading texts", disable=None):
        image, text = data / f"{record.id}.jpg", data / f"{record.id}.txt"
        if not image.is_file():
            source.problems.append(Problem(record.id, str(image), "missing_image"))
        elif not text.is_file():
            source.problems.append(Problem(record.id, str(text), "missing_text"))
        else:
            try:
                record.text, encoding = read_text(text)
            except OSError as error:
                source.problems.append(Problem(record.id, str(text), "unreadable_text", str(error)))
                continue
            encodings[encoding] += 1
            record.image = str(image)
            source.records.append(record)
    source.encodings = dict(encodings)
