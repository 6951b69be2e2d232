"""Timing and memory helpers shared by the benchmark scripts (not part of the package).

Ratios are measured side by side: every repeat runs each contender once, in an order that
rotates from repeat to repeat, so a burst of load from another process hits all of them
alike. A ratio is the median over repeats of the per-repeat ratio (paired), which is steadier
on a noisy machine than a ratio of medians; both medians are printed too.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
# The scripts measure this checkout's llavac, installed or not (a GPU machine may hold the
# dependencies but no install of llavac).
if str(REPO) not in sys.path:
    sys.path.insert(1, str(REPO))


def quiet() -> None:
    """No deprecation chatter or weight-loading progress bars between the figures."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def side_by_side(
    contenders: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1
) -> dict[str, list[float]]:
    """Seconds per call of each contender, ``repeats`` times each, interleaved and rotated.

    ``warmup`` untimed calls of every contender come first (allocator growth, lazy caches,
    one-time kernel choices). The garbage collector runs before each round and is paused
    during it, as ``timeit`` does, so no collection lands inside one contender's time (a full
    collection of a process holding transformers takes longer than a tiny model's call).
    """
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            contenders[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        order = names[repeat % len(names):] + names[: repeat % len(names)]
        gc.collect()
        gc.disable()
        try:
            for name in order:
                start = time.perf_counter()
                contenders[name]()
                times[name].append(time.perf_counter() - start)
        finally:
            gc.enable()
    return times


def paired_ratio(times: dict[str, list[float]], num: str, den: str) -> float:
    """Median over repeats of ``times[num][i] / times[den][i]``."""
    return statistics.median(a / b for a, b in zip(times[num], times[den], strict=True))


def median(values) -> float:
    return statistics.median(values)


def spread(values) -> str:
    """``median (min-max)`` in milliseconds, for printing."""
    values = list(values)
    return f"{1e3 * median(values):8.1f} ms ({1e3 * min(values):.1f}-{1e3 * max(values):.1f})"


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux >= 4.0); False where it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident set size of this process since start or the last ``reset_peak_rss``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def machine() -> str:
    import torch

    return (f"{platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), python {platform.python_version()}")


def banner(title: str) -> None:
    print(f"== {title} ==", flush=True)


def result_line(**values) -> str:
    """``RESULT name=value ...``: floats with 4 significant digits, the last line of a run."""
    parts = []
    for name, value in values.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, bool):
            value = str(value).lower()
        parts.append(f"{name}={value}")
    return "RESULT " + " ".join(parts)


def target(name: str, value: float | None, op: str, bound: float) -> bool | None:
    """Print ``TARGET name op bound: value MET|MISSED`` (``run_all.py`` collects these lines
    into the table) and return whether it is met; ``None`` (``n/a``) when not measured."""
    if value is None or value != value:
        print(f"TARGET {name} {op} {bound:g}: n/a", flush=True)
        return None
    ok = value <= bound if op == "<=" else value >= bound
    print(f"TARGET {name} {op} {bound:g}: {value:.4g} {'MET' if ok else 'MISSED'}", flush=True)
    return ok


def add_smoke_flag(parser) -> None:
    """The ``--smoke`` flag every script takes (the test suite runs each one so)."""
    parser.add_argument("--smoke", action="store_true",
                        help="smallest shapes and fewest repeats: runs every code path and "
                        "ends with its RESULT line; the figures mean nothing")


def add_threads_flag(parser) -> None:
    """The ``--threads`` flag of the scripts that time a model on the CPU (``set_threads``)."""
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (0: torch's default); on a machine other jobs "
                        "load, two threads spin-wait for each other and a step takes many "
                        "times longer, with a noise that swamps the ratio; 1 is how 0.1's "
                        "figures were measured")


def set_threads(threads: int) -> None:
    """``torch.set_num_threads(threads)``; 0 keeps torch's default."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def synthetic_release(folder: Path, smoke: bool) -> Path:
    """The synthetic release written to ``folder/synthetic``: 600 pairs, 60 in smoke mode."""
    from llavac.data.synthetic import write_synthetic_release

    return write_synthetic_release(folder / "synthetic", n=60 if smoke else 600, seed=0)


def random_llava(smoke: bool):
    """A random LLaVA of ``SMALL_SIZES`` (~13.8M parameters; the tiny defaults in smoke mode),
    its processor, and the words that name it (``SMALL_SIZES, 13.8M parameters``)."""
    from llavac.models import SMALL_SIZES, build_tiny

    model, processor = build_tiny("llava", seed=0, **({} if smoke else SMALL_SIZES))
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    return model, processor, f"{'tiny' if smoke else 'SMALL_SIZES'}, {millions:.1f}M parameters"


def skipped(reason: str) -> int:
    """Print why the benchmark cannot run here and its ``RESULT status=skipped`` line."""
    print(f"skipped: {reason}")
    print(result_line(status="skipped"), flush=True)
    return 0


class Clock:
    """``Clock(device)(fn)`` -> ``(seconds, fn())``: wall time, synchronised with the device
    before and after on a GPU, so the kernels ``fn`` queued are counted."""

    def __init__(self, device):
        self.device = device

    def sync(self):
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)

    def __call__(self, fn):
        self.sync()
        start = time.perf_counter()
        result = fn()
        self.sync()
        return time.perf_counter() - start, result


class Report:
    """A run's figures by name, kept as they come in a JSON file (``path``; rewritten on every
    ``put``, so a run stopped by its time limit still leaves what it measured)."""

    def __init__(self, path: Path | None):
        self.path, self.data = path, {}

    def put(self, key: str, value) -> None:
        self.data[key] = value
        if self.path:
            partial = self.path.with_suffix(".partial")
            partial.write_text(json.dumps(self.data, indent=1, default=str))
            partial.replace(self.path)
