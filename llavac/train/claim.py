"""Which output folder a training run may start in, continue or replace.

One rule for the command line and the library (experiments, sweeps, the demo) alike. A folder
is one of:

- **new**: missing, or holding none of a run's files (``config.yaml``, ``checkpoints/``,
  ``manifest.json``): the run starts;
- **finished** (``manifest.json``): refused; ``--overwrite`` replaces it, ``--resume``
  leaves it as it is;
- **interrupted** (``config.yaml`` or ``checkpoints/``, no manifest): refused, naming both
  ``--resume`` (continue it) and ``--overwrite`` (start over).

``--overwrite`` removes the whole run folder before anything is written, so no checkpoint of
the old run can be resumed or rotated into the new one. ``--resume`` compares the settings
that decide the results (``runinfo.results_key``) with the run's ``config.yaml`` and refuses
any change, naming the key: a resumed run keeps its old schedule, data order and model, so a
new value would be recorded but not used. What may change on resume is what ``results_key``
leaves out: ``train.output``, ``progress``, ``num_workers``, ``logging_steps``,
``save_steps``, ``save_total_limit`` and ``report_to``. The checkpoint it continues from must
carry the run's config hash (``checkpoints.find_resume_point``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from llavac.args import TrainConfig
from llavac.config import to_dict
from llavac.console import is_main_process, log
from llavac.runs.folder import CHECKPOINTS_FOLDER, CONFIG_FILE, MANIFEST_FILE, RunFolder
from llavac.runs.info import results_key
from llavac.train.checkpoints import (
    checkpoint_folders,
    find_resume_point,
    is_complete,
    run_config_hash,
)

RUN_FILES = (MANIFEST_FILE, CONFIG_FILE, CHECKPOINTS_FOLDER)  # any of them: not a new folder


def prepare_output(config: TrainConfig, resume: bool, overwrite: bool) -> bool:
    """Claim ``config.train.output`` for this run; ``False`` when a resume finds the run
    finished (nothing left to do).

    Only the main process looks (and, with ``overwrite``, deletes): under ``torchrun`` the
    others would race it; a refusal there ends every rank.
    """
    output = Path(config.train.output)
    if not is_main_process():
        return not (resume and RunFolder(output).finished)
    if claim_run(output, config, resume, overwrite) == "finished":
        log.info(f"{output} has finished ({MANIFEST_FILE}): nothing to resume")
        return False
    return True


def record_start(config: TrainConfig) -> None:
    """``config.yaml`` into the run's folder once its data and model are loaded (so a run
    refused by them writes nothing): an interrupted run's folder names its config, which
    ``--resume`` compares with."""
    if is_main_process():
        RunFolder(config.train.output).write_config(config)


def claim_run(output: Path, config: TrainConfig, resume: bool, overwrite: bool) -> str:
    """``"new"``, ``"interrupted"`` or ``"finished"``: what ``output`` holds, once this run
    may go on there; a ``ValueError`` naming the way out when it may not."""
    if resume and overwrite:
        raise ValueError("give --resume (continue the run) or --overwrite (start over), "
                         "not both")
    if not any((output / name).exists() for name in RUN_FILES):
        return "new"
    state = "finished" if RunFolder(output).finished else "interrupted"
    if overwrite:
        shutil.rmtree(output)
        return "new"
    if not resume:
        if state == "finished":
            raise ValueError(f"{output} already holds a finished result ({MANIFEST_FILE}): choose "
                             "another output folder, or give --overwrite to replace it, or "
                             "--resume")
        raise ValueError(f"{output} holds an interrupted training run ({_progress(output)}): "
                         "give --resume to continue it, or --overwrite to start over")
    changed = changed_settings(output, config)
    if changed:
        raise ValueError(f"--resume: {'; '.join(changed)}: a resumed run keeps the settings "
                         "it started with; resume without the change, or give --overwrite "
                         "to start over")
    if state == "interrupted":
        find_resume_point(RunFolder(output).checkpoints, run_config_hash(config))
    return state


def _progress(output: Path) -> str:
    complete = [c for c in checkpoint_folders(RunFolder(output).checkpoints) if is_complete(c)]
    newest = f"its newest complete checkpoint is {complete[-1].name}" if complete else \
        "no complete checkpoint yet"
    return f"{newest}, no {MANIFEST_FILE}"


def changed_settings(output: Path, config: TrainConfig) -> list[str]:
    """``key is X here but Y in <config.yaml>`` for every setting that decides the results
    and differs from the run's saved config (read with today's defaults for keys added
    since it was written)."""
    run = RunFolder(output)
    saved_path = run.config_path
    if not run.has_config:
        return []  # checkpoints without a config: their markers' hashes decide
    saved = _flat(results_key(to_dict(run.typed_config(type(config)))))
    now = _flat(results_key(to_dict(config)))
    return [f"{key} is {now.get(key)!r} here but {saved.get(key)!r} in {saved_path}"
            for key in sorted(now.keys() | saved.keys()) if now.get(key) != saved.get(key)]


def _flat(config: dict) -> dict:
    """``{"section.key": value}`` of a nested config dict."""
    return {f"{section}.{key}": value for section, values in config.items()
            for key, value in values.items()}
