"""Is this photo one the model knows? An in-domain score and the calibrated threshold it is judged by.

The raw score combines two signals the engine returns for every image (util/engine.Outputs):

* the Mahalanobis distance of the pooled features to the nearest class mean, under one shared
  covariance fitted on the training images (Lee et al. 2018): far from every known leaf -> unknown;
* the energy of the logits, ``logsumexp(logits)`` (Liu et al. 2020): low -> unknown.

Each is standardised on the training images; the score is the energy term minus the distance term
times a per-model weight (chosen at calibration, training/ood.py: on some models the distance
term separates unknown photos, on others it only adds noise). The answer's ``score`` is
that raw score ranked among held-out known leaves: the share of validation leaves that looked
*less* typical (0: stranger than all of them; 0.5: a typical known leaf). A photo is judged
known when its score reaches the threshold, chosen at training time (or by
``python -m training.calibrate MODEL_DIR``) to accept a target share of known leaves, and the model's top
probability reaches a floor. Photos that look like the lab photos (a linear probe on the same features,
``DomainStatistics.looks_lab``) have their own, lower floor: the model is right on 97% of them, and the
floor is there for field photos, where an unsure answer is often wrong.

The fitted statistics live in the model directory (util/model_dir.py names the file); the threshold
and method in ``model.json``. A model without them still serves, with the verdict unavailable.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from util.model_dir import SEPARATELY_CALIBRATED, Artifact, domain_calibration

METHOD = "mahalanobis+energy"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    """The in-domain verdict of one image; ``known`` is None when the model has no calibration."""

    available: bool
    known: bool | None
    score: float | None
    threshold: float | None
    method: str | None


UNAVAILABLE = Verdict(available=False, known=None, score=None, threshold=None, method=None)


@dataclass(frozen=True)
class DomainStatistics:
    """What scoring needs: whitened class means, the whitening matrix, standardisers, the reference ranks."""

    whitening: np.ndarray  # D x D: features @ whitening has identity shared within-class covariance
    class_means: np.ndarray  # K x D, already whitened
    distance_mean: float  # standardisers of the two signals, measured on training images
    distance_std: float
    energy_mean: float
    energy_std: float
    reference: np.ndarray  # sorted raw scores of held-out known leaves (for the percentile score)
    distance_weight: float = 1.0  # the distance term's weight (files written before it was calibrated: 1)
    # A linear probe on the pooled features, weights then bias (D + 1), positive where a photo looks like the
    # lab photos (one leaf on a plain background) rather than a field photo; None in files written before it.
    lab_style: np.ndarray | None = None

    def signals(self, logits: np.ndarray, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(distance to the nearest class mean, energy of the logits), one value each per row."""
        # float32 throughout: a float64 product would copy the 2048 x 2048 whitening matrix on every call
        z = features.astype(self.whitening.dtype, copy=False) @ self.whitening
        means = self.class_means
        squared = (z**2).sum(1)[:, None] - 2 * z @ means.T + (means**2).sum(1)[None, :]
        top = logits.max(axis=1, keepdims=True)
        energy = (top + np.log(np.exp(logits - top).sum(axis=1, keepdims=True)))[:, 0]
        return np.sqrt(np.maximum(squared.min(axis=1), 0.0)), energy

    def raw_scores(self, logits: np.ndarray, features: np.ndarray) -> np.ndarray:
        """Higher means more like the training leaves; one value per row."""
        distance, energy = self.signals(logits, features)
        distance_z = (distance - self.distance_mean) / self.distance_std
        return (energy - self.energy_mean) / self.energy_std - self.distance_weight * distance_z

    def scores(self, logits: np.ndarray, features: np.ndarray) -> np.ndarray:
        """The share of held-out known leaves whose raw score is lower: 0..1, higher is more in-domain."""
        raw = self.raw_scores(logits, features)
        return np.searchsorted(self.reference, raw, side="left") / len(self.reference)

    def looks_lab(self, features: np.ndarray) -> np.ndarray:
        """Per row: does the photo look like the lab photos? All False without the probe."""
        if self.lab_style is None:
            return np.zeros(len(features), bool)
        weights = self.lab_style[:-1].astype(np.float32, copy=False)
        return features.astype(np.float32, copy=False) @ weights + self.lab_style[-1] > 0

    def save(self, path: Path) -> None:
        """Store as float32 (half the size of float64; scores agree to well under one reference rank)."""
        names = [name for name in self.__dataclass_fields__ if getattr(self, name) is not None]
        arrays = {name: np.asarray(getattr(self, name), np.float32) for name in names}
        with Path(path).open("wb") as stream:  # a file object: np.savez would append .npz to a bare path
            np.savez(stream, **arrays)

    @classmethod
    def load(cls, path: Path) -> DomainStatistics:
        scalars = ("distance_mean", "distance_std", "energy_mean", "energy_std", "distance_weight")
        with np.load(path) as stored:  # files written before the weight was calibrated lack it: default 1
            values = {name: stored[name] for name in cls.__dataclass_fields__ if name in stored}
        return cls(**{name: float(value) if name in scalars else value for name, value in values.items()})


@dataclass(frozen=True)
class HintPoint:
    """The operating point for a photo sent with a crop hint (model.json ``in_domain.crop_hint``): the score
    threshold, the floor on the top probability over all labels, and a floor on the top probability among
    the hinted crop's labels, which says more about the answer shown. Chosen by training/crop_hint.py (the
    finishing, or ``python -m training.calibrate --field``) for the most field photos right within the same
    harm limit as the plain point and the hinted unknown-photo rejection targets (training/ood.py)."""

    threshold: float
    probability_floor: float
    crop_probability_floor: float

    @classmethod
    def from_calibration(cls, calibration: dict) -> HintPoint | None:
        hint = calibration.get("crop_hint")
        if not isinstance(hint, dict):
            return None
        return cls(float(hint["threshold"]), float(hint["probability_floor"]), float(hint["crop_probability_floor"]))


