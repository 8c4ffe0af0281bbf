"""Should the crop hint change the in-domain verdict? The served verdict vs one judged among the crop's classes.

    python -m bench.crop_verdict --data ../shared/data/plantvillage/train \
        --labels ../shared/data/plantvillage/labels.tsv --field ../shared/data/field [--model plantnet]

The served verdict (util/domain.py) scores a photo by the energy of all the logits and the distance
to the nearest of all class means. The crop-aware variant takes both over the hinted crop's classes
only, with the same standardisers, and its cut-off is set to accept the same 97.5% of the validation
leaves (each with its true crop) the served threshold was calibrated for. Both are compared on the
validation split and on field photos, each sent with its true crop: accepted, right (accepted and the
crop-restricted top label is the true one) and harm (accepted and wrong). docs/api.md has the numbers.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from training import data as ds
from util.batcher import wait
from util.config import Settings
from util.domain import DomainStatistics
from util.labels import crop_indices, crop_of
from util.service import DiagnosisService

TARGET_ACCEPTANCE = 0.975  # what the served threshold keeps of the validation leaves (model.json)
CHUNK = 32

Row = dict[str, np.ndarray]  # the engine's probabilities, logits and features of one photo


def engine_rows(service: DiagnosisService, paths: Sequence[Path]) -> list[Row]:
    """The engine's outputs for each photo, through the service's decoding and batcher."""
    rows: list[Row] = []
    for start in range(0, len(paths), CHUNK):
        futures = service.batcher.submit_many(
            [service.preprocess(p.read_bytes()) for p in paths[start : start + CHUNK]]
        )
        wait(futures, 300)
        rows += [future.result() for future in futures]
    return rows


def crop_raw_score(stats: DomainStatistics, row: Row, classes: np.ndarray) -> float:
    """The served raw score, with the energy and the nearest class mean taken over ``classes`` only."""
    z = row["features"][None].astype(stats.whitening.dtype) @ stats.whitening
    distance = float(np.sqrt(((z - stats.class_means[classes]) ** 2).sum(axis=1).min()))
    logits = row["logits"][classes]
    energy = float(logits.max() + np.log(np.exp(logits - logits.max()).sum()))
    energy_z = (energy - stats.energy_mean) / stats.energy_std
    return energy_z - stats.distance_weight * (distance - stats.distance_mean) / stats.distance_std


def tally(rows: Sequence[Row], targets: Sequence[str], labels: Sequence[str], accepts: Callable) -> dict[str, float]:
    accepted, right = [], []
    for row, target in zip(rows, targets, strict=True):
        classes = crop_indices(labels, crop_of(target))
        accepted.append(accepts(row, classes))
        right.append(labels[classes[int(np.argmax(row["probabilities"][classes]))]] == target)
    a, r = np.array(accepted), np.array(right)
    return {
        name: round(float(share.mean()), 4) for name, share in (("accepted", a), ("right", a & r), ("harm", a & ~r))
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ds.add_dataset_arguments(parser)
    parser.add_argument("--field", type=Path, required=True, help="field photos, a folder per class (PlantDoc)")
    parser.add_argument("--model", type=Path, default=Path("plantnet"))
    args = parser.parse_args(argv)
    service = DiagnosisService(Settings.from_env(model_dir=args.model))
    try:
        service.ready.wait(300)
        labels, stats, check = service.labels, service.domain.statistics, service.domain
        label_map = ds.read_label_map(args.labels)
        data = ds.scan_folder(args.data, label_map, min_images=10)
        val, _ = ds.restrict_to_labels(data, ds.stratified_split(data.targets, args.val_fraction, args.seed)[1], labels)
        field = ds.scan_folder(args.field, label_map)
        kept, _ = ds.restrict_to_labels(field, np.arange(len(field.paths)), labels)
        sets = {
            "validation": (
                engine_rows(service, [data.paths[i] for i in val]),
                [data.labels[data.targets[i]] for i in val],
            ),
            "field": (
                engine_rows(service, [field.paths[i] for i in kept]),
                [field.labels[field.targets[i]] for i in kept],
            ),
        }
        rows, targets = sets["validation"]
        raw = [
            crop_raw_score(stats, row, crop_indices(labels, crop_of(t))) for row, t in zip(rows, targets, strict=True)
        ]
        cut = float(np.quantile(raw, 1 - TARGET_ACCEPTANCE))
        verdicts = {
            "served": lambda row, classes: bool(check.judge(row["logits"][None], row["features"][None])[0].known),
            "crop-aware": lambda row, classes: crop_raw_score(stats, row, classes) >= cut,
        }
        for name, (rows, targets) in sets.items():
            for verdict, accepts in verdicts.items():
                print(f"{name:10} {verdict:10} {tally(rows, targets, labels, accepts)}")
    finally:
        service.close()


if __name__ == "__main__":
    main()
