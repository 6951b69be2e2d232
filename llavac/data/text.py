"""Decoding tweet texts released as raw bytes.

MVSA texts are bytes as the crawlers saved them: mostly UTF-8, but 1,131 of the 4,869
MVSA-Single texts carry GBK punctuation (``\\xa1\\xb0`` is a left double quote in GB 18030).
Decoding those as UTF-8 with ``errors="replace"`` would turn real characters into U+FFFD, so
the order is: strict UTF-8, then strict GB 18030 (a superset of GBK), and only then the
decoding that replaces the fewest bytes. The encoding used is returned so readers can count
each case instead of hiding it.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

ENCODINGS = ("utf-8", "gb18030", "replaced")


class Decoded(NamedTuple):
    text: str
    encoding: str  # one of ENCODINGS


def decode_bytes(raw: bytes) -> Decoded:
    """Decode ``raw`` without ever failing and without dropping characters a strict decode keeps."""
    for codec, name in (("utf-8-sig", "utf-8"), ("gb18030", "gb18030")):
        try:
            return Decoded(raw.decode(codec), name)
        except UnicodeDecodeError:
            pass
    candidates = (raw.decode(codec, errors="replace") for codec in ("utf-8-sig", "gb18030"))
    return Decoded(min(candidates, key=lambda text: text.count("\ufffd")), "replaced")


def read_text(path: Path) -> Decoded:
    """The text of one tweet file, decoded and stripped of surrounding whitespace."""
    text, encoding = decode_bytes(Path(path).read_bytes())
    return Decoded(text.strip(), encoding)
