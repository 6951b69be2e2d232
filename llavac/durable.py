"""Files that a crash or a power loss cannot leave half-written.

A plain ``write_text`` truncates the file first and writes after, so a kill in between leaves
an empty or partial file where a whole one stood; and a rename is durable only once the
folder holding it is flushed. Here:

- ``write_atomic`` writes a temporary file beside the target, flushes it to disk, renames it
  over the target and flushes the folder: a reader sees the old file or the new one, never a
  mixture, and after a power loss too;
- ``fsync_tree`` flushes every file and folder under a folder that a library wrote (the
  Trainer's checkpoints, ``save_pretrained``), before a marker or a rename says it is whole.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def fsync_path(path: str | Path) -> None:
    """Flush one file or folder to disk (a folder's flush makes its renames durable)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_tree(folder: str | Path) -> None:
    """Flush every file under ``folder``, then every folder from the deepest up."""
    folders = []
    for root, _, files in os.walk(folder):
        folders.append(root)
        for name in files:
            fsync_path(os.path.join(root, name))
    for root in reversed(folders):
        fsync_path(root)


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Replace ``path`` with ``data`` (text as UTF-8) all at once: temporary file, flush,
    rename."""
    path = Path(path)
    handle = tempfile.NamedTemporaryFile("wb", dir=path.parent, prefix=f".{path.name}.",
                                         suffix=".tmp", delete=False)
    try:
        with handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    fsync_path(path.parent)
