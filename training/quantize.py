"""Quantize a model directory's OpenVINO IR to int8 with NNCF post-training quantization.

    python -m training.quantize plantnet/ --data ../shared/data/plantvillage/train \
        --labels ../shared/data/plantvillage/labels.tsv [--images 300]

Calibrates on ``--images`` training images (never validation images: the split is train.py's,
from the same --seed and --val-fraction), preprocessed by util.leaf exactly as the service does,
and writes the int8 IR into the model directory (util/model_dir.py names the file), then calibrates
the int8 engine's own in-domain verdict (training/calibrate.py; pass ``--outliers`` as there). The service
runs it with ``PLANTNET_PRECISION=int8``, and by default (``auto``) whenever the model
directory holds it: ship it only if bench/agreement.py shows it agrees with f32.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from training import data as ds
from util import leaf, model_dir
from util.config import Settings
from util.engine import openvino_ir

log = logging.getLogger("quantize")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path, help="model directory")
    ds.add_dataset_arguments(p)
    p.add_argument("--images", type=int, default=300, help="training images to calibrate on")
    p.add_argument("--outliers", type=Path, help="non-leaf photos for the int8 verdict's calibration (calibrate.py)")
    p.add_argument(
        "--field",
        type=Path,
        help="field photos: the int8 verdict gets the finishing's field operating point and crop-hint point",
    )
    p.add_argument("--field-val-fraction", type=float, default=ds.FIELD_VAL_FRACTION, help="as train.py's")
    p.add_argument(
        "--accuracy-control",
        action="store_true",
        help="NNCF quantize_with_accuracy_control: keep ops in float until validation top-1 drops <= --max-drop",
    )
    p.add_argument("--max-drop", type=float, default=0.003, help="absolute top-1 drop allowed with --accuracy-control")
    return p.parse_args(argv)


def calibration_pixels(args: argparse.Namespace, size: int) -> np.ndarray:
    """``--images`` training images spread over every class, as float32 model input."""
    data = ds.scan_folder(args.data, ds.read_label_map(args.labels))
    train_idx, _ = ds.validation_split(data, args.val_fraction, args.seed)
    chosen = np.random.default_rng(args.seed).permutation(train_idx)[: args.images]
    pixels = ds.load_pixels([data.paths[i] for i in sorted(chosen)], size)
    return leaf.scale_pixels(pixels.astype(np.float32))


def validation_set(args: argparse.Namespace, size: int, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The validation split's images of the model's classes and their targets in the model's label order."""
    data = ds.scan_folder(args.data, ds.read_label_map(args.labels))
    _, val_idx = ds.validation_split(data, args.val_fraction, args.seed)
    kept, targets = ds.restrict_to_labels(data, val_idx, labels)  # left-out classes would shift the targets
    pixels = ds.load_pixels([data.paths[i] for i in kept], size)
    return leaf.scale_pixels(pixels.astype(np.float32)), targets


def top1_of(compiled, pairs) -> float:
    """NNCF's validation function: top-1 of a compiled OpenVINO model over (image, target) pairs."""
    output = compiled.outputs[0]  # probabilities come first (util.engine.OUTPUT_NAMES)
    hits = [int(compiled(image[None])[output].argmax() == target) for image, target in pairs]
    return float(np.mean(hits))


def quantize(args: argparse.Namespace) -> Path:
    import nncf
    import openvino as ov

    artifact = model_dir.find_artifact(args.model)
    network = ov.Core().read_model(openvino_ir(artifact, Settings.from_env(model_dir=args.model).openvino_cache))
    size = network.inputs[0].get_partial_shape()[1].get_length()
    pixels = calibration_pixels(args, size)
    dataset = nncf.Dataset(list(pixels), lambda image: image[None])
    if args.accuracy_control:
        images, targets = validation_set(args, size, list(artifact.labels))
        validation = nncf.Dataset(list(zip(images, targets, strict=True)), lambda pair: pair[0][None])
        quantized = nncf.quantize_with_accuracy_control(
            network,
            dataset,
            validation,
            validation_fn=lambda compiled, pairs: top1_of(compiled, [(p[0], p[1]) for p in pairs]),
            max_drop=args.max_drop,
            drop_type=nncf.DropType.ABSOLUTE,
            subset_size=len(pixels),
            preset=nncf.QuantizationPreset.MIXED,
        )
    else:
        quantized = nncf.quantize(network, dataset, subset_size=len(pixels), preset=nncf.QuantizationPreset.MIXED)
    out = artifact.directory / model_dir.INT8_IR
    out.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, out, compress_to_fp16=False)
    model_dir.update_metadata(artifact.directory, int8={"calibration_images": len(pixels), "tool": "nncf"})
    print(f"wrote {out} (calibrated on {len(pixels)} training images)")
    return out


def calibrate_int8_verdict(args: argparse.Namespace) -> dict:
    """The int8 engine's own in-domain calibration (util/model_dir.py keeps it apart from f32's)."""
    from training import calibrate, ood

    return calibrate.calibrate(argparse.Namespace(**vars(args), precision="int8", acceptance=ood.TARGET_ACCEPTANCE))


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING)
    args = parse_args(argv)
    quantize(args)
    calibrate_int8_verdict(args)


if __name__ == "__main__":
    main()
