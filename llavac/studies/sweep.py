"""Hyperparameter sweeps: an Optuna study over training settings, scored on validation.

    llavac sweep --config tiny_synthetic --data runs/synthetic --trials 20 --output runs/sweep
    llavac sweep --model tiny-llava --data SPLIT --trials 30 --output O train.max_steps=15

LLaVAC (arXiv 2502.02938) leaves its hyperparameters untuned. Each trial samples the search
space (``llavac/configs/sweep_space.yaml`` or ``sweep.space=FILE``) on top of the training
config the flags and overrides give, trains it into ``<output>/trials/trial-<n>/train`` and
predicts the validation part into ``.../eval``; its value is the multimodal label's
validation accuracy (``sweep.metric``: any score of ``metrics.METRICS`` a resample
recomputes, such as weighted_f1 or macro_f1). The test part is never read.

TPE samples the settings; a median pruner stops a trial whose training loss is worse than
the median of earlier trials at the same step (reported as ``-loss``, since the study
maximises). The study lives in ``<output>/study.db``; calling the command again with
``--resume`` and a larger ``--trials`` continues it, and a rerun with other settings is
refused, naming the first that differs (``--overwrite`` replaces the study).
``--storage postgresql://...`` (or ``mysql://``) puts it in a shared database instead, so
several machines running the same command work on one study (Optuna's own way to
distribute; ``--trials`` is then the total over all of them). Every call rewrites
``trials.csv``, ``best.yaml`` (the best trial's full training config, for
``llavac train --config``) and ``history.png`` (Optuna's optimisation-history plot).
"""

from __future__ import annotations

import dataclasses
import shutil
import warnings
from pathlib import Path

import optuna
import yaml
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState
from transformers import TrainerCallback

from llavac.args import ClassifierArgs, EvalArgs, EvalConfig, SweepConfig, TrainConfig
from llavac.config import (
    PRESETS,
    apply_overrides,
    config_keys,
    from_dict,
    save_config,
    to_dict,
)
from llavac.data import load_data
from llavac.evaluation import evaluate
from llavac.evaluation.metrics import sweep_metric
from llavac.runs.folder import RunFolder
from llavac.runs.info import results_key
from llavac.runs.leakage import fingerprint
from llavac.train import train

SPACE_FILE = PRESETS / "sweep_space.yaml"
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def run_sweep(config: SweepConfig) -> optuna.Study:
    """Run trials until the study holds ``sweep.trials`` finished ones; write the reports."""
    args = config.sweep
    output = Path(args.output)
    space = load_space(args.space)
    sweep_metric(args.metric)
    _require_validation(config)
    if claim_study(config):  # --overwrite: the study is replaced, once the above held
        shutil.rmtree(output)
        if args.storage:
            _delete_study(args.study, args.storage)
    RunFolder(output).write_config(config)
    study = optuna.create_study(
        study_name=args.study,
        storage=args.storage or f"sqlite:///{(output / 'study.db').resolve()}",
        load_if_exists=True,  # a second call continues the study
        direction="maximize",
        pruner=optuna.pruners.MedianPruner(n_startup_trials=args.startup_trials)
        if args.pruning else optuna.pruners.NopPruner(),
    )
    done = len(study.get_trials(deepcopy=False, states=_FINISHED))
    # Seeded by the trials already there: a continued study draws new settings instead of
    # repeating the first call's (TPE samples its first trials at random).
    study.sampler = optuna.samplers.TPESampler(seed=args.seed + len(study.trials))
    if done < args.trials:
        # MaxTrialsCallback counts the trials of every machine sharing the storage.
        study.optimize(lambda trial: objective(trial, config, space), n_trials=args.trials - done,
                       callbacks=[MaxTrialsCallback(args.trials, states=_FINISHED)])
    write_reports(study, output)
    return study


def claim_study(config: SweepConfig) -> bool:
    """Whether an existing study in ``sweep.output`` is to be replaced (``sweep.overwrite``).

    Without ``--overwrite``, a study made with other settings is refused, naming the first
    setting that differs, so its trials never mix with trials of another search (another
    procedure: another validation set); a study with the same settings continues only with
    ``--resume``. ``sweep.trials`` may grow: it is how many trials the study holds in all.
    """
    output = Path(config.sweep.output)
    folder = RunFolder(output)
    if not folder.has_config:
        return False
    if config.sweep.overwrite:
        return True
    old = _settings(folder.typed_config(SweepConfig))
    for key, value in _settings(config).items():
        if old.get(key) != value:
            raise ValueError(f"{output} holds a study with other settings: {key} is {value!r} "
                             f"here but {old.get(key)!r} in {folder.config_path}; choose "
                             "another --output, or give --overwrite to replace the study")
    if not config.sweep.resume:
        raise ValueError(f"{output} already holds this study: give --resume to continue it "
                         "(up to --trials in all), or --overwrite to replace it")
    return False


def _settings(config: SweepConfig) -> dict:
    """``section.key -> value`` of what decides a study's trials (not how many there are)."""
    settings = results_key(to_dict(config))
    settings["sweep"] = {k: v for k, v in settings["sweep"].items() if k != "trials"}
    return {f"{section}.{key}": value for section, values in settings.items()
            for key, value in values.items()}


