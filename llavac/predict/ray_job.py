"""``llavac predict --engine ray``: the corpus job as a Ray Data pipeline (the driver's part).

    predict_on_ray(PredictConfig) -> CorpusSummary

The driver connects to Ray (``--ray-address auto`` or ``ray://...``; none: a local Ray on
this machine), checks and claims the output folder (:mod:`llavac.predict.blocks`), plans the
stages of :mod:`llavac.predict.ray_stages` and waits for them, reporting progress from the
commit records as they appear. No row passes through it: rows are read, prepared, labelled
and written by Ray's workers. Ray restarts a killed model actor and retries its block; a
block done twice replaces its own files, so every row is written once.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict

import ray

from llavac.args import PredictArgs, PredictConfig
from llavac.console import Progress, log
from llavac.data.stream import count_rows, input_files, stream_records
from llavac.predict.blocks import BlockFolder
from llavac.predict.classifier import job_settings
from llavac.predict.ray_stages import CommitBlocks, InputBlocks, ModelActor, prepare_blocks
from llavac.predict.summary import CorpusSummary

# Ray CPUs the read, write and bookkeeping tasks reserve: none. The read task streams the
# whole input and waits on the stages downstream most of the time, a commit writes a few
# small files; reserving CPUs for them would take the preprocessing's (on a 2-CPU machine,
# the model actor holds one CPU and preprocessing the other).
LIGHT_TASK_CPUS = 0
# Threads. A preprocessing task is one core: torch and the tokenizers' own thread pool would
# otherwise start a thread per core in every task. A model actor uses the core it reserves
# (a GPU actor needs no more). The two environments also differ, which is what keeps Ray Data
# from fusing the preprocessing into the model actors (it fuses stages whose remote arguments
# are equal); fused, the images would be prepared in the actor instead of beside it.
PREPARE_ENV = {"env_vars": {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}}
MODEL_ENV = {"env_vars": {"OMP_NUM_THREADS": "1"}}


def predict_on_ray(config: PredictConfig) -> CorpusSummary:
    """Run the corpus job of ``config`` on Ray (see the module docstring)."""
    job = config.predict
    if job.output is None:
        raise ValueError("--engine ray needs --output FOLDER: the results are written there, "
                         "block by block, never through this process")
    if job.resume and job.overwrite:
        raise ValueError("--resume and --overwrite exclude each other")
    _connect(job.ray_address)
    facts = _on_a_worker(_input_facts, job.input, job.limit)
    settings = {**job_settings(config), "engine": "ray", "block_rows": job.batch_size * job.bucket,
                "limit": job.limit, "out_format": job.out_format, "input_files": facts}
    folder = BlockFolder(job.output, job.out_format)
    earlier = folder.claim(job, settings)
    total = ray.remote(count_rows).options(num_cpus=LIGHT_TASK_CPUS).remote(job.input, job.limit)
    start = time.perf_counter()
    dataset, actors = _plan(config, frozenset(earlier))
    with _Watch(folder, earlier, total, job), _bad_input_as_itself():
        # As many commits at a time as model actors: a commit is a few small files, and with
        # no CPU reserved nothing else would bound how many worker processes Ray starts.
        dataset.write_datasink(CommitBlocks(str(folder.root), job.out_format),
                               ray_remote_args={"num_cpus": LIGHT_TASK_CPUS}, concurrency=actors)
    return folder.summary(earlier, time.perf_counter() - start, job.method)


def _connect(address: str | None) -> None:
    """Join the cluster at ``address`` (``auto``, ``ray://...``) or start a local Ray, unless
    this process is connected already. Ray's own messages and progress bars follow llavac's
    console settings: shown with ``--verbose`` only."""
    verbose = log.isEnabledFor(logging.DEBUG)
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=verbose,
                 logging_level=logging.INFO if verbose else logging.WARNING)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = verbose
    context.print_on_execution_start = verbose
    # Ray Data's failures reach the driver as exceptions, which say the same as its log.
    logging.getLogger("ray.data").setLevel(logging.INFO if verbose else logging.CRITICAL)
    # A stage's own error (--strict, an unreadable input) comes back as itself, so that the
    # command line can say it in one line, not wrapped in Ray Data's UserCodeException.
    context.raise_original_map_exception = True


def _on_a_worker(function, *args):
    """``function(*args)`` run as a Ray task, so that the input is read where the cluster
    reads it."""
    with _bad_input_as_itself():
        return ray.get(ray.remote(function).options(num_cpus=LIGHT_TASK_CPUS).remote(*args))


def _input_facts(path: str, limit: int | None) -> list[dict]:
    """Each input file's path, size and modification time (a resume of a changed input is
    refused), after reading the first row (a bad CSV header is an error before anything is
    written)."""
    next(stream_records(path, limit=1), None)
    return [{"path": str(file), "size": file.stat().st_size, "mtime_ns": file.stat().st_mtime_ns}
            for file in input_files(path)]


def _plan(config: PredictConfig, committed: frozenset[int]) -> tuple[ray.data.Dataset, int]:
    """Read -> prepare (CPU tasks) -> label (an actor pool) as a Ray dataset of blocks, and
    the number of model actors."""
    job = config.predict
    model = json.dumps(asdict(config.model))
    gpus = ray.cluster_resources().get("GPU", 0)
    actors = job.concurrency or max(1, int(gpus))
    blocks = ray.data.read_datasource(InputBlocks(job, committed), num_cpus=LIGHT_TASK_CPUS)
    prepared = blocks.map_batches(
        prepare_blocks, batch_size=1, num_cpus=1, runtime_env=PREPARE_ENV,
        fn_kwargs={"model": model, "batch_size": job.batch_size,
                   "max_pixels": job.max_image_pixels, "strict": job.strict})
    return prepared.map_batches(
        ModelActor, batch_size=1, num_cpus=1, num_gpus=1 if gpus else 0, runtime_env=MODEL_ENV,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors, initial_size=actors),
        fn_constructor_kwargs={"model": model, "method": job.method,
                               "min_confidence": job.min_confidence}), actors


@contextmanager
def _bad_input_as_itself() -> Iterator[None]:
    """A ``ValueError`` or ``FileNotFoundError`` a Ray task raised for bad input (``--strict``,
    an unreadable input file) comes out as itself, one line for the command line, instead of
    Ray's wrapper with the worker's traceback; any other failure stays as Ray reports it."""
    try:
        yield
    except Exception as error:
        seen: set[int] = set()
        cause: BaseException | None = error
        while cause is not None and id(cause) not in seen:
            seen.add(id(cause))
            if isinstance(cause, ValueError | FileNotFoundError) and not isinstance(
                    cause, ray.exceptions.RayError):
                # llavac's messages are one line; Ray Data appends its retry advice below
                raise type(cause)(str(cause).split("\n", 1)[0]) from None
            cause = getattr(cause, "cause", None) or cause.__cause__
        raise


class _Watch:
    """Progress from the commit records: rows done of the total (the blocks an earlier run
    committed count as done), rows/s, rows skipped and blocks committed, polled in a thread
    while the driver waits for Ray, and once more at the end."""

    def __init__(self, folder: BlockFolder, earlier: dict[int, dict], total_ref,
                 job: PredictArgs):
        self.folder, self.total_ref, self.seen = folder, total_ref, set(earlier)
        self.unshown, self.skipped = _rows(earlier.values())  # rows the bar has yet to show
        self.every = job.progress_every
        self.progress = Progress(None, f"predicting ({job.method}, ray)", unit="row",
                                 enabled=job.progress, every=job.progress_every)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Watch:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self._poll()
        self.progress.close()

    def _run(self) -> None:
        while not self.stop.wait(min(1.0, self.every)):
            self._poll()

    def _poll(self) -> None:
        """Count the blocks committed since the last poll."""
        if self.total_ref is not None and ray.wait([self.total_ref], timeout=0)[0]:
            self.progress.total = ray.get(self.total_ref)
            self.total_ref = None
            if self.progress.bar is not None:
                self.progress.bar.total = self.progress.total
        new = set(self.folder.committed_blocks()) - self.seen
        self.seen |= new
        rows, skipped = _rows(self.folder.read_record(block) for block in new)
        self.skipped += skipped
        self.progress.update(self.unshown + rows, f"{self.skipped} skipped, "
                                                  f"{len(self.seen)} blocks committed")
        self.unshown = 0


def _rows(records) -> tuple[int, int]:
    """(rows, rows skipped) of some commit records."""
    rows = skipped = 0
    for record in records:
        skipped += sum(record["skipped"].values())
        rows += record["predicted"] + sum(record["skipped"].values())
    return rows, skipped
