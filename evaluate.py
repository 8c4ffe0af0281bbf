"""Evaluate a served model through the service's own pipeline: accuracy and the in-domain verdict.

    python evaluate.py --data ../shared/data/plantvillage/train --labels ../shared/data/plantvillage/labels.tsv \
        --split validation --outliers ../shared/data/ood --model plantnet/ --out runs/eval

Images are decoded and preprocessed by util.leaf and scored by the engine the service would use
(PLANTNET_BACKEND, default: fastest available); the verdict is util.domain's, with the threshold
in the model's ``model.json``. Prints top-1 / top-3 accuracy with its 95% interval and per-class
precision and recall; for the in-domain verdict, per group of images (the known leaves, each
sub-folder of --outliers, the classes the model does not know, synthetic images): AUROC, the
false-positive rate at 95% true-positive rate and the accept/reject counts at the shipped
threshold. With --split validation and --outliers, also the field-photo proxy: validation leaves
pasted onto the half of --outliers train.py never trains on (the same images train.py reports).
Writes ``report.json``, ``confusion_matrix.png`` and ``in_domain_scores.png`` to --out.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from training import crop_hint, ood, report
from training import data as ds
from training.augment import field_proxy_images
from training.evaluation import Evaluation, per_class_table, plot_confusion, plot_scores, run_engine
from util.config import Settings
from util.domain import DomainCheck
from util.engine import create_engine
from util.model_dir import find_artifact


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ds.add_dataset_arguments(p)
    p.add_argument("--model", type=Path, default=Path("plantnet"), help="model directory")
    p.add_argument("--out", type=Path, default=Path("runs/eval"), help="report directory")
    p.add_argument("--backend", choices=["auto", "openvino", "tensorflow"], default="auto")
    p.add_argument(
        "--split",
        choices=["all", "validation"],
        default="all",
        help="'validation': only the split train.py held out (same --seed and --val-fraction)",
    )
    p.add_argument("--outliers", type=Path, help="photos that are no leaf of ours; each sub-folder is one group")
    p.add_argument(
        "--outlier-share",
        choices=["all", "held-out"],
        default="all",
        help="'held-out': only the half of --outliers train.py never trains on",
    )
    p.add_argument("--field", type=Path, help="field photos: class folders named as in --data (train.py --field)")
    p.add_argument(
        "--field-part",
        choices=["report", "all"],
        default="report",
        help="'report': the half of train.py's held-out field photos that never chose anything; 'all': every photo",
    )
    p.add_argument("--field-val-fraction", type=float, default=ds.FIELD_VAL_FRACTION, help="as train.py's")
    return p.parse_args(argv)


def outlier_groups(args: argparse.Namespace, unknown_paths: list[Path], size: int) -> dict[str, np.ndarray]:
    groups: dict[str, list[Path]] = {}
    if args.outliers:
        paths = ds.list_images(args.outliers)
        if args.outlier_share == "held-out":
            paths = ds.split_outliers(paths)[1]
        for path in paths:
            groups.setdefault(path.relative_to(args.outliers).parts[0], []).append(path)
    if unknown_paths:
        groups["classes the model does not know"] = unknown_paths
    pixels = {name: ds.load_pixels(paths, size) for name, paths in groups.items()}
    return pixels


def evaluate(args: argparse.Namespace) -> dict:
    settings = Settings.from_env(model_dir=args.model, backend=args.backend)
    artifact = find_artifact(args.model)
    engine = create_engine(artifact, settings)
    check = DomainCheck.for_artifact(artifact, engine.precision)
    data = ds.scan_folder(args.data, ds.read_label_map(args.labels))
    indices = np.arange(len(data.paths))
    if args.split == "validation":
        indices = ds.validation_split(data, args.val_fraction, args.seed)[1]
    known_labels = {label: i for i, label in enumerate(artifact.labels)}
    is_known = np.array([data.labels[data.targets[i]] in known_labels for i in range(len(data.paths))])
    unknown_paths = [data.paths[i] for i in np.flatnonzero(~is_known)]
    indices = np.array([i for i in indices if is_known[i]])
    targets = np.array([known_labels[data.labels[data.targets[i]]] for i in indices])
    pixels = ds.load_pixels([data.paths[i] for i in indices], engine.input_size)
    outputs = run_engine(engine.predict, pixels)
    evaluation = Evaluation(list(artifact.labels), targets, outputs["probabilities"])
    summary = {
        **evaluation.summary(),
        "backend": f"{engine.name}/{engine.precision}",
        "model": {"name": artifact.name, "version": artifact.version},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    plot_confusion(
        evaluation.confusion(),
        artifact.labels,
        args.out / "confusion_matrix.png",
        f"{args.data.name}: {len(targets)} images, top-1 {100 * summary['top1']:.1f}%",
    )
    print(per_class_table(evaluation))
    low, high = summary["top1_interval_95"]
    print(
        f"\n{len(targets)} images on {summary['backend']}: top-1 {100 * summary['top1']:.2f}% "
        f"(95% interval {100 * low:.1f}-{100 * high:.1f}), top-3 {100 * summary['top3']:.2f}%"
    )
    if args.split == "validation" and args.outliers:
        summary["field_proxy"] = field_proxy(args, engine, pixels, targets)
    if args.field and check.available:
        summary["field"] = field_photos(args, data, artifact.labels, engine, check)
    if check.available:
        summary["in_domain"] = domain_report(args, check, engine, outputs, unknown_paths)
    else:
        print("in-domain verdict: unavailable (the model directory has no calibration)")
    (args.out / "report.json").write_text(json.dumps(summary, indent=1))
    print(f"report: {args.out / 'report.json'}")
    return summary


def field_proxy(args: argparse.Namespace, engine, leaves: np.ndarray, targets: np.ndarray) -> dict:
    """Top-1 on validation leaves pasted onto held-out non-leaf photos (train.py's field-photo proxy)."""
    backgrounds = ds.load_pixels(ds.split_outliers(ds.list_images(args.outliers))[1], engine.input_size)
    composited = field_proxy_images(leaves, backgrounds, args.seed)
    top1 = float(np.mean(run_engine(engine.predict, composited)["probabilities"].argmax(1) == targets))
    print(f"field-photo proxy: {len(targets)} validation leaves on held-out photos: top-1 {100 * top1:.2f}%")
    return {"images": len(targets), "backgrounds": len(backgrounds), "top1": top1}


def field_photos(args: argparse.Namespace, data: ds.Dataset, labels: list[str], engine, check: DomainCheck) -> dict:
    """Best guess, with the crop, accepted, right and harm on field photos, through the served verdict."""
    split = ds.field_split(args.field, data.folders, args.field_val_fraction, args.seed)
    chosen = split.report_idx if args.field_part == "report" else np.arange(len(split.paths))
    model_index = {label: i for i, label in enumerate(labels)}
    kept = [i for i in chosen if data.labels[split.targets[i]] in model_index]
    targets = np.array([model_index[data.labels[split.targets[i]]] for i in kept], np.int64)
    outputs = run_engine(engine.predict, ds.load_pixels([split.paths[i] for i in kept], engine.input_size))
    known = np.array([v.known for v in check.judge(outputs["logits"], outputs["features"])], bool)
    hinted = None
    if check.hint_point is not None and check.statistics is not None:
        hinted = crop_hint.accepted_with_true_crop(check.statistics, check.hint_point, outputs, targets, labels)
    field = report.field_report(outputs["probabilities"], targets, known, labels, hinted)
    print(f"\nfield photos ({args.field_part} part of {args.field}):\n{report.field_table(field)}")
    return field


def domain_report(args, check: DomainCheck, engine, known_outputs: dict, unknown_paths: list[Path]) -> list[dict]:
    """Score every group with the shipped threshold; print and return one row per group."""
    known = check.verdict_scores(known_outputs["logits"], known_outputs["features"])
    scores = {"known leaves": known}
    groups = outlier_groups(args, unknown_paths, engine.input_size)
    leaves = _some_leaves(args, engine.input_size)
    groups.update({f"{k} (synthetic)": v for k, v in ood.synthetic_outliers(leaves, 40, args.seed).items()})
    for name, pixels in groups.items():
        out = run_engine(engine.predict, pixels)
        scores[name] = check.verdict_scores(out["logits"], out["features"])
    rows = [
        ood.report_group(name, known, values, check.threshold, name == "known leaves").as_dict()
        for name, values in scores.items()
    ]
    print(f"\nin-domain verdict (threshold {check.threshold:.4f}):")
    print("| images | count | rejected | AUROC | FPR at 95% TPR |\n|---|---:|---:|---:|---:|")
    for row in rows:
        auroc = "" if row["auroc"] is None else f"{row['auroc']:.3f}"
        fpr = "" if row["fpr_at_95_tpr"] is None else f"{100 * row['fpr_at_95_tpr']:.1f}%"
        share = 100 * row["rejected"] / max(1, row["images"])
        print(f"| {row['name']} | {row['images']} | {row['rejected']} ({share:.1f}%) | {auroc} | {fpr} |")
    plot_scores(scores, check.threshold, args.out / "in_domain_scores.png")
    return rows


def _some_leaves(args, size: int) -> np.ndarray:
    """A few known leaves to cut into shuffled patches (synthetic out-of-domain images)."""
    data = ds.scan_folder(args.data, ds.read_label_map(args.labels))
    return ds.load_pixels(data.paths[:: max(1, len(data.paths) // 40)][:40], size)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING)
    evaluate(parse_args(argv))


if __name__ == "__main__":
    main()
