"""The verdict's operating point for photos sent with a crop hint (``model.json`` ``in_domain.crop_hint``).

A hinted photo's answer is the best label among the crop's labels (util.labels.restrict_to_crop), so the
verdict can also ask how sure the model is among them. The point adds a floor on that top probability to
the threshold and the floor over all labels, and is searched like the plain one (training/ood.py): the
most field calibration photos right, each sent with its true crop, with at most FIELD_HARM_LIMIT of them
accepted and wrong, no fewer lab validation leaves accepted than the plain point (half a point of slack),
and each kind of unknown photo rejected at HINTED_UNKNOWN_REJECTION with every crop as its hint. The finishing
(training/finish.py) and ``python -m training.calibrate --field`` store it; util.domain.HintPoint reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.ood import FIELD_HARM_LIMIT, HINTED_UNKNOWN_REJECTION, THRESHOLD_GRID, meets_rejection_targets
from util.domain import DomainStatistics, HintPoint, floors_for, top_probability
from util.labels import crop_of, restrict_to_crop

OVERALL_FLOORS = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6)
CROP_FLOORS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)
LAB_SLACK = 0.005  # lab leaves the hinted point may accept fewer of than the plain one


@dataclass(frozen=True)
class Photos:
    """One set's in-domain scores, top probabilities (all labels; within the hint) and, for known photos,
    whether the best label within the true crop is right. Unknown photos have one row per crop hint."""

    score: np.ndarray
    top: np.ndarray
    crop_top: np.ndarray
    right: np.ndarray | None = None
    looks_lab: np.ndarray | None = None  # DomainStatistics.looks_lab per row


def accepts(point: HintPoint, photos: Photos, lab_style_floor: float | None = None) -> np.ndarray:
    """What the service's DomainCheck.with_hint decides for each row, on arrays; with ``lab_style_floor``, what
    DomainCheck.judge decides without a hint (``point`` the plain one: photos that look like lab photos have
    that floor on the top probability instead)."""
    floor: float | np.ndarray = point.probability_floor
    if lab_style_floor is not None and photos.looks_lab is not None:
        floor = floors_for(photos.looks_lab, point.probability_floor, lab_style_floor)
    return (photos.score >= point.threshold) & (photos.top >= floor) & (photos.crop_top >= point.crop_probability_floor)


def as_metadata(point: HintPoint, chosen_by: str) -> dict:
    """``in_domain.crop_hint`` as util.domain.HintPoint.from_calibration reads it."""
    return {
        "threshold": round(point.threshold, 6),
        "probability_floor": point.probability_floor,
        "crop_probability_floor": point.crop_probability_floor,
        "chosen_by": chosen_by,
    }


def known_photos(stats: DomainStatistics, out: dict[str, np.ndarray], targets: np.ndarray, labels: list[str]) -> Photos:
    """Engine outputs (logits, features, probabilities) of known photos, each hinted with its true crop."""
    crop_top, right = np.zeros(len(targets)), np.zeros(len(targets), bool)
    for i, target in enumerate(targets):
        true_label = labels[target]
        kept, kept_labels = restrict_to_crop(out["probabilities"][i], labels, crop_of(true_label))
        crop_top[i], right[i] = kept.max(), kept_labels[int(kept.argmax())] == true_label
    score, top = stats.scores(out["logits"], out["features"]), top_probability(out["logits"])
    return Photos(score, top, crop_top, right, stats.looks_lab(out["features"]))


def accepted_with_true_crop(
    stats: DomainStatistics, point: HintPoint, out: dict[str, np.ndarray], targets: np.ndarray, labels: list[str]
) -> np.ndarray:
    """Whether ``point`` accepts each known photo sent with its true crop as the hint."""
    return accepts(point, known_photos(stats, out, targets, labels))


def unknown_photos(stats: DomainStatistics, out: dict[str, np.ndarray], labels: list[str]) -> Photos:
    """Engine outputs of unknown photos: one row per photo and crop hint."""
    crops = sorted({crop_of(label) for label in labels})
    per_hint = [restrict_to_crop(row, labels, crop)[0].max() for row in out["probabilities"] for crop in crops]
    n = len(crops)
    score, top = stats.scores(out["logits"], out["features"]), top_probability(out["logits"])
    lab = np.repeat(stats.looks_lab(out["features"]), n)
    return Photos(np.repeat(score, n), np.repeat(top, n), np.array(per_hint), looks_lab=lab)


def shares(point: HintPoint, photos: Photos, lab_style_floor: float | None = None) -> dict[str, float]:
    """Accepted share, and for known photos right and harm."""
    accepted = accepts(point, photos, lab_style_floor)
    result = {"accepted": float(accepted.mean())}
    if photos.right is not None:
        result |= {"right": float((accepted & photos.right).mean()), "harm": float((accepted & ~photos.right).mean())}
    return {name: round(value, 3) for name, value in result.items()}


def print_report(
    point: HintPoint, known: dict[str, Photos], unknowns: dict[str, Photos], lab_style_floor: float | None = None
) -> None:
    """One operating point's shares on named known sets and the rejected share of each kind of unknown photo
    (each sent with every crop): what ``training.calibrate --field`` and ``bench.crop_verdict`` print."""
    for part, photos in known.items():
        print(f"  {part:20} {shares(point, photos, lab_style_floor)} of {len(photos.score)}")
    for kind, photos in unknowns.items():
        rejected = 1 - shares(point, photos, lab_style_floor)["accepted"]
        print(f"  {kind + ' (held out)':20} rejected {rejected:.3f} (every crop as the hint)")


def best_point(plain: HintPoint, calibration: Photos, lab: Photos, unknowns: dict[str, Photos]) -> HintPoint:
    """The most calibration photos right within the limits above; ``plain`` (the unhinted verdict's point,
    without a crop floor) when no point does better."""
    assert calibration.right is not None
    lab_floor = accepts(plain, lab).mean() - LAB_SLACK
    best, most_right = plain, (accepts(plain, calibration) & calibration.right).mean()
    for overall in OVERALL_FLOORS:
        for crop in CROP_FLOORS:
            for threshold in THRESHOLD_GRID:
                point = HintPoint(float(threshold), overall, crop)
                accepted = accepts(point, calibration)
                right = (accepted & calibration.right).mean()
                if right <= most_right or (accepted & ~calibration.right).mean() > FIELD_HARM_LIMIT:
                    continue
                rejected = {kind: float((~accepts(point, photos)).mean()) for kind, photos in unknowns.items()}
                if accepts(point, lab).mean() >= lab_floor and meets_rejection_targets(
                    rejected, HINTED_UNKNOWN_REJECTION
                ):
                    best, most_right = point, right
    return best
