"""Train the PlantNet leaf-disease classifier: InceptionV3 from scratch, on a CPU, resumable.

    python train.py --data ../shared/data/plantvillage/train \
        --labels ../shared/data/plantvillage/labels.tsv \
        --outliers ../shared/data/ood --out plantnet/

Reads a folder-per-class dataset (the PlantVillage layout), holds out a stratified, seeded
validation split, trains, recalibrates batch norm, calibrates the out-of-domain verdict and
writes the model directory the service loads (util/model.py owns its layout) with its model
card. Stopped runs continue with ``--resume``; a finished run given ``--resume`` only redoes
the steps after training.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from util import leaf
from util.training import dataset as ds
from util.training.augment import AugmentConfig, leaf_masks, make_augmenter

log = logging.getLogger("train")


# ## Configuration: parsed once, frozen, rendered into the model card.


@dataclass(frozen=True)
class TrainConfig:
    data: Path
    labels: Path | None
    outliers: Path | None
    out: Path
    work_dir: Path
    input_size: int = 128
    epochs: int = 60
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 2.0
    label_smoothing: float = 0.05
    ema_momentum: float = 0.998
    val_fraction: float = 0.1
    seed: int = 1337  # the validation split's seed: every run to be compared must share it
    train_seed: int | None = None  # initialisation, shuffling, augmentation; None: same as ``seed``
    min_images: int = 10
    patience: int = 20
    max_minutes: float = 0.0
    precision: str = "mixed_bfloat16"
    init_from: Path | None = None
    finish_from: Path | None = None
    resume: bool = False
    verbose: int = 2
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    @property
    def training_seed(self) -> int:
        return self.seed if self.train_seed is None else self.train_seed

    @property
    def command(self) -> str:
        """The train.py command that reproduces this run (without --resume)."""
        return " ".join(["python train.py", *(a for a in getattr(self, "_argv", []) if a != "--resume")])


def parse_args(argv: list[str]) -> TrainConfig:
    defaults = TrainConfig(data=Path(), labels=None, outliers=None, out=Path(), work_dir=Path())
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ds.add_dataset_arguments(p)
    p.add_argument("--outliers", type=Path, help="folder of photos that are no leaf of ours (../shared/data/ood)")
    p.add_argument("--out", type=Path, default=Path("plantnet"), help="model directory to write")
    p.add_argument("--work-dir", type=Path, default=Path("runs/train"), help="checkpoints, logs, caches")
    for name in ("input_size", "epochs", "batch_size", "min_images", "patience", "verbose"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    for name in ("learning_rate", "weight_decay", "warmup_epochs", "label_smoothing", "ema_momentum", "max_minutes"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(defaults, name))
    p.add_argument(
        "--train-seed",
        type=int,
        help="seed of initialisation, shuffling and augmentation (default: --seed); a second seed keeps the split",
    )
    p.add_argument("--precision", choices=["float32", "mixed_bfloat16"], default=defaults.precision)
    p.add_argument("--init-from", type=Path, help="start from the weights of this .keras model (same architecture)")
    p.add_argument(
        "--finish-from",
        type=Path,
        help="skip training: recalibrate, evaluate, calibrate and write these .keras weights (e.g. a model soup)",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --work-dir")
    args = vars(p.parse_args(argv))
    config = TrainConfig(**args)
    object.__setattr__(config, "_argv", list(argv))
    return config


# ## Data: decoded once through the service's own pipeline, cached as uint8.


@dataclass(frozen=True)
class TrainingData:
    dataset: ds.Dataset
    train_idx: np.ndarray
    val_idx: np.ndarray
    pixels: np.ndarray  # N x S x S x 3 uint8, every image of ``dataset``
    masks: np.ndarray  # N x S x S x 1 uint8 leaf masks (zeros: do not composite)
    outliers: np.ndarray  # training share of the non-leaf photos, M x S x S x 3 uint8
    held_out_outliers: np.ndarray  # never trained on: out-of-domain checks and the field proxy


def load_data(config: TrainConfig) -> TrainingData:
    dataset = ds.scan_folder(config.data, ds.read_label_map(config.labels), config.min_images)
    train_idx, val_idx = ds.stratified_split(dataset.targets, config.val_fraction, config.seed)
    cache = config.work_dir / "cache"
    pixels = ds.load_pixels(dataset.paths, config.input_size, cache)
    masks_file = cache / f"masks-{config.input_size}-{len(pixels)}.npy"
    if not masks_file.exists():
        cache.mkdir(parents=True, exist_ok=True)
        np.save(masks_file, leaf_masks(pixels))
    outlier_train, outlier_held = ds.split_outliers(ds.list_images(config.outliers) if config.outliers else [])
    empty = np.zeros((0, config.input_size, config.input_size, 3), np.uint8)
    log.info(
        "%d classes, %d train / %d validation images, %d + %d non-leaf photos; left out: %s",
        len(dataset.labels),
        len(train_idx),
        len(val_idx),
        len(outlier_train),
        len(outlier_held),
        dataset.excluded or "none",
    )
    return TrainingData(
        dataset,
        train_idx,
        val_idx,
        pixels,
        np.load(masks_file),
        ds.load_pixels(outlier_train, config.input_size, cache) if outlier_train else empty,
        ds.load_pixels(outlier_held, config.input_size, cache) if outlier_held else empty,
    )


def make_datasets(config: TrainConfig, data: TrainingData):
    """Training batches mix leaves (one-hot) and non-leaf photos (uniform target); validation is plain."""
    import tensorflow as tf

    classes = len(data.dataset.labels)
    idx = data.train_idx
    leaves = tf.data.Dataset.from_tensor_slices(
        (data.pixels[idx], data.masks[idx], tf.one_hot(data.dataset.targets[idx], classes))
    ).shuffle(len(idx), seed=config.training_seed, reshuffle_each_iteration=True)
    parts, weights = [leaves.repeat()], [1.0]
    backgrounds = data.outliers if len(data.outliers) else data.pixels[idx][:1] * 0 + 127
    if len(data.outliers) and config.augment.outlier_share > 0:
        outliers = tf.data.Dataset.from_tensor_slices(
            (
                data.outliers,
                np.zeros((*data.outliers.shape[:3], 1), np.uint8),
                np.full((len(data.outliers), classes), 1.0 / classes, np.float32),
            )
        ).shuffle(len(data.outliers), seed=config.training_seed + 1, reshuffle_each_iteration=True)
        parts.append(outliers.repeat())
        weights = [1.0 - config.augment.outlier_share, config.augment.outlier_share]
    train = (
        tf.data.Dataset.sample_from_datasets(parts, weights, seed=config.training_seed)
        .batch(config.batch_size, drop_remainder=True)
        .map(make_augmenter(config.augment, backgrounds, config.training_seed), num_parallel_calls=1)
        .prefetch(2)
    )
    val = (
        tf.data.Dataset.from_tensor_slices(
            (data.pixels[data.val_idx], tf.one_hot(data.dataset.targets[data.val_idx], classes))
        )
        .batch(128)
        .map(lambda x, y: (leaf.scale_pixels(tf.cast(x, tf.float32)), y))
        .prefetch(1)
    )
    return train, val


# ## The model: InceptionV3 from scratch, float32 logits (bf16 softmax overflows).


def make_model(input_size: int, num_classes: int):
    """InceptionV3 backbone, global average pooling, dropout and float32 logits (training output)."""
    import keras
    from keras import layers

    inputs = keras.Input((input_size, input_size, 3), name="pixels")
    backbone = keras.applications.InceptionV3(include_top=False, weights=None, input_tensor=inputs, pooling="avg")
    x = layers.Dropout(0.3, name="head_dropout")(backbone.output)
    logits = layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name="plantnet_inception_v3")


def make_optimizer(config: TrainConfig, steps_per_epoch: int):
    """AdamW with warm-up and cosine decay, global-norm clipping and weight EMA; no decay on BN and biases."""
    import keras

    total = steps_per_epoch * config.epochs
    warmup = int(steps_per_epoch * config.warmup_epochs)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.learning_rate * 0.05,
        decay_steps=max(1, total - warmup),
        warmup_target=config.learning_rate,
        warmup_steps=warmup,
        alpha=0.01,
    )
    optimizer = keras.optimizers.AdamW(
        schedule,
        weight_decay=config.weight_decay,
        global_clipnorm=1.0,
        use_ema=True,
        ema_momentum=config.ema_momentum,
    )
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer


class WallClock:
    """Keras has no wall-clock callback: log each epoch's seconds (for the card), stop after ``minutes``."""

    def __new__(cls, minutes: float):
        import keras

        class _WallClock(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.started = time.monotonic()

            def on_epoch_begin(self, epoch, logs=None):
                self.epoch_started = time.monotonic()

            def on_epoch_end(self, epoch, logs=None):
                if logs is not None:
                    logs["seconds"] = round(time.monotonic() - self.epoch_started, 1)
                if minutes and time.monotonic() - self.started >= 60 * minutes:
                    log.info("time budget of %.0f min reached after epoch %d: stopping", minutes, epoch + 1)
                    self.model.stop_training = True

        return _WallClock()


def make_callbacks(config: TrainConfig):
    """Stock Keras parts; order matters: back up the raw weights, then swap in EMA for checkpoint and eval."""
    import keras

    work = config.work_dir
    return [
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.BackupAndRestore(work / "backup", delete_checkpoint=False),
        keras.callbacks.SwapEMAWeights(swap_on_epoch=True),
        keras.callbacks.ModelCheckpoint(work / "best.keras", monitor="val_accuracy", save_best_only=True),
        WallClock(config.max_minutes),  # before CSVLogger, which then writes the epoch's seconds
        keras.callbacks.CSVLogger(work / "history.csv", append=True),
        keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=config.patience),
    ]


def fit(config: TrainConfig, data: TrainingData):
    import keras

    train_ds, val_ds = make_datasets(config, data)
    steps = len(data.train_idx) // config.batch_size
    model = make_model(config.input_size, len(data.dataset.labels))
    if config.init_from is not None:
        start = keras.saving.load_model(config.init_from, compile=False)
        model.set_weights(start.get_weights())
        log.info("initialised from %s", config.init_from)
    model.compile(
        optimizer=make_optimizer(config, steps),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
    )
    started = time.monotonic()
    model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=config.epochs,
        steps_per_epoch=steps,
        verbose=config.verbose,
        callbacks=make_callbacks(config),
    )
    log.info("fit ended after %.1f min in this process", (time.monotonic() - started) / 60)
    if not np.all([np.isfinite(w).all() for w in model.get_weights()]):
        raise SystemExit("training diverged (NaN weights); resume from the last backup with --precision float32")
    return model


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
    from util.training.finish import finish

    finish(config, data, trained)


if __name__ == "__main__":
    main()
