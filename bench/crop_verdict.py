"""Does the crop hint's operating point pay? The served verdict with and without it, through the service.

    python -m bench.crop_verdict --data ../shared/data/plantvillage/train \
        --labels ../shared/data/plantvillage/labels.tsv --field ../shared/data/field \
        --outliers ../shared/data/ood [--model plantnet]

Runs the held-out photos through the service's own decoding, engine and verdict statistics and reports,
for the model's unhinted point and for its ``in_domain.crop_hint`` (chosen by training/crop_hint.py in
the finishing or ``python -m training.calibrate --field``), each field photo sent with its true crop:
accepted, right and harm on both halves of the held-out field photos and on lab validation leaves, and
the share of the held-out unknown photos rejected by kind with every crop as the hint. Splits are
train.py's (same --seed, --val-fraction, field fraction).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from training import crop_hint
from training import data as ds
from util.batcher import wait
from util.config import Settings
from util.domain import HintPoint
from util.service import DiagnosisService

CHUNK = 32


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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ds.add_dataset_arguments(parser)
    parser.add_argument("--field", type=Path, required=True, help="field photos, a folder per class, and _other_plants")
    parser.add_argument("--outliers", type=Path, required=True, help="photos that are no leaf of ours")
    parser.add_argument("--model", type=Path, default=Path("plantnet"))
    args = parser.parse_args(argv)
    service = DiagnosisService(Settings.from_env(model_dir=args.model))
    try:
        service.ready.wait(300)
        labels, stats = service.labels, service.domain.statistics
        index = {label: i for i, label in enumerate(labels)}
        data = ds.scan_folder(args.data, ds.read_label_map(args.labels), min_images=10)

        def known(paths: list[Path], names: list[str]) -> crop_hint.Photos:
            kept = [i for i, name in enumerate(names) if name in index]
            targets = np.array([index[names[i]] for i in kept])
            return crop_hint.known_photos(stats, engine_outputs(service, [paths[i] for i in kept]), targets, labels)

        val = ds.validation_split(data, args.val_fraction, args.seed)[1]
        sets = {"lab validation": known([data.paths[i] for i in val], [data.labels[data.targets[i]] for i in val])}
        split = ds.field_split(args.field, data.folders, ds.FIELD_VAL_FRACTION, args.seed)
        for name, part in (("field calibration", split.calibration_idx), ("field report", split.report_idx)):
            sets[name] = known([split.paths[i] for i in part], [data.labels[split.targets[i]] for i in part])
        held = ds.unknowns_by_kind(args.outliers, args.field, held_out=True)
        unknowns = {
            kind: crop_hint.unknown_photos(stats, engine_outputs(service, p), labels) for kind, p in held.items()
        }
        plain = HintPoint(service.domain.threshold, service.domain.probability_floor, 0.0)
        points = [("without the hint's point", plain)]
        if service.domain.hint_point is not None:
            points.append(("the model's crop_hint", service.domain.hint_point))
        for name, point in points:
            print(f"{name}: {point}")
            crop_hint.print_report(point, sets, unknowns)
    finally:
        service.close()


if __name__ == "__main__":
    main()
