"""``llavac data export``: a split written as JSONL files plus its manifest.

The JSONL is ``Record`` one per line, read back by ``load_split`` for training, evaluation and
prediction; ``manifest.json`` says where the records came from and what was skipped and why.
"""

from __future__ import annotations

import json
from pathlib import Path

from llavac.data.load import MANIFEST, PART_NAMES, load_split
from llavac.data.records import Split, empty_part
from llavac.durable import write_atomic
from llavac.jsonl import write_jsonl


def export_split(
    path: str | Path,
    procedure: str,
    fold: int | None = None,
    seed: int = 0,
    splits_dir: str | Path | None = None,
    out: str | Path = "split",
    strict: bool = False,
) -> Split:
    """Load ``path`` by ``procedure`` (see ``load_split``), write it under ``out`` and return
    the split (``format_summary`` says what it holds). Part files the procedure does not
    make are removed, so an older export in the same folder cannot be mixed in. A part left
    empty is an error naming why its records were skipped, and nothing is written."""
    split = load_split(path, procedure, fold, seed, splits_dir, strict)
    for name in split.manifest["parts"]:  # an empty part is refused before anything is written
        if not getattr(split, name):
            raise empty_part(path, name, split.manifest)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    parts = split.manifest["parts"]
    for name in PART_NAMES:
        if name in parts:
            write_jsonl(getattr(split, name), out / f"{name}.jsonl")
        else:
            (out / f"{name}.jsonl").unlink(missing_ok=True)
    manifest = json.dumps(split.manifest, indent=2, ensure_ascii=False)
    write_atomic(out / MANIFEST, manifest + "\n")  # whole or absent, like every manifest
    return split


def format_summary(manifest: dict, out: Path) -> str:
    """Counts per part and label, then what was skipped and why."""
    counts = manifest["counts"]
    labels = [key for key in next(iter(counts.values())) if key != "total"]
    lines = [f"{manifest['procedure']} split of {manifest['source']} -> {out}"]
    lines.append(f"  {'part':<11}{'total':>7}" + "".join(f"{label:>10}" for label in labels))
    for name, row in counts.items():
        lines.append(f"  {name:<11}{row['total']:>7}" + "".join(f"{row[k]:>10}" for k in labels))
    skipped = ", ".join(f"{reason} {n}" for reason, n in manifest["skipped"].items())
    lines.append(f"skipped: {skipped or 'nothing'}")
    mismatches = ", ".join(f"{r} {n}" for r, n in manifest["label_mismatches"].items())
    if mismatches:
        lines.append(f"published labels used where they differ: {mismatches}")
    if manifest["errors"]:
        lines.append("bad records (see manifest.json, or run `llavac data check`):")
        lines += [f"  {e['reason']:<18} id {e['id']}  {e['file']}" for e in manifest["errors"][:10]]
    return "\n".join(lines)
