"""``llavac data check``: read everything once, the way training will, and say what is wrong.

Every text is decoded and every image opened fully, so a problem found later in training is a
problem this check missed. Pairs the label rule drops (``conflict``, ``no_majority``) are
counted in ``dropped`` but are not problems: the rule drops them on purpose.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llavac.data.images import check_images
from llavac.data.load import read_source
from llavac.data.records import Problem, count_by_reason, count_labels, is_error
from llavac.labels import LABELS, SLOT_FIELDS

KIND_NAMES = {"mvsa_single": "MVSA-Single release", "mvsa_multiple": "MVSA-Multiple release",
              "own": "own-data file"}
SHOWN_PROBLEMS = 20


@dataclass
class Report:
    path: str
    kind: str | None = None
    rows: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    labels: dict[str, dict[str, int]] = field(default_factory=dict)
    encodings: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None  # why the input cannot be used at all

    @property
    def exit_code(self) -> int:
        """0 clean, 1 problems found, 2 unusable."""
        return 2 if self.error else 1 if self.problems else 0

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "exit_code": self.exit_code}, ensure_ascii=False)

    def format_text(self) -> str:
        dropped = ", ".join(f"{reason} {n}" for reason, n in self.dropped.items())
        if self.error:  # the reasons too: they say why nothing was usable (missing_image ...)
            return f"unusable: {self.error}" + (f"; dropped: {dropped}" if dropped else "")
        lines = [f"{KIND_NAMES[self.kind]} {self.path}: {self.rows} rows, {self.kept} kept"]
        lines.append(f"dropped: {dropped or 'none'}")
        lines.append("labels of kept pairs:" + "".join(f" {label:>9}" for label in LABELS))
        for modality, counts in self.labels.items():
            row = "".join(f" {counts.get(label, 0):>9}" for label in LABELS)
            rest = "".join(f"  {k} {v}" for k, v in counts.items() if k not in LABELS)
            lines.append(f"  {modality:<19}{row}{rest}")
        encodings = ", ".join(f"{name} {n}" for name, n in self.encodings.items())
        lines.append(f"text encodings: {encodings or 'none read'}")
        lines.append(f"problems: {len(self.problems) or 'none'}")
        for p in self.problems[:SHOWN_PROBLEMS]:
            lines.append(f"  {p.reason:<18} id {p.id}  {p.file}  {p.detail}".rstrip())
        if len(self.problems) > SHOWN_PROBLEMS:
            lines.append(f"  ... {len(self.problems) - SHOWN_PROBLEMS} more (--json lists all)")
        lines.append(f"checked in {self.seconds:.1f} s")
        return "\n".join(lines)


def check_path(path: str | Path) -> Report:
    """Read a release folder or own-data file completely and report on it (never raises for
    bad input: an unusable input gives a report with ``exit_code`` 2 and the reason)."""
    start = time.perf_counter()
    report = Report(path=str(path))
    try:
        source = read_source(path)
    except (OSError, ValueError) as error:
        report.error = str(error)
        report.seconds = time.perf_counter() - start
        return report
    records, problems = source.records, list(source.problems)
    if source.files_checked:
        records, unreadable = check_images(records)
        problems += unreadable
        # The pairs the rule drops are not used, but their images are part of the release too.
        extra = check_images(source.rule_dropped, desc="opening dropped pairs' images")[1]
    else:
        note = "no images or texts to check: statistics from the label file only"
        extra = [Problem(None, str(Path(path) / "data"), "missing_data_folder", note)]
    report.kind, report.rows, report.kept = source.kind, source.rows, len(records)
    report.dropped = count_by_reason(problems)
    report.labels = {
        slot: count_labels(records, field_name) for slot, field_name in SLOT_FIELDS.items()
    }
    report.problems = [p for p in problems if is_error(p)] + extra
    report.encodings = source.encodings
    if not records:
        report.error = f"{source.path}: nothing usable ({source.rows} rows, none kept)"
    report.seconds = time.perf_counter() - start
    return report
