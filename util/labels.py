"""What the model's scores mean: ranked labels, and each label split into species and condition.

Labels are display strings ``"<species>_<condition>"`` (``"Tomato_Late blight"``), one per model
output, read from labels.txt beside the model (util/model_dir.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy is imported where scores are handled: the label rules alone (util.conditions) need none
    import numpy as np

HEALTHY = "healthy"


@dataclass(frozen=True)
class Prediction:
    label: str
    confidence: float


def top_k(probabilities: np.ndarray, labels: Sequence[str], k: int) -> list[Prediction]:
    """Return the ``k`` most likely labels, most likely first."""
    import numpy as np

    k = max(1, min(k, len(labels)))
    order = np.argsort(probabilities)[::-1][:k]
    return [Prediction(labels[i], float(probabilities[i])) for i in order]


def split_label(label: str) -> tuple[str, str]:
    """Split a display label ``"<species>_<condition>"`` into its two parts."""
    species, _, condition = label.partition("_")
    return species, condition or "unknown"


def is_healthy(label: str) -> bool:
    return split_label(label)[1].lower() == HEALTHY


# --- crops: the plant part of each label, and a grower's hint of which one a photo shows ----------


class UnknownCrop(ValueError):
    """A crop hint that names none of the model's crops."""


def crop_of(label: str) -> str:
    """``"Bell pepper_healthy"`` -> ``"Bell pepper"``: the plant a label is about."""
    return split_label(label)[0]


def crops(labels: Sequence[str]) -> list[str]:
    """The model's crops, sorted: 'Apple', 'Bell pepper', ..."""
    return sorted({crop_of(label) for label in labels})


def labels_by_crop(labels: Sequence[str]) -> dict[str, list[str]]:
    """Each crop's labels in the model's output order, crops sorted."""
    grouped: dict[str, list[str]] = {crop: [] for crop in crops(labels)}
    for label in labels:
        grouped[crop_of(label)].append(label)
    return grouped


def _crop_key(name: str) -> str:
    # Growers type "bell pepper", "Bell_Pepper" or "BellPepper": case, spaces, '_' and '-' do not count.
    return "".join(ch for ch in name.casefold() if ch.isalnum())


def resolve_crop(name: str, labels: Sequence[str]) -> str:
    """The model's spelling of the crop ``name`` means; raises UnknownCrop when it means none of them."""
    wanted = _crop_key(name)
    for crop in crops(labels):
        if wanted and _crop_key(crop) == wanted:
            return crop
    raise UnknownCrop(name)


def crop_indices(labels: Sequence[str], crop: str) -> np.ndarray:
    """The outputs (label positions) of ``crop``, in the model's order."""
    import numpy as np

    return np.array([i for i, label in enumerate(labels) if crop_of(label) == crop], dtype=np.int64)


def restrict_to_crop(probabilities: np.ndarray, labels: Sequence[str], crop: str) -> tuple[np.ndarray, list[str]]:
    """``crop``'s probabilities renormalised to sum to 1, and its labels: the diagnosis among that crop only."""
    import numpy as np

    keep = crop_indices(labels, crop)
    kept = np.asarray(probabilities, np.float64)[keep]
    total = kept.sum()
    # A model that gives the crop no mass at all (underflow) still answers: every label of it alike.
    kept = kept / total if total > 0 else np.full(len(keep), 1.0 / len(keep))
    return kept, [labels[i] for i in keep]
