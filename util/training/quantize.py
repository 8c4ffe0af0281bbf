"""Quantize a model directory's OpenVINO IR to int8 with NNCF post-training quantization.

    python -m util.training.quantize plantnet/ --data ../shared/data/plantvillage/train \
        --labels ../shared/data/plantvillage/labels.tsv [--images 300]

Calibrates on ``--images`` training images (never validation images: the split is train.py's,
from the same --seed and --val-fraction), preprocessed by util.leaf exactly as the service does,
and writes the int8 IR into the model directory (util/model.py names the file), then calibrates
the int8 engine's own in-domain verdict (util/training/calibrate.py; pass ``--outliers`` as there). The service
runs it with ``PLANTNET_PRECISION=int8``, and by default (``auto``) whenever the model
directory holds it: ship it only if bench/agreement.py shows it agrees with f32.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from util import leaf
from util import model as model_dir
from util.config import Settings
from util.engine import openvino_ir
from util.training import dataset as ds

log = logging.getLogger("quantize")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path, help="model directory")
    ds.add_dataset_arguments(p)
    p.add_argument("--images", type=int, default=300, help="training images to calibrate on")
    p.add_argument("--outliers", type=Path, help="non-leaf photos for the int8 verdict's calibration (calibrate.py)")
    return p.parse_args(argv)


def calibration_pixels(args: argparse.Namespace, size: int) -> np.ndarray:
    """``--images`` training images spread over every class, as float32 model input."""
    data = ds.scan_folder(args.data, ds.read_label_map(args.labels))
    train_idx, _ = ds.stratified_split(data.targets, args.val_fraction, args.seed)
    chosen = np.random.default_rng(args.seed).permutation(train_idx)[: args.images]
    pixels = ds.load_pixels([data.paths[i] for i in sorted(chosen)], size)
    return leaf.scale_pixels(pixels.astype(np.float32))


def quantize(args: argparse.Namespace) -> Path:
    import nncf
    import openvino as ov

    artifact = model_dir.find_artifact(args.model)
    network = ov.Core().read_model(openvino_ir(artifact, Settings.from_env(model_dir=args.model).openvino_cache))
    size = network.inputs[0].get_partial_shape()[1].get_length()
    pixels = calibration_pixels(args, size)
    dataset = nncf.Dataset(list(pixels), lambda image: image[None])
    quantized = nncf.quantize(network, dataset, subset_size=len(pixels), preset=nncf.QuantizationPreset.MIXED)
    out = artifact.directory / model_dir.INT8_IR
    out.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, out, compress_to_fp16=False)
    model_dir.update_metadata(artifact.directory, int8={"calibration_images": len(pixels), "tool": "nncf"})
    print(f"wrote {out} (calibrated on {len(pixels)} training images)")
    return out


def calibrate_int8_verdict(args: argparse.Namespace) -> dict:
    """The int8 engine's own in-domain calibration (util/model.py keeps it apart from f32's)."""
    from util.training import calibrate, ood

    return calibrate.calibrate(argparse.Namespace(**vars(args), precision="int8", acceptance=ood.TARGET_ACCEPTANCE))


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING)
    args = parse_args(argv)
    quantize(args)
    calibrate_int8_verdict(args)


if __name__ == "__main__":
    main()
