"""Should the crop hint change the in-domain verdict? The served verdict vs a crop-aware operating point.

    python -m bench.crop_verdict --data ../shared/data/plantvillage/train \
        --labels ../shared/data/plantvillage/labels.tsv --field ../shared/data/field \
        --outliers ../shared/data/ood [--model plantnet]

Today the verdict ignores the hint: a photo is accepted when its in-domain score reaches the model's
threshold and its top probability (over all labels) the model's floor. The crop-aware variant adds a
floor on the top probability *among the hinted crop's labels* (what the answer shows), and searches
(threshold, floor over all labels, floor within the crop) for the most field photos right on the
calibration half of the held-out field photos (each sent with its true crop), with at most
FIELD_HARM_LIMIT of them accepted and wrong, while accepting as many lab validation leaves and
rejecting as much of the selection set (the non-leaf photos training used, each sent with every
crop as its hint) as the served verdict does. It reports both on the report half and on the held-out
non-leaf photos (every hint). Splits are train.py's (same --seed, --val-fraction, field fraction).
``--write`` stores the point found in the model's ``model.json`` (``in_domain.crop_hint``), which the
service then uses for every hinted photo; the finishing does not search it yet.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training import data as ds
from training.ood import FIELD_HARM_LIMIT, THRESHOLD_GRID
from util.batcher import wait
from util.config import Settings
from util.domain import top_probability
from util.labels import crop_of, restrict_to_crop
from util.model_dir import read_metadata, write_metadata
from util.service import DiagnosisService

CHUNK = 32
FIELD_FRACTION = 0.2  # train.py's --field-val-fraction
OVERALL_FLOORS = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6)
CROP_FLOORS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)


@dataclass(frozen=True)
class Photos:
    """One set's in-domain scores, top probabilities (all labels; within the hint) and, for known photos,
    whether the best label within the true crop is right. Unknown photos have one row per crop hint."""

    score: np.ndarray
    top: np.ndarray
    crop_top: np.ndarray
    right: np.ndarray | None = None


@dataclass(frozen=True)
class Point:
    threshold: float
    overall_floor: float
    crop_floor: float

    def accepts(self, photos: Photos) -> np.ndarray:
        return (
            (photos.score >= self.threshold) & (photos.top >= self.overall_floor) & (photos.crop_top >= self.crop_floor)
        )


def engine_outputs(service: DiagnosisService, paths: Sequence[Path]) -> dict[str, np.ndarray]:
    """The engine's logits, features and probabilities for each photo, through the service's decoding."""
    rows = []
    for start in range(0, len(paths), CHUNK):
        futures = service.batcher.submit_many(
            [service.preprocess(p.read_bytes()) for p in paths[start : start + CHUNK]]
        )
        wait(futures, 600)
        rows += [future.result() for future in futures]
    return {name: np.stack([row[name] for row in rows]) for name in ("logits", "features", "probabilities")}


def known_photos(service: DiagnosisService, paths: Sequence[Path], targets: np.ndarray) -> Photos:
    out = engine_outputs(service, paths)
    crop_top, right = np.zeros(len(targets)), np.zeros(len(targets), bool)
    for i, target in enumerate(targets):
        true_label = service.labels[target]
        kept, kept_labels = restrict_to_crop(out["probabilities"][i], service.labels, crop_of(true_label))
        crop_top[i], right[i] = kept.max(), kept_labels[int(kept.argmax())] == true_label
    score = service.domain.statistics.scores(out["logits"], out["features"])
    return Photos(score, top_probability(out["logits"]), crop_top, right)


def unknown_photos(service: DiagnosisService, paths: Sequence[Path]) -> Photos:
    """One row per photo and crop hint, photo by photo (the crop's top probability for each hint)."""
    out = engine_outputs(service, paths)
    crops = sorted({crop_of(label) for label in service.labels})
    per_hint = [restrict_to_crop(row, service.labels, crop)[0].max() for row in out["probabilities"] for crop in crops]
    score = service.domain.statistics.scores(out["logits"], out["features"])
    n = len(crops)
    return Photos(np.repeat(score, n), np.repeat(top_probability(out["logits"]), n), np.array(per_hint))


def shares(point: Point, photos: Photos) -> dict[str, float]:
    accepted = point.accepts(photos)
    result = {"accepted": float(accepted.mean())}
    if photos.right is not None:
        result |= {"right": float((accepted & photos.right).mean()), "harm": float((accepted & ~photos.right).mean())}
    return {name: round(value, 3) for name, value in result.items()}


def best_point(served: Point, calibration: Photos, lab: Photos, selection: Photos) -> Point:
    """Most calibration photos right within the harm limit, no fewer lab leaves accepted (0.5 point of slack)
    and no less of the selection set rejected than the served verdict."""
    lab_floor = served.accepts(lab).mean() - 0.005
    selection_floor = (~served.accepts(selection)).mean()
    best, most_right = served, (served.accepts(calibration) & calibration.right).mean()
    for overall in OVERALL_FLOORS:
        for crop in CROP_FLOORS:
            for threshold in THRESHOLD_GRID:
                point = Point(float(threshold), overall, crop)
                accepted = point.accepts(calibration)
                right, harm = (accepted & calibration.right).mean(), (accepted & ~calibration.right).mean()
                safe = harm <= FIELD_HARM_LIMIT and point.accepts(lab).mean() >= lab_floor
                if safe and (~point.accepts(selection)).mean() >= selection_floor and right > most_right:
                    best, most_right = point, right
    return best


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ds.add_dataset_arguments(parser)
    parser.add_argument("--field", type=Path, required=True, help="field photos, a folder per class, and _other_plants")
    parser.add_argument("--outliers", type=Path, required=True, help="photos that are no leaf of ours")
    parser.add_argument("--model", type=Path, default=Path("plantnet"))
    parser.add_argument("--write", action="store_true", help="store the point found in the model's model.json")
    args = parser.parse_args(argv)
    service = DiagnosisService(Settings.from_env(model_dir=args.model))
    try:
        service.ready.wait(300)
        index = {label: i for i, label in enumerate(service.labels)}
        data = ds.scan_folder(args.data, ds.read_label_map(args.labels), min_images=10)
        val = [
            i
            for i in ds.validation_split(data, args.val_fraction, args.seed)[1]
            if data.labels[data.targets[i]] in index
        ]
        lab = known_photos(
            service, [data.paths[i] for i in val], np.array([index[data.labels[data.targets[i]]] for i in val])
        )
        split = ds.field_split(args.field, data.folders, FIELD_FRACTION, args.seed)

        def field(part: np.ndarray) -> Photos:
            kept = [i for i in part if data.labels[split.targets[i]] in index]
            targets = np.array([index[data.labels[split.targets[i]]] for i in kept])
            return known_photos(service, [split.paths[i] for i in kept], targets)

        calibration, report = field(split.calibration_idx), field(split.report_idx)
        trained_outliers, held_outliers = ds.split_outliers(ds.list_images(args.outliers))
        trained_plants, held_plants = ds.split_outliers(ds.list_images(args.field / "_other_plants"))
        selection = unknown_photos(service, trained_outliers + trained_plants)
        held_out = unknown_photos(service, held_outliers + held_plants)
        plain = Point(service.domain.threshold, service.domain.probability_floor, 0.0)
        found = best_point(plain, calibration, lab, selection)
        points = [("without the hint's point", plain), ("best found", found)]
        if (hint := service.domain.hint_point) is not None:
            points.append(
                ("the model's crop_hint", Point(hint.threshold, hint.probability_floor, hint.crop_probability_floor))
            )
        for name, point in points:
            print(f"{name}: {point}")
            for part, photos in (("field calibration", calibration), ("field report", report), ("lab", lab)):
                print(f"  {part:18} {shares(point, photos)}")
            print(f"  {'non-leaf held out':18} rejected {1 - shares(point, held_out)['accepted']:.3f} (every hint)")
        if args.write:
            store_point(args.model, found)
    finally:
        service.close()


def store_point(model: Path, point: Point) -> None:
    """``point`` as the model's ``in_domain.crop_hint`` (util.domain.HintPoint reads it)."""
    metadata = read_metadata(model)
    metadata.setdefault("in_domain", {})["crop_hint"] = {
        "threshold": round(point.threshold, 6),
        "probability_floor": point.overall_floor,
        "crop_probability_floor": point.crop_floor,
        "chosen_by": "python -m bench.crop_verdict (field calibration half, each photo with its true crop)",
    }
    print(f"wrote {write_metadata(model, metadata)}")


if __name__ == "__main__":
    main()
