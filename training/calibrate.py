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
from dataclasses import replace
from pathlib import Path

import numpy as np

from training import crop_hint, ood, verdict
from training import data as ds
from training.evaluation import run_engine
from util import model_dir
from util.config import Settings
from util.domain import METHOD, HintPoint
from util.engine import create_engine

log = logging.getLogger("calibrate")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path, help="model directory")
    ds.add_dataset_arguments(p)
    p.add_argument("--acceptance", type=float, default=ood.TARGET_ACCEPTANCE, help="share of known leaves to keep")
    p.add_argument("--outliers", type=Path, help="folder of photos that are no leaf of ours (../shared/data/ood)")
    p.add_argument(
        "--field",
        type=Path,
        help="field photos (../shared/data/field): choose the field operating point and the crop-hint point "
        "exactly as the finishing does (training/verdict.py), for this engine",
    )
    p.add_argument("--field-val-fraction", type=float, default=ds.FIELD_VAL_FRACTION, help="as train.py's")
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
    if args.field is not None:
        return calibrate_for_field(args, artifact, engine)
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


def known_photos(paths: list[Path], names: list[str], labels: list[str], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels and targets (in the model's label order) of the photos whose class name the model knows."""
    index = {label: i for i, label in enumerate(labels)}
    kept = [i for i, name in enumerate(names) if name in index]
    return ds.load_pixels([paths[i] for i in kept], size), np.array([index[names[i]] for i in kept], np.int64)


def calibrate_for_field(args: argparse.Namespace, artifact: model_dir.Artifact, engine) -> dict:
    """The finishing's field-aware verdict (training/verdict.py) for this directory and engine, then its
    numbers on the photos that only report: the field report half and the held-out unknown photos."""
    labels, size = artifact.labels, engine.input_size
    data = ds.scan_folder(args.data, ds.read_label_map(args.labels))
    train_idx, val_idx = ds.validation_split(data, args.val_fraction, args.seed)
    split = ds.field_split(args.field, data.folders, args.field_val_fraction, args.seed)

    lab_names = [data.labels[t] for t in data.targets]
    field_names = [data.labels[t] for t in split.targets]

    def lab(indices):
        return known_photos([data.paths[i] for i in indices], [lab_names[i] for i in indices], labels, size)

    def field(indices):
        return known_photos([split.paths[i] for i in indices], [field_names[i] for i in indices], labels, size)

    def outputs(part: tuple[np.ndarray, np.ndarray]) -> tuple[dict, np.ndarray]:
        return run_engine(engine.predict, part[0]), part[1]

    lab_train, field_train = lab(train_idx), field(split.train_idx)
    train_pixels = np.concatenate([lab_train[0], field_train[0]])
    train = outputs((train_pixels, np.concatenate([lab_train[1], field_train[1]])))
    validation, calibration = outputs(lab(val_idx)), outputs(field(split.calibration_idx))
    chosen = ds.unknowns_by_kind(args.outliers, args.field, held_out=False)
    loaded = {kind: ds.load_pixels(paths, size) for kind, paths in chosen.items() if paths}
    unknowns = {
        kind: run_engine(engine.predict, pixels)
        for kind, pixels in ood.selection_by_kind(loaded, lab_train[0], args.seed).items()
    }
    from_field = np.arange(len(train[1])) >= len(lab_train[1])  # the field photos come after the lab leaves
    fitted = verdict.fit(train, validation, calibration, unknowns, labels, from_field)
    filename, key = model_dir.domain_calibration(engine.precision)
    fitted.stats.save(artifact.directory / filename)
    on = f"validation split, {len(validation[1])} images, and {len(calibration[1])} field photos"
    calibration_record = {**verdict.metadata(fitted, on), "engine": f"{engine.name}/{engine.precision}"}
    model_dir.update_metadata(artifact.directory, **{key: calibration_record})
    print(f"wrote {artifact.directory / filename} and model.json {key} ({engine.name}/{engine.precision})")
    report_held_out(fitted, outputs(field(split.report_idx)), validation, args, engine, labels)
    return calibration_record


def report_held_out(fitted: verdict.FieldVerdict, report: tuple, validation: tuple, args, engine, labels) -> None:
    """Accepted, right and harm on the field report half and lab validation, and the held-out unknown photos
    rejected by kind; without and with the crop hint (every crop for the unknown photos)."""
    plain = HintPoint(fitted.point.threshold, fitted.point.floor, 0.0)
    held = ds.unknowns_by_kind(args.outliers, args.field, held_out=True)
    size = engine.input_size
    unknown_out = {kind: run_engine(engine.predict, ds.load_pixels(p, size)) for kind, p in held.items() if p}
    stats = fitted.stats
    unknowns = {kind: crop_hint.unknown_photos(stats, out, labels) for kind, out in unknown_out.items()}
    for name, point, hinted in (("no hint", plain, False), ("true crop as hint", fitted.hint, True)):
        print(f"{name}: {point}")
        known = {}
        for part, (out, targets) in (("field report half", report), ("lab validation", validation)):
            known[part] = crop_hint.known_photos(stats, out, targets, labels)
            if not hinted:  # right: the best label over all labels
                best = out["probabilities"].argmax(1) == targets
                known[part] = replace(known[part], crop_top=known[part].top, right=best)
        crop_hint.print_report(point, known, unknowns, None if hinted else fitted.lab_style.floor)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING)
    calibrate(parse_args(argv))


if __name__ == "__main__":
    main()
