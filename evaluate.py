"""Evaluate a served model on a folder-per-class dataset, through the service's own pipeline.

    python evaluate.py --data DIR --labels labels.tsv --model plantnet/ --out runs/eval

Images are decoded and preprocessed by util.leaf and scored by the same engine the service
would use (PLANTNET_BACKEND, default: fastest available). Prints top-1 / top-3 accuracy and
per-class precision and recall; writes ``report.json`` and ``confusion_matrix.png`` to --out.
Folders whose label the model does not know are counted and skipped.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from util import dataset as ds
from util import report
from util.config import Settings
from util.engine import create_engine
from util.model import find_artifact


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
    return p.parse_args(argv)


def evaluate(args: argparse.Namespace) -> dict:
    settings = Settings.from_env(model_dir=args.model, backend=args.backend)
    artifact = find_artifact(args.model)
    engine = create_engine(artifact, settings)
    data = ds.scan_folder(args.data, ds.read_label_map(args.labels))
    indices = np.arange(len(data.paths))
    if args.split == "validation":
        indices = ds.stratified_split(data.targets, args.val_fraction, args.seed)[1]
    known = {label: i for i, label in enumerate(artifact.labels)}
    unknown = sorted({data.labels[t] for t in data.targets[indices]} - set(known))
    indices = np.array([i for i in indices if data.labels[data.targets[i]] in known])
    targets = np.array([known[data.labels[data.targets[i]]] for i in indices])
    pixels = ds.load_pixels([data.paths[i] for i in indices], engine.input_size)
    evaluation = report.Evaluation(list(artifact.labels), targets, report.predict_pixels(engine.predict, pixels))

    summary = {
        **evaluation.summary(),
        "backend": f"{engine.name}/{engine.precision}",
        "model": {"name": artifact.name, "version": artifact.version},
        "skipped_unknown_classes": unknown,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(summary, indent=1))
    report.plot_confusion(
        evaluation.confusion(),
        artifact.labels,
        args.out / "confusion_matrix.png",
        f"{args.data.name}: {len(targets)} images, top-1 {100 * summary['top1']:.1f}%",
    )
    print(report.per_class_table(evaluation))
    print(
        f"\n{len(targets)} images on {summary['backend']}: top-1 {100 * summary['top1']:.2f}%, "
        f"top-3 {100 * summary['top3']:.2f}%" + (f"; skipped unknown classes: {unknown}" if unknown else "")
    )
    print(f"report: {args.out / 'report.json'}, {args.out / 'confusion_matrix.png'}")
    return summary


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING)
    evaluate(parse_args(argv))


if __name__ == "__main__":
    main()
