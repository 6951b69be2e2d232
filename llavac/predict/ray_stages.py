"""The four stages of a Ray Data corpus job; each moves one Ray row per block of the input.

1. :class:`InputBlocks` (a Ray ``Datasource``): one read task streams the input in order with
   the local engine's reader (:func:`llavac.data.stream.stream_records`) and cuts it into
   blocks (:mod:`llavac.predict.blocks`), skipping those a resumed job committed.
2. :func:`prepare_blocks` (CPU tasks): opens and preprocesses each image, as the local
   engine's DataLoader workers do (:func:`llavac.predict.loader.prepare_window`).
3. :class:`ModelActor` (an actor pool, a GPU each where there are GPUs): the classifier.
4. :class:`CommitBlocks` (a Ray ``Datasink``): writes and commits each block.

A block is one Ray row (its rows pickled together) so that it stays one unit from the read to
the commit, whatever Ray does with its own blocks: it is the unit of retry, of commit and of
resume, and its outcome is exactly the local engine's for the same rows. One ordered read
task is what makes ids, duplicates and ``--limit`` mean what they mean locally (a row
without an id is named by its line, the first of two rows with one id wins); it reads tens
of thousands of rows a second, far ahead of the model stage. Ray's own file readers were no
fit: their JSON reader fails the whole job at a malformed line, their CSV reader turns an id
``007`` into the number 7, and neither says which line a row came from.
"""

from __future__ import annotations

import functools
import json
import pickle
from collections.abc import Iterator
from itertools import count, islice

import numpy as np
import pyarrow as pa
from ray.data.block import BlockAccessor, BlockMetadata
from ray.data.datasource import Datasink, Datasource, ReadTask

from llavac.args import ClassifierArgs, PredictArgs
from llavac.data.records import Problem
from llavac.data.stream import stream_records
from llavac.predict.blocks import BlockFolder, BlockResult
from llavac.predict.summary import CorpusSummary, strict_error

# The preparing and labelling stages import torch and transformers where they run (inside
# the functions below): the read and commit workers, which load this module too, need
# neither, and importing them takes seconds in every worker process.


class _CommittedRows:
    """Positions of the rows in committed blocks (``stream_records``' ``done_rows``)."""

    def __init__(self, blocks: frozenset[int], size: int):
        self.blocks, self.size = blocks, size

    def __contains__(self, position: object) -> bool:
        return isinstance(position, int) and position // self.size in self.blocks


class InputBlocks(Datasource):
    """The input as one row per block: ``{"block": k, "rows": pickled [(ordinal, row)]}``."""

    def __init__(self, job: PredictArgs, committed: frozenset[int]):
        super().__init__()
        self.input, self.limit = job.input, job.limit
        self.size = job.batch_size * job.bucket
        self.committed = committed

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context=None) -> list[ReadTask]:
        metadata = BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None,
                                 input_files=(str(self.input),))
        return [ReadTask(self._blocks, metadata)]

    def _blocks(self) -> Iterator[pa.Table]:
        rows = stream_records(self.input, self.limit,
                              done_rows=_CommittedRows(self.committed, self.size))
        numbered = enumerate(rows)
        for block in count():
            window = list(islice(numbered, self.size))
            if not window:
                return
            if block not in self.committed:
                yield pa.table({"block": [block], "rows": [pickle.dumps(window)]})


@functools.lru_cache(maxsize=1)
def _inputs(model: str):
    """The processor and prompt format, loaded once per worker process."""
    # Imported here (as below): torch loads only in the worker processes that need it.
    from llavac.predict.classifier import model_inputs

    return model_inputs(ClassifierArgs(**json.loads(model)))


def prepare_blocks(batch: dict, model: str, batch_size: int, max_pixels: int,
                   strict: bool) -> dict:
    """Each block's rows as the model's batches (``loader.Item``s), images decoded one at a
    time within ``max_pixels``; with ``strict`` the block's first bad row stops the job."""
    from llavac.models import image_limits
    from llavac.predict.loader import prepare_window, release_memory

    processor, fmt = _inputs(model)
    limits = image_limits(processor, max_pixels, "predict.max_image_pixels")
    prepared = []
    for payload in batch["rows"]:
        items = list(prepare_window(pickle.loads(payload), processor, fmt, batch_size, limits))
        if strict:
            problems = [p for item in items for _, p in item.skipped if isinstance(p, Problem)]
            if problems:
                raise strict_error(problems[0])
        prepared.append(pickle.dumps(items))
    release_memory()
    return {"block": batch["block"], "items": np.array(prepared, dtype=object)}


class ModelActor:
    """One classifier, loaded once, that labels the blocks it is given."""

    def __init__(self, model: str, method: str, min_confidence: float | None):
        from llavac.predict.classifier import Classifier
        from llavac.predict.loader import hold_heap

        hold_heap()  # its own process: the batches' working set stays, as locally
        self.classifier = Classifier.from_args(ClassifierArgs(**json.loads(model)))
        self.method, self.min_confidence = method, min_confidence

    def __call__(self, batch: dict) -> dict:
        results = [pickle.dumps(self._label(int(block), pickle.loads(items)))
                   for block, items in zip(batch["block"], batch["items"], strict=True)]
        return {"block": batch["block"], "result": np.array(results, dtype=object)}

    def _label(self, block: int, items: list) -> BlockResult:
        outcomes = sorted((outcome for ready in self.classifier.predict_items(items, self.method)
                           for outcome in ready), key=lambda pair: pair[0])
        result = BlockResult(block, [], [], CorpusSummary())
        for row, outcome in outcomes:
            prediction, problem = result.counts.settle(row, outcome, self.min_confidence)
            result.predictions += [prediction] if prediction else []
            result.problems += [problem] if problem else []
        return result


class CommitBlocks(Datasink):
    """Commits each block's result into the job's folder (:class:`BlockFolder`)."""

    def __init__(self, out: str, out_format: str):
        self.out, self.out_format = out, out_format

    def write(self, blocks, ctx) -> int:
        folder = BlockFolder(self.out, self.out_format)
        committed = 0
        for block in blocks:
            for payload in BlockAccessor.for_block(block).to_arrow()["result"].to_pylist():
                folder.commit(pickle.loads(payload))
                committed += 1
        return committed

    def get_name(self) -> str:
        return "CommitBlocks"
