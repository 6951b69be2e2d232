"""The one JSONL writer: records (``data export``) and predictions (``predict``,
``evaluate``) are written the same way, one object per line in the order given."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol


class JsonLine(Protocol):
    def to_json(self) -> str: ...  # one JSON object, no newline


def write_jsonl(items: Iterable[JsonLine], path: str | Path) -> Path:
    """Write each item's ``to_json()`` as one line of ``path`` (parents created); return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for item in items:
            f.write(item.to_json() + "\n")
    return path
