"""What the model's scores mean: ranked labels, and each label split into species and condition.

Labels are display strings ``"<species>_<condition>"`` (``"Tomato_Late blight"``), one per model
output, read from labels.txt beside the model (util/model.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

HEALTHY = "healthy"


@dataclass(frozen=True)
class Prediction:
    label: str
    confidence: float


def top_k(probabilities: np.ndarray, labels: Sequence[str], k: int) -> list[Prediction]:
    """Return the ``k`` most likely labels, most likely first."""
    k = max(1, min(k, len(labels)))
    order = np.argsort(probabilities)[::-1][:k]
    return [Prediction(labels[i], float(probabilities[i])) for i in order]


def split_label(label: str) -> tuple[str, str]:
    """Split a display label ``"<species>_<condition>"`` into its two parts."""
    species, _, condition = label.partition("_")
    return species, condition or "unknown"


def is_healthy(label: str) -> bool:
    return split_label(label)[1].lower() == HEALTHY
