"""Train the PlantNet leaf-disease classifier: InceptionV3 from scratch, on a CPU, resumable.

    python train.py --data ../shared/data/plantvillage/train \
        --labels ../shared/data/plantvillage/labels.tsv \
        --outliers ../shared/data/ood --out plantnet/

Reads a folder-per-class dataset (the PlantVillage layout), holds out a stratified, seeded
validation split, trains, recalibrates batch norm, calibrates the out-of-domain verdict and
writes the model directory the service loads (util/model_dir.py owns its layout) with its model
card. Stopped runs continue with ``--resume``; a finished run given ``--resume`` only redoes
the steps after training.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import asdict
from pathlib import Path

from training import data as ds
from training.augment import AugmentConfig
from training.recipe import TrainConfig, fit, load_data

log = logging.getLogger("train")


def parse_args(argv: list[str]) -> TrainConfig:
    defaults = TrainConfig(data=Path(), labels=None, outliers=None, out=Path(), work_dir=Path())
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ds.add_dataset_arguments(p)
    p.add_argument("--outliers", type=Path, help="folder of photos that are no leaf of ours (../shared/data/ood)")
    p.add_argument("--out", type=Path, default=Path("plantnet"), help="model directory to write")
    p.add_argument("--work-dir", type=Path, default=Path("runs/train"), help="checkpoints, logs, caches")
    for name in ("input_size", "epochs", "batch_size", "min_images", "patience", "verbose", "stop_after_epochs"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    for name in ("learning_rate", "weight_decay", "warmup_epochs", "label_smoothing", "ema_momentum", "max_minutes"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(defaults, name))
    p.add_argument(
        "--train-seed",
        type=int,
        help="seed of initialisation, shuffling and augmentation (default: --seed); a second seed keeps the split",
    )
    p.add_argument("--precision", choices=["float32", "mixed_bfloat16"], default=defaults.precision)
    p.add_argument("--field", type=Path, help="field photos: class folders named as in --data, and _other_plants/")
    for name in ("field_share", "field_val_fraction"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(defaults, name))
    p.add_argument(
        "--synthetic-outliers",
        type=int,
        default=defaults.synthetic_outliers,
        help="synthetic non-leaf images of each kind (noise, solid colour, shuffled leaf patches) to train on",
    )
    for name in ("zoom_in", "aspect_jitter", "blur_share", "outlier_share", "composite_share"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(AugmentConfig(), name))
    p.add_argument("--init-from", type=Path, help="start from the weights of this .keras model (same architecture)")
    p.add_argument(
        "--finish-from",
        type=Path,
        help="skip training: recalibrate, evaluate, calibrate and write these .keras weights (e.g. a model soup)",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --work-dir")
    args = vars(p.parse_args(argv))
    augment_names = ("zoom_in", "aspect_jitter", "blur_share", "outlier_share", "composite_share")
    augment = AugmentConfig(**{name: args.pop(name) for name in augment_names})
    config = TrainConfig(**args, augment=augment)
    object.__setattr__(config, "_argv", list(argv))
    return config


def main(argv: list[str] | None = None) -> None:
    import keras

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = parse_args(sys.argv[1:] if argv is None else argv)
    keras.utils.set_random_seed(config.training_seed)
    keras.mixed_precision.set_global_policy(config.precision)
    backup = config.work_dir / "backup"
    if backup.exists() and not config.resume and config.finish_from is None:
        raise SystemExit(f"{config.work_dir} holds a run: pass --resume or a new --work-dir")
    config.work_dir.mkdir(parents=True, exist_ok=True)
    (config.work_dir / "config.txt").write_text(repr(asdict(config)) + "\n")
    data = load_data(config)
    if config.finish_from is not None:
        trained = keras.saving.load_model(config.finish_from, compile=False)
    else:
        trained = fit(config, data)
    from training.finish import finish

    finish(config, data, trained)


if __name__ == "__main__":
    main()
