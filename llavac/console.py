"""What a user sees: log levels, CPU threads, and progress that suits where output goes.

The library reports through the ``llavac`` logger and never prints; the command line calls
:func:`configure` once, so ``--quiet`` / ``--verbose`` mean the same for every command.
Progress is a tqdm bar on a terminal and a plain line every ``PLAIN_EVERY_S`` seconds in a
log file (no ``\\r``), because a redirected bar is one giant line nobody can read.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from tqdm import tqdm

PLAIN_EVERY_S = 30.0  # a log file gets one progress line this often, plus the last one


class _Stderr(logging.StreamHandler):
    """Plain messages to whatever ``sys.stderr`` is when a message is written (so output
    captured or redirected after import still gets them)."""

    def __init__(self):
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # logging.StreamHandler sets it; the property decides
        pass


# The library's progress reports, shown by default (a notebook sees them too); the command
# line's --quiet / --verbose move the level.
log = logging.getLogger("llavac")
log.addHandler(_Stderr())
log.setLevel(logging.INFO)
log.propagate = False


def default_threads() -> int:
    """All cores but one: the one left keeps data loading and the OS responsive."""
    return max(1, (os.cpu_count() or 2) - 1)


def configure(quiet: bool = False, verbose: bool = False, threads: int | None = None) -> None:
    """Set the ``llavac`` log level, the libraries' verbosity and torch's CPU threads."""
    log.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
    # Set before torch and transformers are imported (the command line imports them late,
    # so that a bad argument fails in a fraction of a second), and applied directly where a
    # caller already imported them.
    threads = threads or default_threads()
    os.environ["OMP_NUM_THREADS"] = str(threads)
    # transformers' own info and advice are for its developers; --verbose shows them.
    os.environ["TRANSFORMERS_VERBOSITY"] = "info" if verbose else "error"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # checkpoint-shard bars are noise here
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    if "transformers" in sys.modules:
        sys.modules["transformers"].logging.set_verbosity(logging.INFO if verbose
                                                          else logging.ERROR)


def is_main_process() -> bool:
    """Rank 0 of a torchrun / accelerate launch, or the only process."""
    return int(os.environ.get("RANK", "0")) == 0


def on_terminal() -> bool:
    """Whether stderr is a terminal, where a live progress bar can redraw itself."""
    return sys.stderr.isatty()


class Progress:
    """A tqdm bar on a terminal, periodic plain log lines elsewhere; silent when quiet."""

    def __init__(self, total: int | None, desc: str, unit: str = "pair", enabled: bool = True,
                 every: float = PLAIN_EVERY_S):
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.enabled = enabled and log.isEnabledFor(logging.INFO)
        self.bar = tqdm(total=total, desc=desc, unit=unit) if self.enabled and on_terminal() \
            else None
        self.n, self.start, self.last_line = 0, time.perf_counter(), 0.0
        self.note = ""

    def update(self, n: int = 1, note: str | None = None) -> None:
        """``n`` more done; ``note``: a few words shown after the rate (e.g. errors so far)."""
        self.n += n
        if note is not None:
            self.note = note
            if self.bar is not None:
                self.bar.set_postfix_str(note, refresh=False)
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and time.perf_counter() - self.last_line >= self.every:
            self._line()

    def _line(self) -> None:
        self.last_line = time.perf_counter()
        meter = tqdm.format_meter(self.n, self.total, self.last_line - self.start,
                                  prefix=self.desc, unit=self.unit, ncols=0,
                                  postfix=self.note or None)
        log.info(meter)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.n:
            self._line()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
