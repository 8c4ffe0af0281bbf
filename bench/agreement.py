"""Compare backends on a dataset: ``python -m bench.agreement --data DIR [--split validation]``.

Scores every image with TensorFlow (f32 graph, the reference) and OpenVINO in f32, bf16 (where
the CPU has it) and int8 (where the model directory holds the quantized IR),
through util.leaf's preprocessing, and prints top-1 agreement with the reference, the largest
probability difference and each backend's accuracy. ``--split validation`` keeps only the
split train.py held out (same seed and fraction).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from training import data as ds
from training.evaluation import run_engine
from util.config import Settings
from util.engine import OpenVINOEngine, TensorFlowEngine
from util.model_dir import INT8_IR, find_artifact


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ds.add_dataset_arguments(p)
    p.add_argument("--model", type=Path, default=Path("plantnet"))
    p.add_argument("--split", choices=["all", "validation"], default="validation")
    args = p.parse_args()

    artifact = find_artifact(args.model)
    engines = {"tensorflow/f32": TensorFlowEngine(artifact)}
    for precision in ("f32", "bf16", "int8"):
        if precision == "int8" and not (args.model / INT8_IR).exists():
            continue
        engine = OpenVINOEngine(artifact, Settings(model_dir=args.model, precision=precision))
        engines[f"openvino/{engine.precision}"] = engine  # bf16 falls back to f32 on CPUs without it
    data = ds.scan_folder(args.data, ds.read_label_map(args.labels))
    indices = np.arange(len(data.paths))
    if args.split == "validation":
        indices = ds.validation_split(data, args.val_fraction, args.seed)[1]
    indices, targets = ds.restrict_to_labels(data, indices, artifact.labels)
    size = engines["tensorflow/f32"].input_size
    pixels = ds.load_pixels([data.paths[i] for i in indices], size)
    scores = {name: run_engine(engine.predict, pixels)["probabilities"] for name, engine in engines.items()}
    reference = scores["tensorflow/f32"]
    report = {}
    for name, probabilities in scores.items():
        report[name] = {
            "images": len(targets),
            "top1_accuracy": round(float(np.mean(probabilities.argmax(1) == targets)), 4),
            "top1_agreement_with_tensorflow": round(float(np.mean(probabilities.argmax(1) == reference.argmax(1))), 4),
            "largest_probability_difference": round(float(np.abs(probabilities - reference).max()), 5),
        }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
