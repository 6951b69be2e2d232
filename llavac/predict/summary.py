"""What a corpus job did, and the lines it reports it with; shared by both engines.

Kept free of torch: the Ray engine's commit workers read it too (``llavac.predict.blocks``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from llavac.data.records import Problem

FIRST_IDS_SHOWN = 5  # skipped ids named in the summary line


@dataclass
class CorpusSummary:
    """What a corpus job did, over this run and the runs it resumed."""

    predicted: int = 0  # by this run
    skipped: dict[str, int] = field(default_factory=dict)  # by reason
    first_skipped: list[str] = field(default_factory=list)  # ids, in input order
    already_done: int = 0  # rows an earlier run predicted (resume)
    unparseable: int = 0  # generated answers that do not parse (method generate)
    elapsed_s: float = 0.0
    out: str | None = None
    errors: str | None = None
    method: str = "score"  # generate: the line always says how many answers did not parse

    @property
    def pairs_per_s(self) -> float:
        return self.predicted / self.elapsed_s if self.elapsed_s else 0.0

    def skip(self, problem: Problem) -> None:
        self.skipped[problem.reason] = self.skipped.get(problem.reason, 0) + 1
        if len(self.first_skipped) < FIRST_IDS_SHOWN and problem.id is not None:
            self.first_skipped.append(problem.id)

    def settle(self, row: int, outcome, min_confidence: float | None
               ) -> tuple[str | None, str | None]:
        """Count one row's outcome (a ``Prediction``, a ``Problem``, or None for a row an
        earlier run predicted) and return its line: ``(prediction, None)``, ``(None,
        problem)`` or ``(None, None)``. ``min_confidence`` abstains as ``Prediction.abstain``."""
        if outcome is None:
            self.already_done += 1
            return None, None
        if isinstance(outcome, Problem):
            self.skip(outcome)
            return None, problem_line(row, outcome)
        self.predicted += 1
        self.unparseable += outcome.unparseable
        return outcome.abstain(min_confidence).to_json(), None

    def add(self, other: CorpusSummary) -> None:
        """Count ``other``'s rows in as well (``other`` comes after these in the input)."""
        self.predicted += other.predicted
        self.already_done += other.already_done
        self.unparseable += other.unparseable
        for reason, n in other.skipped.items():
            self.skipped[reason] = self.skipped.get(reason, 0) + n
        self.first_skipped = (self.first_skipped + other.first_skipped)[:FIRST_IDS_SHOWN]

    def line(self) -> str:
        """``records: ...``, the one line on what the job read, as every command prints it."""
        skipped = sum(self.skipped.values())
        if skipped:
            reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(self.skipped.items()))
            ids = ", ".join(self.first_skipped)
            skipped_part = f"{skipped} skipped ({reasons}" + (f"; first ids: {ids})" if ids
                                                             else ")")
        else:
            skipped_part = "none skipped"
        parts = [f"records: {self.predicted} predicted", skipped_part,
                 f"{self.already_done} already done"]
        if self.unparseable or self.method == "generate":
            parts.append(f"{self.unparseable} unparseable")
        parts.append(f"{self.elapsed_s:.1f} s, {self.pairs_per_s:.1f} pairs/s")
        return "; ".join(parts)

    def wrote(self) -> str | None:
        """``wrote ...``: where the predictions and the skipped rows are."""
        if self.out is None:
            return None
        return f"wrote {self.out}: predictions; skipped rows in {self.errors}"


def problem_line(row: int, problem: Problem) -> str:
    """A skipped row as the errors file holds it: its input row (0, 1, ...) and the problem."""
    return json.dumps({"row": row, **dataclasses.asdict(problem)}, ensure_ascii=False)


def strict_error(problem: Problem) -> ValueError:
    """The error ``--strict`` stops at."""
    return ValueError(f"{problem.file}: {problem.reason} (id {problem.id}) "
                      f"{problem.detail}".rstrip() + " [--strict]")
