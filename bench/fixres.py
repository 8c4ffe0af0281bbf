"""FixRes probe: ``python -m bench.fixres --data DIR --labels TSV [--model plantnet] SIZE...``.

Runs a model directory's weights at other input sizes (Touvron et al. 2019, "Fixing the train-test
resolution discrepancy"): for each SIZE, validation top-1 as is and after recalibrating batch norm
on training images at that size. Measures only; the service serves the size the model was saved at.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from training import data as ds
from training.finish import serving_model, top1
from training.recalibrate import recalibrate_batch_norm
from util.model_dir import find_artifact

RECALIBRATION_BATCHES = 60  # of 64 training images: enough for stable batch-norm statistics


def main() -> None:
    import keras

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ds.add_dataset_arguments(p)
    p.add_argument("--model", type=Path, default=Path("plantnet"))
    p.add_argument("sizes", type=int, nargs="+", help="input sizes to try, e.g. 128 160")
    args = p.parse_args()

    artifact = find_artifact(args.model)
    trained = keras.saving.load_model(args.model / "model.keras", compile=False)
    data = ds.scan_folder(args.data, ds.read_label_map(args.labels))
    train_idx, val_idx = ds.validation_split(data, args.val_fraction, args.seed)
    val_idx, targets = ds.restrict_to_labels(data, val_idx, artifact.labels)
    train_idx, _ = ds.restrict_to_labels(data, train_idx, artifact.labels)
    for size in args.sizes:
        model = serving_model(trained, size, len(artifact.labels))
        validation = ds.load_pixels([data.paths[i] for i in val_idx], size)
        before = top1(model, validation, targets)
        training = ds.load_pixels([data.paths[i] for i in train_idx], size)
        recalibrate_batch_norm(model, training, args.seed, max_batches=RECALIBRATION_BATCHES)
        after = top1(model, validation, targets)
        print(f"{size} px: validation top-1 {before:.2%} as is, {after:.2%} after batch-norm recalibration")


if __name__ == "__main__":
    main()
