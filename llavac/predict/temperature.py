"""Temperature scaling applied to scored probabilities (Guo et al. 2017, "On Calibration of
Modern Neural Networks"): what prediction needs of calibration. Fitting the temperature is
evaluation's business (:mod:`llavac.evaluation.calibration`), which builds on this module.

llavac's ``score`` method returns probabilities normalised over the candidate labels; their
logs are valid logits (``softmax(log p) = p``), so the temperature applies to them directly.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import softmax

# Probabilities are clipped here before a log: a 0 from float underflow would make NLL infinite
# and swamp the mean over every other example.
EPS = 1e-12


def log_probs(probs: ArrayLike) -> np.ndarray:
    """``log(probs)``, clipped below at ``EPS``."""
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), EPS, 1.0))


def apply_temperature(probs: ArrayLike, temperature: float) -> np.ndarray:
    """``softmax(log(probs) / T)`` row-wise: T > 1 softens, T < 1 sharpens, T = 1 is identity
    (up to the ``EPS`` clip of zeros). The argmax never changes."""
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive number, got {temperature}")
    return softmax(log_probs(probs) / temperature, axis=1)
