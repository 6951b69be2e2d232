"""What every output folder carries besides its results: the resolved config, the data
manifest and the library versions, so a result can be traced and repeated."""

from __future__ import annotations

import json
import platform
import shutil
from importlib import metadata
from pathlib import Path

from llavac.config import save_config

_LIBRARIES = ("llavac", "torch", "transformers", "peft", "accelerate", "tokenizers", "pillow")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def write_json(data, path: Path) -> None:
    Path(path).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def claim_output(folder: str | Path, done_marker: str, overwrite: bool,
                 resume: bool | None = None) -> None:
    """Refuse a folder that holds finished work (``done_marker`` exists) unless ``overwrite``
    (which empties it) or ``resume`` (``None``: the command cannot resume); never replace a
    result silently."""
    folder = Path(folder)
    if resume or not (folder / done_marker).exists():
        return
    if not overwrite:
        options = "--overwrite to replace it" + (", or --resume" if resume is not None else "")
        raise ValueError(f"{folder} already holds a finished result ({done_marker}): choose "
                         f"another output folder, or give {options}")
    shutil.rmtree(folder)


def write_run_files(output: Path, config, manifest: dict) -> None:
    """``config.yaml``, ``versions.json`` and, last, ``manifest.json`` into ``output``: a
    folder with a manifest is complete."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    save_config(config, output / "config.yaml")
    write_json(library_versions(), output / "versions.json")
    write_json(manifest, output / "manifest.json")