def _delete_study(name: str, storage: str) -> None:
    try:
        optuna.delete_study(study_name=name, storage=storage)
    except KeyError:  # not in that storage yet
        pass


def load_space(path: str | Path | None) -> dict[str, dict]:
    """The search space: ``{config key: distribution}``, each checked, errors naming the file."""
    path = Path(path) if path else SPACE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such search-space file")
    space = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(space, dict) or not space:
        raise ValueError(f"{path}: expected a mapping of config keys to distributions")
    known = {key for key, _ in config_keys(TrainConfig)}
    for key, spec in space.items():
        if key not in known or key == "train.output":
            raise ValueError(f"{path}: {key!r} is not a training config key to search")
        kind = spec.get("type") if isinstance(spec, dict) else None
        needs = {"float": ("low", "high"), "int": ("low", "high"), "categorical": ("choices",)}
        if kind not in needs or any(k not in spec for k in needs[kind]):
            raise ValueError(f"{path}: {key}: expected {{type: float|int, low, high}} or "
                             f"{{type: categorical, choices}}, got {spec!r}")
    return space


def sample(trial: optuna.Trial, space: dict[str, dict]) -> dict:
    """One value per key of the space, through the trial (TPE decides)."""
    values = {}
    for key, spec in space.items():
        if spec["type"] == "categorical":
            values[key] = trial.suggest_categorical(key, spec["choices"])
        elif spec["type"] == "int":
            values[key] = trial.suggest_int(key, int(spec["low"]), int(spec["high"]),
                                            log=spec.get("log", False))
        else:
            values[key] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]),
                                              log=spec.get("log", False))
    return values


def trial_config(config: SweepConfig, values: dict, folder: Path) -> TrainConfig:
    """The sweep's training config with the trial's values, training into ``folder``."""
    base = TrainConfig(model=config.model, data=config.data, lora=config.lora,
                       train=dataclasses.replace(config.train, output=str(folder)))
    return apply_overrides(base, [f"{key}={value}" for key, value in values.items()])


def objective(trial: optuna.Trial, config: SweepConfig, space: dict) -> float:
    """Train the trial's config, predict validation, return the multimodal metric."""
    folder = Path(config.sweep.output) / "trials" / f"trial-{trial.number}"
    train_config = trial_config(config, sample(trial, space), folder / "train")
    trial.set_user_attr("run", str(folder))
    # The whole config, so best.yaml can be written on any machine sharing the storage.
    trial.set_user_attr("config", to_dict(train_config))
    callbacks = [PruneOnLoss(trial)] if config.sweep.pruning else []
    train(train_config, callbacks=callbacks)
    metrics = evaluate(EvalConfig(
        model=ClassifierArgs(adapter=str(folder / "train")), data=config.data,
        eval=EvalArgs(output=str(folder / "eval"), part="validation",
                      method=config.sweep.method, batch_size=config.sweep.batch_size,
                      progress=config.train.progress,
                      reliance_pairs=0),  # 2 more scoring passes a pair, read by no trial
    ))
    return sweep_metric(config.sweep.metric).read(metrics)


class PruneOnLoss(TrainerCallback):
    """Reports ``-loss`` at every logged step; stops the trial when the pruner says so."""

    def __init__(self, trial: optuna.Trial):
        self.trial = trial

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.trial.report(-float(logs["loss"]), state.global_step)
            if self.trial.should_prune():
                raise optuna.TrialPruned(f"training loss {logs['loss']:.4f} at step "
                                         f"{state.global_step} is worse than the median")


def _require_validation(config: SweepConfig) -> None:
    """Fail before the first trial when there is nothing to score trials on."""
    split = load_data(config.data)
    if not split.validation:
        raise ValueError(f"{config.data.path}: the sweep scores trials on the validation part, "
                         "which is empty here: give data with a validation part "
                         "(a procedure other than none, or an exported split with one)")
    # The leakage guard before the first trial (each trial's evaluation checks it again):
    # a validation record that is also a training record scores memory.
    trained = {fingerprint(record) for record in split.train}
    overlap = sum(fingerprint(record) in trained for record in split.validation)
    if overlap:
        raise ValueError(f"{config.data.path}: {overlap} of the {len(split.validation)} "
                         "validation records are in the train part too: trials scored on them "
                         "would measure memory, not generalisation")


def write_reports(study: optuna.Study, output: Path) -> None:
    """``trials.csv``, and with a complete trial ``best.yaml`` and ``history.png``."""
    table = study.trials_dataframe()
    table.drop(columns=["user_attrs_config"], errors="ignore").to_csv(output / "trials.csv",
                                                                       index=False)
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return
    best = from_dict(TrainConfig, study.best_trial.user_attrs["config"])
    best = dataclasses.replace(best, train=dataclasses.replace(best.train,
                                                               output=str(output / "best")))
    save_config(best, output / "best.yaml")
    import matplotlib

    matplotlib.use("Agg")  # files only; the plotly backend of optuna.visualization is optional
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():  # the matplotlib backend is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        axes = optuna.visualization.matplotlib.plot_optimization_history(study)
    axes.figure.tight_layout()
    axes.figure.savefig(output / "history.png", dpi=120)
    plt.close(axes.figure)
