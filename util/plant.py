"""Several photos of one plant, one diagnosis: how the photos' probabilities are combined.

The service combines the photos its in-domain verdict accepts. bench/plant.py measures the ways
below on groups of validation photos of one class; docs/api.md records the numbers and why
``COMBINATION`` is the one served.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

# Far below any probability a softmax gives for a class it scores at all; keeps log(0) finite.
_FLOOR = 1e-12


def mean_probability(rows: Sequence[np.ndarray]) -> np.ndarray:
    """The average of the photos' probabilities (one confident photo can be outvoted)."""
    return np.mean(np.stack(rows).astype(np.float64), axis=0)


def mean_log_probability(rows: Sequence[np.ndarray]) -> np.ndarray:
    """The renormalised geometric mean: each photo can veto a label it rules out."""
    logs = np.log(np.maximum(np.stack(rows).astype(np.float64), _FLOOR)).mean(axis=0)
    combined = np.exp(logs - logs.max())
    return combined / combined.sum()


COMBINATIONS: dict[str, Callable[[Sequence[np.ndarray]], np.ndarray]] = {
    "mean_probability": mean_probability,
    "mean_log_probability": mean_log_probability,
}
COMBINATION = "mean_log_probability"  # chosen by bench/plant.py (docs/api.md, "One plant, several photos")


def combine(rows: Sequence[np.ndarray], method: str = COMBINATION) -> np.ndarray:
    """One probability vector from the probability vectors of several photos of one plant."""
    if not rows:
        raise ValueError("combine needs at least one photo's probabilities")
    return COMBINATIONS[method](rows)
