"""Prompt batches for a stream of records, built in DataLoader workers.

Opening, decoding and preprocessing an image costs more than a small model's forward pass
(``benchmarks/bench_data.py``: ~218 images/s at 336 px on one core), so it runs in
``torch.utils.data`` worker processes while the model works on the previous batch. Workers run
the whole processor call (rendering, pixels, tokens): the main process then only moves
tensors to the device. Each pair is encoded as soon as its image is decoded and the image is
dropped, so a worker holds one full-size image at a time, not a batch of them.

Rows are numbered by their position in the input (the ``ordinal``). Each window of
``batch_size * bucket`` consecutive rows goes to one worker, which sorts the window's records
by text length before cutting batches (little padding); whoever consumes the batches puts the
outcomes back in ordinal order (:func:`in_order`). A row that needs no model (a problem found
by the reader, an image that does not open, an id done before a resume) still gets its
ordinal, so the order can be restored without gaps. The Ray engine
(:mod:`llavac.predict.ray_stages`) prepares its blocks with the same :func:`prepare_window`.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice

import torch
from torch.utils.data import IterableDataset, get_worker_info

from llavac.data.images import DEFAULT_LIMITS, ImageLimits, UnreadableImage, open_rgb
from llavac.data.records import Problem
from llavac.data.stream import Done
from llavac.predict.batching import collate, encode_pair
from llavac.prompt import PromptFormat

DONE = None  # the outcome of a row whose id an earlier run already predicted


def _glibc():
    """glibc, or None off glibc (its heap policy is then the platform's business)."""
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


_LIBC = _glibc()
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
_LARGEST_MMAP_THRESHOLD = 32 << 20  # glibc's upper limit on 64-bit systems
_DEFAULT_THRESHOLD = 128 << 10  # glibc's starting value of both thresholds


def release_memory() -> None:
    """Give freed heap memory back to the system. Decoded images (megabytes each, of every
    size) leave glibc's heap fragmented, and the freed pages would otherwise stay resident:
    the resident size of a long job crept up by tens of MB per thousand rows without it."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def hold_heap() -> None:
    """Let glibc keep what a model batch frees for the next batch: no automatic heap
    trimming, and no mapping of its own for a block of up to 32 MB. A batch allocates and
    frees the same working set every step (~100 MB at batch 64); given back each time, its
    pages were faulted in and zeroed again on the next step, and the resident size swung by
    that much. Processes that decode images still return their memory after each window
    (:func:`release_memory`)."""
    if _LIBC is not None:
        _LIBC.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
        _LIBC.mallopt(_M_MMAP_THRESHOLD, _LARGEST_MMAP_THRESHOLD)


@contextmanager
def held_heap() -> Iterator[None]:
    """The heap held (:func:`hold_heap`) while a job's model runs, then given back: the next
    job's DataLoader workers fork from a trimmed heap (the pages the model's process shares
    with them at the fork would be copied at its first write to each)."""
    hold_heap()
    try:
        yield
    finally:
        if _LIBC is not None:
            _LIBC.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_THRESHOLD)
            _LIBC.mallopt(_M_MMAP_THRESHOLD, _DEFAULT_THRESHOLD)
            _LIBC.malloc_trim(0)


def available_cores() -> int:
    """The cores this process may run on."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return cores or 1


def default_workers() -> int:
    """DataLoader workers: the cores this process may use less the one the model runs on, at
    most 4 (beyond that a 7B model on a GPU gains nothing)."""
    return max(0, min(4, available_cores() - 1))


@contextmanager
def model_threads(model, workers: int) -> Iterator[None]:
    """On the CPU, torch keeps off the cores the ``workers`` preprocess on, for as long as the
    job runs: an OpenMP thread that spins on a core a worker holds stalls every matrix
    product of its siblings. An explicitly lower thread count (``--threads``) stays."""
    threads = torch.get_num_threads()
    if model.device.type == "cpu" and workers:
        torch.set_num_threads(max(1, min(threads, available_cores() - workers)))
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass
class Item:
    """One worker batch: preprocessed pairs (maybe none) and rows that skip the model."""

    ordinals: list[int] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    encoded: dict[str, torch.Tensor] = field(default_factory=dict)
    skipped: list[tuple[int, Problem | None]] = field(default_factory=list)  # None: done
    # The input could not be read (a CSV without an image column, bytes that are not UTF-8):
    # said in one line by whoever consumes the items, not as a worker's traceback.
    error: str | None = None

    def pin_memory(self) -> Item:
        """Called by the DataLoader's pinning thread on CUDA: page-locked tensors copy to the
        GPU asynchronously."""
        self.encoded = {key: value.pin_memory() for key, value in self.encoded.items()}
        return self


def prepare_window(window: list[tuple[int, object]], processor, fmt: PromptFormat,
                   batch_size: int, limits: ImageLimits = DEFAULT_LIMITS) -> Iterator[Item]:
    """The batches of a window of ``(ordinal, Record | Problem | Done)``, shortest texts first;
    the first item carries the rows the reader skipped and the rows already done. Images are
    opened within ``limits`` (a larger one is a skipped row)."""
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
    batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    for batch in batches or [[]]:
        yield _prepare_batch(batch, skipped, processor, fmt, limits)
        skipped = []


def _prepare_batch(batch: list, skipped: list, processor, fmt: PromptFormat,
                   limits: ImageLimits) -> Item:
    """Open each image and encode its pair at once (a failure skips that row), then collate."""
    item = Item(skipped=list(skipped))
    pairs = []
    for ordinal, record in batch:
        try:
            image = open_rgb(record.image, limits)
        except UnreadableImage as error:  # counted under its kind: format, image_too_large ...
            item.skipped.append(
                (ordinal, Problem(record.id, str(record.image), error.reason, str(error))))
            continue
        prompt, encoded = encode_pair(processor, fmt, image, record.text)
        item.ordinals.append(ordinal)
        item.ids.append(record.id)
        item.prompts.append(prompt)
        pairs.append(encoded)
    if pairs:
        item.encoded = collate(pairs, processor.tokenizer.pad_token_id)
    return item


class PairStream(IterableDataset):
    """Preprocessed batches of ``rows()`` (``Record``s, ``Problem``s and ``Done``s, in input
    order), one window of ``batch_size * bucket`` rows per worker in turn."""

    def __init__(self, rows: Callable[[], Iterable], processor, fmt: PromptFormat,
                 batch_size: int, bucket: int = 8, limits: ImageLimits = DEFAULT_LIMITS):
        self.rows, self.processor, self.fmt, self.limits = rows, processor, fmt, limits
        self.batch_size, self.window = batch_size, batch_size * bucket

    def __iter__(self) -> Iterator[Item]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        numbered = enumerate(self.rows())
        index = 0
        try:
            while window := list(islice(numbered, self.window)):
                if index % workers == worker:
                    yield from prepare_window(window, self.processor, self.fmt,
                                              self.batch_size, self.limits)
                    release_memory()
                index += 1
        except (ValueError, FileNotFoundError) as error:  # the input itself is bad
            yield Item(error=str(error))


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