class DomainCheck:
    """Judge engine outputs against a model directory's calibration (or say it is unavailable)."""

    def __init__(
        self,
        statistics: DomainStatistics | None,
        threshold: float | None,
        probability_floor: float = 0.0,
        hint_point: HintPoint | None = None,
        lab_style_floor: float | None = None,
    ):
        self.statistics = statistics
        self.threshold = threshold
        # The model's top probability must reach it too: a typical-looking photo the model is unsure of is one it
        # is often wrong about (field photos). Calibrated with the threshold; 0 in files written before it.
        self.probability_floor = probability_floor
        # The floor for photos that look like the lab photos (DomainStatistics.looks_lab): the model is right on
        # 97% of those, so a lower floor turns fewer of them away at no cost in field photos (training/ood.py).
        # None: one floor for every photo (files written before it).
        self.lab_style_floor = lab_style_floor
        self.hint_point = hint_point  # None: a crop hint does not change the verdict

    @classmethod
    def for_artifact(cls, artifact: Artifact, precision: str = "f32") -> DomainCheck:
        """The calibration for an engine of ``precision``; an int8 engine without its own falls back to
        the f32 one (usable, but it rejects more known leaves: logged)."""
        check = cls._load(artifact, *domain_calibration(precision))
        if check.available or precision not in SEPARATELY_CALIBRATED:
            return check
        fallback = cls._load(artifact, *domain_calibration("f32"))
        if fallback.available:
            log.warning(
                "the in-domain verdict is calibrated on f32 outputs only; for %s run "
                "PLANTNET_PRECISION=%s python -m training.calibrate %s",
                precision,
                precision,
                artifact.directory,
            )
        return fallback

    @classmethod
    def _load(cls, artifact: Artifact, filename: str, key: str) -> DomainCheck:
        calibration = artifact.metadata.get(key) or {}
        path = artifact.directory / filename
        if calibration.get("method") != METHOD or "threshold" not in calibration or not path.exists():
            return cls(None, None)
        floor = float(calibration.get("probability_floor", 0.0))
        point = HintPoint.from_calibration(calibration)
        lab_style = calibration.get("lab_style")
        lab_floor = float(lab_style["probability_floor"]) if isinstance(lab_style, dict) else None
        return cls(DomainStatistics.load(path), float(calibration["threshold"]), floor, point, lab_floor)

    @property
    def available(self) -> bool:
        return self.statistics is not None

    def judge(self, logits: np.ndarray, features: np.ndarray) -> list[Verdict]:
        """One verdict per row of ``logits`` / ``features``."""
        if self.statistics is None or self.threshold is None:
            return [UNAVAILABLE] * len(logits)
        scores = self.statistics.scores(logits, features)
        sure = top_probability(logits) >= self.floors(features)
        return [
            Verdict(True, bool(s >= self.threshold and ok), float(s), self.threshold, METHOD)
            for s, ok in zip(scores, sure, strict=True)
        ]

    def with_hint(self, verdict: Verdict, probabilities: np.ndarray, crop_probabilities: np.ndarray) -> Verdict:
        """``verdict`` judged again for a photo sent with a crop hint (``crop_probabilities``: that crop's,
        renormalised as the answer shows them, util.labels.restrict_to_crop): by the hint's operating point
        where the model has one, else unchanged. The score is the same."""
        point = self.hint_point
        if point is None or not verdict.available or verdict.score is None:
            return verdict
        sure = probabilities.max() >= point.probability_floor
        sure_within = crop_probabilities.max() >= point.crop_probability_floor
        known = bool(verdict.score >= point.threshold and sure and sure_within)
        return Verdict(True, known, verdict.score, point.threshold, METHOD)

    def verdict_scores(self, logits: np.ndarray, features: np.ndarray) -> np.ndarray:
        """In-domain scores with photos under the probability floor set to -1: judged against the threshold
        alone, they give the same verdicts as ``judge`` (for reports and plots)."""
        assert self.statistics is not None
        return with_floor(self.statistics.scores(logits, features), logits, self.floors(features))

    def floors(self, features: np.ndarray) -> np.ndarray:
        """The floor on the top probability for each row: the lab-style one where the photo looks like a lab photo."""
        if self.lab_style_floor is None or self.statistics is None:
            return np.full(len(features), self.probability_floor)
        return floors_for(self.statistics.looks_lab(features), self.probability_floor, self.lab_style_floor)


def floors_for(looks_lab: np.ndarray, floor: float, lab_style_floor: float) -> np.ndarray:
    """Per row, the floor on the top probability: ``lab_style_floor`` where the photo looks like a lab photo."""
    return np.where(looks_lab, lab_style_floor, floor)


def top_probability(logits: np.ndarray) -> np.ndarray:
    """The softmax's largest value per row, from the logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    return 1.0 / np.exp(shifted).sum(axis=1)


def with_floor(scores: np.ndarray, logits: np.ndarray, floor: float | np.ndarray) -> np.ndarray:
    """``scores`` with the rows whose top probability is under ``floor`` (one, or one per row) set to -1."""
    return np.where(top_probability(logits) >= floor, scores, -1.0)
