"""What every output folder carries besides its results: the resolved config, the data
manifest and the library versions, so a result can be traced and repeated; and the
provenance fields every result (``metrics.json``, each row of ``results.csv``) names."""

from __future__ import annotations

import functools
import platform
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from llavac import __version__
from llavac.config import config_hash
from llavac.runs.folder import RunFolder, write_json

_LIBRARIES = ("llavac", "torch", "transformers", "peft", "accelerate", "tokenizers", "pillow",
              "scikit-learn", "numpy")
# The libraries whose versions decide a number in a result: named in every result row.
RESULT_LIBRARIES = ("torch", "transformers", "peft", "accelerate", "scikit-learn", "numpy")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    commit = git_commit()
    if commit:
        versions["llavac_git_commit"] = commit
    return versions


@functools.cache
def git_commit() -> str | None:
    """The commit of the checkout llavac runs from (``git rev-parse HEAD`` in the folder
    above the package, when that is a git work tree); None for an installed package."""
    root = Path(__file__).resolve().parents[2]  # llavac/runs/info.py -> the checkout
    if not (root / ".git").exists():  # a folder in a worktree has a .git file
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=True,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


# What changes how a training run goes but not its numbers: left out of the hash that
# decides whether a finished run is reused, so raising num_workers does not retrain a 7B model.
_NOT_RESULTS = ("output", "progress", "num_workers", "logging_steps", "save_steps",
                "save_total_limit", "report_to")


def results_key(train_config: dict) -> dict:
    """The part of a (saved or planned) training config that decides its results."""
    if "train" not in train_config:
        return train_config
    train_args = {k: v for k, v in train_config["train"].items() if k not in _NOT_RESULTS}
    return {**train_config, "train": train_args}


def results_hash(train_config: dict, evaluation: dict) -> str:
    """The hash of everything that decides a result: the training config's results key,
    the evaluation's settings and llavac's version (a release that changes results does not
    reuse old ones)."""
    return config_hash(results_key(train_config), evaluation, {"llavac": __version__})


def provenance_versions() -> dict[str, str | None]:
    """llavac's version (+ git commit from a checkout) and the result libraries'."""
    versions = library_versions()
    return {"llavac_version": __version__, "git_commit": git_commit(),
            **{f"{name}_version": versions[name] for name in RESULT_LIBRARIES}}


@contextmanager
def claimed_output(folder: str | Path, done_marker: str, overwrite: bool) -> Iterator[None]:
    """Make a result in ``folder`` inside the block, refusing one that holds finished work
    (``done_marker`` exists) unless ``overwrite``; never replace a result silently.

    With ``overwrite`` the earlier result is moved aside (``.<name>.replaced``) while the new
    one is made, deleted once the block succeeds and put back when it fails: a command
    refused for its input, or interrupted, leaves the earlier result as it was (a kill leaves
    it in the side folder).
    """
    folder = Path(folder)
    if not (folder / done_marker).exists():
        yield
        return
    if not overwrite:
        raise ValueError(f"{folder} already holds a finished result ({done_marker}): choose "
                         "another output folder, or give --overwrite to replace it")
    aside = folder.with_name(f".{folder.name}.replaced")
    shutil.rmtree(aside, ignore_errors=True)  # one a kill left: older than the result here
    folder.rename(aside)
    try:
        yield
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        aside.rename(folder)
        raise
    shutil.rmtree(aside)


def write_run_files(output: Path, config, manifest: dict) -> None:
    """``config.yaml``, ``versions.json`` and, last, ``manifest.json`` into ``output``: a
    folder with a manifest is complete."""
    folder = RunFolder(output)
    folder.write_config(config)
    write_json(library_versions(), folder.path / "versions.json")
    folder.write_manifest(manifest)
