"""The few types that carry data through the pipeline.

``Record`` is one image + text pair with its (possibly missing) labels; the JSONL written by
``llavac data export`` is this record, one per line. ``Problem`` is anything a reader skipped,
so it can be counted and shown. ``Split`` is train / validation / test plus a manifest that
travels into every output folder.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Record:
    id: str
    text: str
    image: str  # absolute path to the image file
    text_label: str | None = None
    image_label: str | None = None
    label: str | None = None  # the multimodal label

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


@dataclass(frozen=True)
class Problem:
    id: str | None  # None when the problem is not tied to one record (a malformed line)
    file: str
    reason: str  # a short machine-readable kind, e.g. "missing_image", "conflict"
    detail: str = ""


@dataclass
class Split:
    train: list[Record]
    validation: list[Record]
    test: list[Record]
    manifest: dict = field(default_factory=dict)

    def parts(self) -> dict[str, list[Record]]:
        """Non-empty parts by name, in the order train, validation, test."""
        named = {"train": self.train, "validation": self.validation, "test": self.test}
        return {name: records for name, records in named.items() if records}


def count_by_reason(problems: list[Problem]) -> dict[str, int]:
    return dict(sorted(Counter(p.reason for p in problems).items()))


def write_jsonl(records: list[Record], path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(record.to_json() + "\n")
