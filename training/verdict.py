"""The in-domain verdict for a model trained with field photos: statistics, operating point and crop-hint point.

One function for the finishing (training/finish.py, on TensorFlow outputs) and for ``python -m
training.calibrate --field`` (on any engine's outputs, int8 included), so both choose the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from training import crop_hint, ood
from util.domain import METHOD, DomainStatistics, HintPoint

log = logging.getLogger(__name__)
HINT_CHOSEN_BY = "training/crop_hint.py (field calibration half, each photo with its true crop)"

Outputs = dict[str, np.ndarray]  # an engine's logits, features and probabilities for a set of photos


@dataclass(frozen=True)
class FieldVerdict:
    stats: DomainStatistics
    point: ood.OperatingPoint
    trials: list[ood.OperatingPoint]  # the best point of each distance weight
    hint: HintPoint
    lab_style: ood.LabStylePoint  # the floor for photos that look like lab photos (stats.lab_style tells them)


def fit(
    train: tuple[Outputs, np.ndarray],
    lab: tuple[Outputs, np.ndarray],
    field: tuple[Outputs, np.ndarray],
    unknowns: dict[str, Outputs],
    labels: list[str],
    train_from_field: np.ndarray,
) -> FieldVerdict:
    """Fit the statistics on ``train`` (lab and field training photos, with targets; ``train_from_field`` marks
    the field ones), choose the operating point on ``field`` (the calibration half) and ``lab`` (validation
    leaves) against the selection set's ``unknowns`` by kind, then the lab-style floor and the crop-hint point
    on the same photos."""
    (train_out, train_targets), (lab_out, lab_targets), (field_out, field_targets) = train, lab, field
    stats = ood.fit_statistics(
        train_out["logits"], train_out["features"], train_targets, lab_out["logits"], lab_out["features"]
    )
    reference = {key: np.concatenate([lab_out[key], field_out[key]]) for key in ("logits", "features")}
    stats, point, trials = ood.choose_operating_point(stats, reference, lab_out, field_out, field_targets, unknowns)
    log.info("operating point %s of %s", point.as_dict(), [t.as_dict() for t in trials])
    features = train_out["features"]
    probe = ood.fit_lab_style(features[~train_from_field], features[train_from_field])
    stats = replace(stats, lab_style=probe)
    lab_style = ood.lab_style_floor(stats, point, lab_out, field_out, field_targets, unknowns)
    log.info("lab-style floor %s", lab_style.as_dict())
    hint = crop_hint.best_point(
        HintPoint(point.threshold, point.floor, 0.0),
        crop_hint.known_photos(stats, field_out, field_targets, labels),
        crop_hint.known_photos(stats, lab_out, lab_targets, labels),
        {kind: crop_hint.unknown_photos(stats, out, labels) for kind, out in unknowns.items()},
    )
    log.info("crop-hint point %s", hint)
    return FieldVerdict(stats, point, trials, hint, lab_style)


def metadata(verdict: FieldVerdict, calibrated_on: str) -> dict:
    """model.json's ``in_domain`` (or ``in_domain_int8``): what util.domain.DomainCheck judges by."""
    point = verdict.point
    return {
        "method": METHOD,
        "threshold": point.threshold,
        "target_acceptance": point.lab_accepted,
        "calibrated_on": calibrated_on,
        "distance_weight": verdict.stats.distance_weight,
        "field_harm_limit": ood.FIELD_HARM_LIMIT,
        "unknown_rejection": dict(ood.UNKNOWN_REJECTION),
        "hinted_unknown_rejection": dict(ood.HINTED_UNKNOWN_REJECTION),
        "probability_floor": point.floor,
        "lab_style": {
            "probability_floor": verdict.lab_style.floor,
            "lab_accepted": round(verdict.lab_style.lab_accepted, 4),
            "acceptance_target": ood.LAB_STYLE_ACCEPTANCE,
            "chosen_by": "training/ood.py lab_style_floor",
        },
        "crop_hint": crop_hint.as_metadata(verdict.hint, HINT_CHOSEN_BY),
    }
