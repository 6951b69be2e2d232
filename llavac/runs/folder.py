"""The layout of the folders llavac writes, owned in one place.

A **run folder** (``llavac train``) holds ``config.yaml`` (the resolved config, the input
defaults filled in), ``adapter/`` (LoRA) or ``model/`` (a full fine-tune), ``processor/``,
``trained_on.json``, ``versions.json`` and, written last, ``manifest.json``: a folder with a
manifest is finished. ``llavac calibrate`` adds ``calibration.json``. An **exported folder**
(``llavac export``) holds the merged model, its processor and ``llavac.json``; a **bare peft
adapter** holds ``adapter_config.json`` and nothing of llavac's. Evaluations, experiments and
sweeps write their ``config.yaml`` through this type as well.

Every reader of these files goes through :class:`RunFolder`; nothing else names them.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import yaml

from llavac.config import load_config, renamed_keys, save_config
from llavac.durable import write_atomic

C = TypeVar("C")

CONFIG_FILE = "config.yaml"  # the resolved config of the command that wrote the folder
MANIFEST_FILE = "manifest.json"  # written last: a folder with it holds a finished result
CALIBRATION_FILE = "calibration.json"  # per-slot temperatures, written by llavac calibrate
TRAINED_ON_FILE = "trained_on.json"  # the records a run trained on (the leakage guard)
EXPORT_FILE = "llavac.json"  # marks a folder written by llavac export
PEFT_CONFIG_FILE = "adapter_config.json"  # peft's own file: a bare adapter folder
WEIGHT_FOLDERS = ("adapter", "model")  # LoRA, full fine-tune
PROCESSOR_FOLDER = "processor"
CHECKPOINTS_FOLDER = "checkpoints"
# A run from before 0.2 recorded neither input choice: it was trained on the processor's
# images with no system sentence, and is read back that way.
PRE_0_2_INPUTS = {"image_mode": "processor", "system": "none"}


def write_json(data, path: Path) -> None:
    """``data`` as indented JSON at ``path``, written whole or not at all: a manifest or a
    sidecar torn by a crash would make a folder look finished, or unreadable."""
    write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def recorded_inputs(config: dict) -> tuple[str, str]:
    """``(image_mode, system)`` a run was trained with, as its config (or an export's
    ``llavac.json``) records them."""
    model = config.get("model", {})
    return (model.get("image_mode") or PRE_0_2_INPUTS["image_mode"],
            model.get("system") or PRE_0_2_INPUTS["system"])


@dataclass(frozen=True)
class RunFolder:
    """One folder llavac wrote: a training run, an export, a bare peft adapter, or the output
    of an evaluation, experiment or sweep (those only carry a config and a manifest)."""

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    # -- what the folder is ------------------------------------------------------------

    @property
    def has_config(self) -> bool:
        """A training run (or another command's output): its ``config.yaml`` is there."""
        return (self.path / CONFIG_FILE).is_file()

    @property
    def is_export(self) -> bool:
        return (self.path / EXPORT_FILE).is_file()

    @property
    def is_bare_adapter(self) -> bool:
        return not self.has_config and (self.path / PEFT_CONFIG_FILE).is_file()

    @property
    def finished(self) -> bool:
        return (self.path / MANIFEST_FILE).is_file()

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS_FOLDER

    # -- the config ----------------------------------------------------------------------

    def config(self) -> dict:
        """The saved config as written, keys renamed since then under their new names (a 0.2
        run's ``train.method`` as ``train.tuning``, with a warning); ``{}`` when the folder
        has none."""
        if not self.has_config:
            return {}
        return renamed_keys(yaml.safe_load(self.config_path.read_text(encoding="utf-8")) or {})

    def typed_config(self, cls: type[C]) -> C:
        """The saved config as ``cls``, keys added since it was written at today's defaults."""
        return load_config(cls, self.config_path)

    def write_config(self, config) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        save_config(config, self.config_path)

    # -- weights and processor -----------------------------------------------------------

    def weights(self) -> Path:
        """``adapter/`` or ``model/`` of a run, or the folder itself for a bare adapter; a
        ``FileNotFoundError`` naming the folder for anything else."""
        if not self.path.exists():
            raise FileNotFoundError(f"--adapter {self.path}: no such folder")
        if self.is_bare_adapter:
            return self.path
        if not self.has_config:
            raise FileNotFoundError(
                f"--adapter {self.path}: neither a training run folder ({CONFIG_FILE}) nor a "
                f"peft adapter ({PEFT_CONFIG_FILE})")
        for name in WEIGHT_FOLDERS:
            if (self.path / name).exists():
                return self.path / name
        raise FileNotFoundError(f"--adapter {self.path}: a run folder without adapter/ or "
                                "model/ (its training has not finished)")

    def weight_folder(self, name: str) -> Path:
        """Where training saves its weights: ``adapter/`` (LoRA) or ``model/`` (full)."""
        if name not in WEIGHT_FOLDERS:
            raise ValueError(f"no weight folder {name!r}: one of {WEIGHT_FOLDERS}")
        return self.path / name

    @property
    def processor(self) -> Path:
        """The processor a run saved (it may differ from the base model's)."""
        return self.path / PROCESSOR_FOLDER

    def peft_base_model(self) -> str | None:
        """The base model a bare adapter's ``adapter_config.json`` names, if any."""
        peft_config = json.loads((self.path / PEFT_CONFIG_FILE).read_text(encoding="utf-8"))
        return peft_config.get("base_model_name_or_path")

    # -- what the run wrote beside its weights -------------------------------------------

    def manifest(self) -> dict:
        """``manifest.json``; ``{}`` for a folder without one (zero-shot, a bare adapter)."""
        return self._json(MANIFEST_FILE) or {}

    def write_manifest(self, manifest: dict) -> None:
        write_json(manifest, self.path / MANIFEST_FILE)

    def temperatures(self) -> dict[str, float] | None:
        """The per-slot temperatures of ``calibration.json``; None when there is none."""
        calibration = self._json(CALIBRATION_FILE)
        if calibration is None:
            return None
        temperatures = calibration.get("temperatures")
        if not isinstance(temperatures, dict) or not all(
                isinstance(t, int | float) and t > 0 for t in temperatures.values()):
            raise ValueError(f"{self.path / CALIBRATION_FILE}: 'temperatures' must map slots "
                             "to positive numbers")
        return {slot: float(t) for slot, t in temperatures.items()}

    def write_calibration(self, calibration: dict) -> Path:
        write_json(calibration, self.path / CALIBRATION_FILE)
        return self.path / CALIBRATION_FILE

    def copy_calibration(self, into: RunFolder) -> None:
        """Copy ``calibration.json``, as it is, into ``into`` (an export) when there is one."""
        if (self.path / CALIBRATION_FILE).is_file():
            shutil.copy2(self.path / CALIBRATION_FILE, into.path / CALIBRATION_FILE)

    def trained_on(self) -> dict | None:
        """``trained_on.json`` of a training run; None for a zero-shot model or a bare peft
        adapter (nothing says what it trained on). An unfinished run is an error: its
        adapter may be half-written."""
        if not self.has_config:
            return None
        if not self.finished:
            raise ValueError(f"--adapter {self.path}: training has not finished (no "
                             f"{MANIFEST_FILE}); continue it with llavac train ... --resume")
        return self._json(TRAINED_ON_FILE)

    def write_trained_on(self, trained_on: dict) -> None:
        write_json(trained_on, self.path / TRAINED_ON_FILE)

    def export_facts(self) -> dict | None:
        """``llavac.json`` of an exported folder, or None for anything else."""
        return self._json(EXPORT_FILE)

    def write_export_facts(self, facts: dict) -> None:
        write_json(facts, self.path / EXPORT_FILE)

    def _json(self, name: str) -> dict | None:
        path = self.path / name
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
