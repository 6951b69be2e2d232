"""What every output folder carries besides its results: the resolved config, the data
manifest and the library versions, so a result can be traced and repeated."""

from __future__ import annotations

import json
import platform
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


def write_run_files(output: Path, config, manifest: dict) -> None:
    """``config.yaml``, ``versions.json`` and, last, ``manifest.json`` into ``output``: a
    folder with a manifest is complete."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    save_config(config, output / "config.yaml")
    write_json(library_versions(), output / "versions.json")
    write_json(manifest, output / "manifest.json")
