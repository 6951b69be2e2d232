"""Prompt batches for a stream of records, built in DataLoader workers.

Opening, decoding and preprocessing an image costs more than a small model's forward pass
(``benchmarks/bench_data.py``: ~218 images/s at 336 px on one core), so it runs in
``torch.utils.data`` worker processes while the model works on the previous batch. Workers run
the whole processor call (rendering, pixels, tokens): the main process then only moves
tensors to the device.

Rows are numbered by their position in this process's shard (the ``ordinal``). Each window of
``batch_size * bucket`` consecutive rows goes to one worker, which sorts the window's records
by text length before cutting batches (little padding); whoever consumes the batches puts the
outcomes back in ordinal order (:func:`in_order`). A row that needs no model (a problem found
by the reader, an image that does not open, an id done before a resume) still gets its
ordinal, so the order can be restored without gaps.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice

import torch
from torch.utils.data import IterableDataset, get_worker_info

from llavac.data.images import UnreadableImage, open_rgb
from llavac.data.records import Problem
from llavac.data.stream import Done
from llavac.predict.batching import processor_inputs
from llavac.prompt import PromptFormat

DONE = None  # the outcome of a row whose id an earlier run already predicted


def _malloc_trim():
    """glibc's ``malloc_trim``, or None off glibc."""
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def release_memory() -> None:
    """Give freed heap memory back to the system. Decoded images (megabytes each, of every
    size) leave glibc's heap fragmented, and the freed pages would otherwise stay resident:
    the resident size of a long job crept up by tens of MB per thousand rows without it."""
    if _TRIM is not None:
        _TRIM(0)


@dataclass
class Item:
    """One worker batch: preprocessed pairs (maybe none) and rows that skip the model."""

    ordinals: list[int] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    encoded: dict[str, torch.Tensor] = field(default_factory=dict)
    skipped: list[tuple[int, Problem | None]] = field(default_factory=list)  # None: done

    def pin_memory(self) -> Item:
        """Called by the DataLoader's pinning thread on CUDA: page-locked tensors copy to the
        GPU asynchronously."""
        self.encoded = {key: value.pin_memory() for key, value in self.encoded.items()}
        return self


class PairStream(IterableDataset):
    """Preprocessed batches of this process's shard of ``rows()`` (``Record``s, ``Problem``s
    and ``Done``s, in input order); row ``i`` belongs to shard ``i % world``."""

    def __init__(self, rows: Callable[[], Iterable], processor, fmt: PromptFormat,
                 batch_size: int, bucket: int = 8, rank: int = 0, world: int = 1):
        self.rows, self.processor, self.fmt = rows, processor, fmt
        self.batch_size, self.window = batch_size, batch_size * bucket
        self.rank, self.world = rank, world

    def __iter__(self) -> Iterator[Item]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        shard = islice(self.rows(), self.rank, None, self.world)
        numbered = enumerate(shard)
        index = 0
        while window := list(islice(numbered, self.window)):
            if index % workers == worker:
                yield from self._items(window)
                release_memory()
            index += 1

    def _items(self, window: list[tuple[int, object]]) -> Iterator[Item]:
        """The window's batches, shortest texts first; the first item carries the rows the
        reader skipped and the rows already done."""
        skipped: list[tuple[int, Problem | None]] = []
        todo = []
        for ordinal, row in window:
            if isinstance(row, Problem):
                skipped.append((ordinal, row))
            elif isinstance(row, Done):
                skipped.append((ordinal, DONE))
            else:
                todo.append((ordinal, row))
        todo.sort(key=lambda pair: len(pair[1].text))
        batches = [todo[i : i + self.batch_size] for i in range(0, len(todo), self.batch_size)]
        for batch in batches or [[]]:
            yield self._item(batch, skipped)
            skipped = []

    def _item(self, batch: list, skipped: list) -> Item:
        """Open the batch's images (a failure skips that row) and run the processor."""
        item = Item(skipped=list(skipped))
        images, texts = [], []
        for ordinal, record in batch:
            try:
                images.append(open_rgb(record.image))
            except UnreadableImage as error:
                item.skipped.append(
                    (ordinal, Problem(record.id, str(record.image), "unreadable_image", str(error)))
                )
                continue
            item.ordinals.append(ordinal)
            item.ids.append(record.id)
            texts.append(record.text)
        if item.ids:
            item.prompts, item.encoded = processor_inputs(self.processor, self.fmt, images, texts)
        return item


def in_order(outcomes: Iterable[list[tuple[int, object]]]) -> Iterator[list[tuple[int, object]]]:
    """Per batch of ``(ordinal, outcome)`` pairs in any order, the outcomes whose turn has
    come, by ordinal: everything before them is out already. Memory holds only the rows that
    wait for an earlier one (a few windows)."""
    waiting: dict[int, object] = {}
    next_ordinal = 0
    for batch in outcomes:
        waiting.update(batch)
        ready = []
        while next_ordinal in waiting:
            ready.append((next_ordinal, waiting.pop(next_ordinal)))
            next_ordinal += 1
        yield ready
    if waiting:  # a bug, never bad input: every ordinal gets exactly one outcome
        raise RuntimeError(f"rows {sorted(waiting)[:5]} came out of order with a gap before them")
