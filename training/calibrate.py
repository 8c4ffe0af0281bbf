"""Calibrate the in-domain verdict of any model directory (including the original PlantNet pair).

    python -m training.calibrate plantnet/ --data ../shared/data/plantvillage/train \
        --labels ../shared/data/plantvillage/labels.tsv --outliers ../shared/data/ood

Runs the training images and the validation split (the split train.py holds out, from the same
--seed and --val-fraction) through the service's own engine, fits the statistics of
util/domain.py on the training images, chooses the distance term's weight on the selection set
(the training half of --outliers, as train.py splits them, and synthetic photos cut from training
leaves), sets the threshold on the validation images and writes both into the model directory
(``domain.npz`` and ``model.json``'s ``in_domain``). It calibrates for the engine it runs:
``PLANTNET_PRECISION`` chooses it as for the service; an int8 engine's calibration is kept apart
from the f32/bf16 one (util/model_dir.py names both), so calibrate both for a directory with an int8 IR.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from training import data as ds
from training import ood
from training.evaluation import run_engine
from util import model_dir
from util.config import Settings
from util.domain import METHOD
from util.engine import create_engine

log = logging.getLogger("calibrate")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path, help="model directory")
    ds.add_dataset_arguments(p)
    p.add_argument("--acceptance", type=float, default=ood.TARGET_ACCEPTANCE, help="share of known leaves to keep")
    p.add_argument("--outliers", type=Path, help="folder of photos that are no leaf of ours (../shared/data/ood)")
    p.add_argument(
        "--precision",
        choices=["auto", "bf16", "f32", "int8"],
        help="the engine to calibrate for (default: PLANTNET_PRECISION, as the service chooses)",
    )
    return p.parse_args(argv)


def known_images(artifact: model_dir.Artifact, args: argparse.Namespace, size: int):
    """Training and validation images of the classes the model knows, with targets in its label order."""
    data = ds.scan_folder(args.data, ds.read_label_map(args.labels))
    train_idx, val_idx = ds.validation_split(data, args.val_fraction, args.seed)
    index = {label: i for i, label in enumerate(artifact.labels)}

    def select(indices):
        kept = [i for i in indices if data.labels[data.targets[i]] in index]
        targets = np.array([index[data.labels[data.targets[i]]] for i in kept])
        return ds.load_pixels([data.paths[i] for i in kept], size), targets

    return select(train_idx), select(val_idx)


def calibrate(args: argparse.Namespace) -> dict:
    artifact = model_dir.find_artifact(args.model)
    overrides = {} if args.precision is None else {"precision": args.precision}
    engine = create_engine(artifact, Settings.from_env(model_dir=args.model, **overrides))
    (train_pixels, train_targets), (val_pixels, _) = known_images(artifact, args, engine.input_size)
    train_out = run_engine(engine.predict, train_pixels)
    val_out = run_engine(engine.predict, val_pixels)
    stats = ood.fit_statistics(
        train_out["logits"], train_out["features"], train_targets, val_out["logits"], val_out["features"]
    )
    trained_outliers, _ = ds.split_outliers(ds.list_images(args.outliers) if args.outliers else [])
    outlier_pixels = ds.load_pixels(trained_outliers, engine.input_size) if trained_outliers else train_pixels[:0]
    unknown = run_engine(engine.predict, ood.selection_unknowns(outlier_pixels, train_pixels, args.seed))
    stats, trials = ood.choose_distance_weight(stats, val_out, unknown)
    threshold = ood.threshold_for(stats.scores(val_out["logits"], val_out["features"]), args.acceptance)
    filename, key = model_dir.domain_calibration(engine.precision)
    stats.save(artifact.directory / filename)
    calibration = {
        "method": METHOD,
        "threshold": threshold,
        "target_acceptance": args.acceptance,
        "calibrated_on": f"validation split, {len(val_pixels)} images",
        "engine": f"{engine.name}/{engine.precision}",
        "distance_weight": stats.distance_weight,
    }
    model_dir.update_metadata(artifact.directory, **{key: calibration})
    for trial in trials:
        rejects = f"rejects {100 * trial.rejected:.1f}% of the selection set"
        print(f"distance weight {trial.weight:g}: {rejects}, AUROC {trial.auroc:.3f}")
    print(
        f"{artifact.directory / filename} ({engine.precision} engine): distance weight {stats.distance_weight:g}, "
        f"threshold {threshold:.4f} "
        f"({METHOD}, keeps {100 * args.acceptance:.1f}% of known)"
    )
    return calibration


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING)
    calibrate(parse_args(argv))


if __name__ == "__main__":
    main()
