"""Temperature scaling of a trained run: one temperature per slot, fitted on validation data.

    llavac calibrate RUN --data D [--procedure P]

Fine-tuned language models are over-confident (Guo et al. 2017, "On Calibration of Modern
Neural Networks"). Dividing the log-probabilities of a slot by one scalar T, fitted to
minimise the negative log-likelihood of the validation part, is the standard fix; it never
changes the most likely label, so accuracy and F1 stay as they were. The result goes into
``RUN/calibration.json``::

    {"temperatures": {slot: T}, "fitted_on": {"data", "procedure", "fold", "part", "n"},
     "nll_before": {slot: ...}, "nll_after": {slot: ...}}

and ``Classifier.from_pretrained(RUN)`` applies it from then on (predict, evaluate, serve).
The fit always starts from the raw probabilities, so calibrating twice gives the same file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from llavac.args import CalibrateConfig
from llavac.console import log
from llavac.data import load_data
from llavac.evaluation.calibration import (
    TEMPERATURE_RANGE,
    apply_temperature,
    fit_temperature_from_probs,
    negative_log_likelihood,
)
from llavac.evaluation.report import gold_labels, label_indices, slot_probabilities
from llavac.predict import Classifier
from llavac.runs.folder import CALIBRATION_FILE, MANIFEST_FILE, RunFolder
from llavac.runs.leakage import check_overlap


def fit_slot(probs, gold) -> tuple[float, float, float]:
    """``(T, nll_before, nll_after)`` for one slot's raw probabilities and gold indices.

    T = 1 (no change) when the search cannot beat the raw NLL, so calibrating never makes
    the validation NLL worse, not even by the search's tolerance.
    """
    before = negative_log_likelihood(probs, gold)
    temperature = fit_temperature_from_probs(probs, gold)
    after = negative_log_likelihood(apply_temperature(probs, temperature), gold)
    if after > before:
        return 1.0, before, before
    return temperature, before, after


def calibrate(config: CalibrateConfig, classifier: Classifier | None = None) -> dict:
    """Fit the temperatures, write ``<run>/calibration.json`` and return what it holds.

    ``classifier``: the run already loaded *without* calibration (``calibrated=False``).
    """
    split = load_data(config.data)
    if not split.validation:
        raise ValueError(
            f"{config.data.path}: the split (procedure {split.manifest.get('procedure')}) has "
            "no validation part; temperatures are fitted on held-out validation data, so "
            "use a procedure with one (qmf, clmlf, random811, cheema10)")
    run = _claim_run(config)
    # Temperatures fitted on records the run trained on would fit its memory, not new data.
    check_overlap(run, split.validation, "validation", allow=False, key=None)
    if classifier is None:
        classifier = Classifier.from_args(dataclasses.replace(config.model, calibrated=False))
    records = split.validation
    predictions = classifier.predict(records, "score", config.calibrate.batch_size,
                                     config.calibrate.progress)
    result = {"temperatures": {}, "fitted_on": {
        "data": config.data.path, "procedure": split.manifest.get("procedure"),
        "fold": split.manifest.get("fold"), "part": "validation", "n": len(records)},
        "nll_before": {}, "nll_after": {}}
    for slot, labels in gold_labels(records, classifier.fmt.slots).items():
        keep = [i for i, label in enumerate(labels) if label is not None]
        probs = slot_probabilities(predictions, slot, keep)
        temperature, before, after = fit_slot(probs, label_indices([labels[i] for i in keep]))
        result["temperatures"][slot] = temperature
        result["nll_before"][slot], result["nll_after"][slot] = before, after
        if at_search_bound(temperature):
            log.warning(f"calibrate: the {slot} temperature T = {temperature:.4g} sits at the "
                        f"bound of its search ({TEMPERATURE_RANGE[0]:g}..{TEMPERATURE_RANGE[1]:g}"
                        "): the validation answers push it further (all right: T -> 0; near "
                        "chance: T -> large), so the probabilities stay poorly calibrated")
    RunFolder(run).write_calibration(result)
    return result


def _claim_run(config: CalibrateConfig) -> Path:
    """The finished training run that calibration.json goes into; refused when it is not
    one, or already holds a calibration and ``calibrate.overwrite`` is not set."""
    run = Path(config.model.adapter) if config.model.adapter else None
    folder = RunFolder(run) if run is not None else None
    if folder is None or not folder.has_config:
        raise FileNotFoundError(f"RUN {run}: name a training run folder to calibrate "
                                "(a folder llavac train wrote)")
    if not folder.finished:
        raise ValueError(f"RUN {run}: training has not finished (no {MANIFEST_FILE}); continue "
                         "it with llavac train ... --resume, then calibrate")
    if (run / CALIBRATION_FILE).is_file() and not config.calibrate.overwrite:
        raise ValueError(f"{run / CALIBRATION_FILE} exists: give --overwrite to fit it again")
    return run


def at_search_bound(temperature: float) -> bool:
    """Whether a fitted T is at the end of its search range (1 % tolerance)."""
    low, high = TEMPERATURE_RANGE
    return temperature <= low * 1.01 or temperature >= high / 1.01
