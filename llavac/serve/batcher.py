"""A micro-batching queue in front of the model.

The model is not safe to call from several threads at once and is much cheaper per example
in a batch, so concurrent requests do not call it directly: each ``(image, text)`` pair joins
one queue, and a single worker task takes whatever has queued (up to ``max_batch_size``),
runs one ``classify`` call in the model thread and hands every caller its own prediction.
Under light load a request runs alone after at most ``max_wait_ms``; under heavy load the
requests that arrive while the model is busy form the next batch. Model calls are therefore
serialised by construction, and the event loop stays free for ``/health`` and new uploads.

The model always runs on one dedicated thread, not on a shared pool: torch keeps per-thread
state (OpenMP teams, allocator arenas), and calling it from whichever pool thread is free
made the server's memory creep up by megabytes per thousand requests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The queue holds ``max_queue`` examples already: the caller should come back later."""


@dataclass
class _Job:
    item: tuple
    future: asyncio.Future


class MicroBatcher:
    """Groups concurrent ``submit`` calls into batched ``classify(items)`` calls.

    ``classify`` takes a list of items and returns one result per item, in order. If a
    batched call fails, its items are retried one by one, so one bad input cannot fail the
    requests it happened to share a batch with. ``max_queue`` bounds the waiting examples:
    a submit that would pass it raises :class:`QueueFull` at once (whole requests are taken
    or refused, never split). ``observe(size, seconds)`` hears of every model call.
    """

    def __init__(
        self,
        classify: Callable[[list], Sequence],
        max_batch_size: int = 8,
        max_wait_ms: float = 2.0,
        max_queue: int | None = None,
        observe: Callable[[int, float], None] | None = None,
    ):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self._classify = classify
        self.max_batch_size = max_batch_size
        self.max_wait = max(0.0, max_wait_ms) / 1000.0
        self.max_queue = max_queue
        self._observe = observe
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llavac-model")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task | None = None
        self.batches = 0  # classify calls made, for /health and the tests
        self.largest_batch = 0

    @property
    def pending(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    def _ensure_worker(self) -> asyncio.Queue:
        """Start the worker on the running loop (again, if the loop changed, as in tests)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._worker is None or self._worker.done():
            self._loop = loop
            self._queue = asyncio.Queue()
            self._worker = loop.create_task(self._run(self._queue), name="llavac-batcher")
        return self._queue

    async def submit(self, items: list) -> list:
        """The results for ``items``, in order; they may share batches with other requests."""
        queue = self._ensure_worker()
        if self.max_queue is not None and queue.qsize() + len(items) > self.max_queue:
            raise QueueFull(f"{queue.qsize()} examples are waiting; the limit is "
                            f"{self.max_queue}")
        loop = asyncio.get_running_loop()
        jobs = [_Job(item, loop.create_future()) for item in items]
        for job in jobs:
            queue.put_nowait(job)
        try:
            return list(await asyncio.gather(*(job.future for job in jobs)))
        except BaseException:
            for job in jobs:  # a caller that went away: its queued items are skipped
                job.future.cancel()
            raise

    async def in_model_thread(self, function: Callable[[], object]):
        """``function()`` on the model's thread (loading a model there keeps torch's
        per-thread state where the model will run)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, function)

    async def aclose(self) -> None:
        """Stop the worker; waiting callers get ``CancelledError``."""
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        if self._queue is not None:
            while not self._queue.empty():
                self._queue.get_nowait().future.cancel()

    async def _take_batch(self, queue: asyncio.Queue) -> list[_Job]:
        jobs = [await queue.get()]
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while len(jobs) < self.max_batch_size:
            if not queue.empty():
                jobs.append(queue.get_nowait())
                continue
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                jobs.append(await asyncio.wait_for(queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return [job for job in jobs if not job.future.done()]

    async def _run(self, queue: asyncio.Queue) -> None:
        while True:
            jobs = await self._take_batch(queue)
            try:
                await self._serve(jobs)
            except asyncio.CancelledError:
                for job in jobs:
                    job.future.cancel()
                raise
            del jobs  # not kept (with its images) while waiting for the next batch

    async def _serve(self, jobs: list[_Job]) -> None:
        if not jobs:
            return
        try:
            results = await self._call([job.item for job in jobs])
        except Exception as error:
            if len(jobs) == 1:
                self._fail(jobs[0], error)
                return
            log.warning("batched classify of %d items failed; retrying one by one",
                        len(jobs), exc_info=True)
            for job in jobs:
                try:
                    (result,) = await self._call([job.item])
                except Exception as single_error:
                    self._fail(job, single_error)
                else:
                    self._resolve(job, result)
            return
        for job, result in zip(jobs, results, strict=True):
            self._resolve(job, result)

    async def _call(self, items: list) -> list:
        self.batches += 1
        self.largest_batch = max(self.largest_batch, len(items))
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, self._classify, items)
        finally:
            if self._observe is not None:
                self._observe(len(items), time.perf_counter() - started)
        if len(results) != len(items):
            raise RuntimeError(f"classify returned {len(results)} results for {len(items)} items")
        return list(results)

    @staticmethod
    def _resolve(job: _Job, result) -> None:
        if not job.future.done():
            job.future.set_result(result)

    @staticmethod
    def _fail(job: _Job, error: BaseException) -> None:
        log.error("classify failed", exc_info=error)
        if not job.future.done():
            job.future.set_exception(error)
