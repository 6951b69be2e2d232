"""The output folder of ``llavac predict --engine ray``: results committed block by block.

The input is cut into blocks of ``batch_size * bucket`` consecutive rows (the local engine's
length-sorted windows); block ``k`` holds rows ``k * size`` to ``(k + 1) * size - 1``. Each
block travels through the cluster as one unit and is committed as one unit::

    OUT/part-000000007.jsonl          its predictions in input order (.parquet: --out-format)
    OUT/errors/part-000000007.jsonl   its skipped rows, one per line as in OUT.errors.jsonl
    OUT/_llavac/blocks/000000007.json its commit record (counts), written last
    OUT/_llavac/job.json              the job's settings, input files included

Every file is written under a temporary name starting with a dot, flushed to disk and renamed
(:func:`llavac.durable.write_atomic`), so a reader of ``OUT/part-*`` never sees half a file.
A block is committed once its record exists. Its file names depend on nothing but the block,
so a block done twice (a task Ray retried, a block in flight when the driver died) replaces
its own files: every input row ends up exactly once, in the block that holds it. A resume
skips the committed blocks; a job with other settings or a changed input is refused.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from llavac.args import PredictArgs
from llavac.durable import write_atomic
from llavac.predict import outfile
from llavac.predict.summary import CorpusSummary

DIGITS = 9  # block numbers in file names: sorted names are input order
STATE = "_llavac"  # the folder's own state; a leading "_" keeps it out of readers' globs
SUFFIXES = {"jsonl": ".jsonl", "parquet": ".parquet"}
COUNTS = ("predicted", "skipped", "first_skipped", "unparseable")  # a commit record's counts


@dataclass
class BlockResult:
    """What the model stage hands the writer for one block."""

    block: int
    predictions: list[str]  # Prediction.to_json() lines, in input order
    problems: list[str]  # corpus.problem_line() lines, in input order
    counts: CorpusSummary


class BlockFolder:
    """One job's output folder (see the module docstring)."""

    def __init__(self, root: str | Path, out_format: str = "jsonl"):
        self.root = Path(root).resolve()
        self.suffix = SUFFIXES[out_format]
        self.state = self.root / STATE
        self.records = self.state / "blocks"
        self.job = self.state / "job.json"

    def part(self, block: int) -> Path:
        return self.root / f"part-{block:0{DIGITS}d}{self.suffix}"

    def errors(self, block: int) -> Path:
        return self.root / "errors" / f"part-{block:0{DIGITS}d}.jsonl"

    def record(self, block: int) -> Path:
        return self.records / f"{block:0{DIGITS}d}.json"

    # -- the driver ----------------------------------------------------------------------

    def claim(self, job: PredictArgs, settings: dict) -> dict[int, dict]:
        """Make the folder this job's (refusing another job's output unless told how) and
        return the commit records of the blocks an earlier run of it committed."""
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"--output {self.root}: a file; --engine ray writes a folder of files")
        held = [path for path in self.root.iterdir()] if self.root.exists() else []
        if held and not self.job.is_file():
            raise ValueError(f"--output {self.root}: a folder that holds no llavac predict job "
                             f"({STATE}/job.json); name a new or empty folder")
        if held and not (job.resume or job.overwrite):
            raise ValueError(f"{self.root} holds a job: pass --resume to continue it or "
                             "--overwrite to replace it")
        committed = {}
        if held and job.overwrite:
            self._clear()
        elif held:
            outfile.check_settings(self.job, settings)
            committed = self.committed()
            for folder in (self.root, self.root / "errors", self.records):
                for temporary in folder.glob(".*.tmp"):  # writes a kill cut short
                    temporary.unlink(missing_ok=True)
        for folder in (self.records, self.root / "errors"):
            folder.mkdir(parents=True, exist_ok=True)
        outfile.write_settings(self.job, settings)
        return committed

    def _clear(self) -> None:
        """Remove an earlier job's files, its settings last: a kill on the way leaves a
        folder that --overwrite still recognises."""
        for path in self.root.glob("part-*"):
            path.unlink()
        for folder in (self.root / "errors", self.records):
            shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(self.state)

    def committed_blocks(self) -> list[int]:
        """The blocks committed so far, in input order."""
        return sorted(int(path.stem) for path in self.records.glob("*.json"))

    def read_record(self, block: int) -> dict:
        return json.loads(self.record(block).read_text(encoding="utf-8"))

    def committed(self) -> dict[int, dict]:
        """The commit records present, by block."""
        return {block: self.read_record(block) for block in self.committed_blocks()}

    def summary(self, earlier: dict[int, dict], elapsed_s: float,
                method: str = "score") -> CorpusSummary:
        """The job's summary: this run's blocks, and what ``earlier`` (the blocks committed
        before it started) already predicted and skipped."""
        summary = CorpusSummary(elapsed_s=elapsed_s, out=str(self.root),
                                errors=str(self.root / "errors"), method=method)
        for block, record in self.committed().items():
            counts = CorpusSummary(**{key: record[key] for key in COUNTS})
            if block in earlier:
                summary.already_done += counts.predicted
                counts.predicted = counts.unparseable = 0
            summary.add(counts)
        return summary

    # -- the write tasks -----------------------------------------------------------------

    def commit(self, result: BlockResult) -> None:
        """Write a block's files, then its record (see the module docstring)."""
        self._replace(self.part(result.block), self._predictions(result.predictions))
        self._replace(self.errors(result.block), _lines(result.problems))
        record = {"block": result.block, **{key: getattr(result.counts, key) for key in COUNTS}}
        write_atomic(self.record(result.block), json.dumps(record))

    def _predictions(self, lines: list[str]) -> bytes | None:
        if not lines or self.suffix == ".jsonl":
            return _lines(lines)
        import pyarrow as pa
        import pyarrow.parquet as pq

        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist([json.loads(line) for line in lines]), buffer)
        return buffer.getvalue()

    @staticmethod
    def _replace(path: Path, data: bytes | None) -> None:
        """Write ``path``, or remove it when the block has nothing for it (an earlier
        attempt's file must not outlive the block's new outcome)."""
        if data is None:
            path.unlink(missing_ok=True)
        else:
            write_atomic(path, data)


def _lines(lines: Iterable[str]) -> bytes | None:
    text = "".join(line + "\n" for line in lines)
    return text.encode("utf-8") if text else None

