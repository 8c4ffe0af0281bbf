"""The training recipe: configuration, data (lab and field photos), the network, the optimiser and the fit.

train.py parses a command line into a TrainConfig and calls ``load_data``, ``fit`` and the finishing
(training/finish.py); the finishing builds the serving model with ``make_model`` from here. Nothing
here imports train.py.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path

import numpy as np

from training import data as ds
from training import ood
from training.augment import AugmentConfig, leaf_masks, make_augmenter
from util import leaf

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
    stop_after_epochs: int = 0  # end after this many epochs of the ``epochs``-long schedule (0: run it all)
    precision: str = "mixed_bfloat16"
    field: Path | None = None  # field photos: class folders as in --data, plus _other_plants/
    field_share: float = 0.35  # batch share of field photos (they are few: oversampled)
    field_val_fraction: float = ds.FIELD_VAL_FRACTION  # of each class's field photos, never trained on
    synthetic_outliers: int = 0  # per kind (noise, solid colour, shuffled leaf patches) trained towards uniform
    init_from: Path | None = None
    finish_from: Path | None = None
    resume: bool = False
    verbose: int = 2
    augment: AugmentConfig = dataclass_field(default_factory=AugmentConfig)

    @property
    def training_seed(self) -> int:
        return self.seed if self.train_seed is None else self.train_seed

    @property
    def command(self) -> str:
        """The train.py command that reproduces this run (without --resume)."""
        return " ".join(["python train.py", *(a for a in getattr(self, "_argv", []) if a != "--resume")])


# ## Data: decoded once through the service's own pipeline, cached as uint8.


@dataclass(frozen=True)
class FieldPhotos:
    """Field photos of our classes (targets index the lab dataset's labels), split by near-copy groups."""

    pixels: np.ndarray  # N x S x S x 3 uint8
    targets: np.ndarray
    train_idx: np.ndarray
    calibration_idx: np.ndarray  # held out: chooses the candidate and the verdict's operating point
    report_idx: np.ndarray  # held out: judges, never chooses

    @classmethod
    def empty(cls, size: int) -> FieldPhotos:
        none = np.zeros(0, np.int64)
        return cls(np.zeros((0, size, size, 3), np.uint8), none, none, none, none)


@dataclass(frozen=True)
class TrainingData:
    dataset: ds.Dataset
    train_idx: np.ndarray
    val_idx: np.ndarray
    pixels: np.ndarray  # N x S x S x 3 uint8, every image of ``dataset``
    masks: np.ndarray  # N x S x S x 1 uint8 leaf masks (zeros: do not composite)
    outliers: np.ndarray  # training share of the non-leaf photos, then any synthetic ones, M x S x S x 3 uint8
    held_out_outliers: np.ndarray  # never trained on: out-of-domain checks and the field proxy
    field: FieldPhotos
    other_plants_held_out: np.ndarray  # field photos of plants we do not serve, never trained on
    synthetic_outliers: int  # how many of ``outliers`` are synthetic (the card counts the real ones)


def load_field(config: TrainConfig, dataset: ds.Dataset, cache: Path) -> FieldPhotos:
    """The field photos of classes the model learns, split by training/data.field_split."""
    if config.field is None:
        return FieldPhotos.empty(config.input_size)
    split = ds.field_split(config.field, dataset.folders, config.field_val_fraction, config.seed)
    pixels = ds.load_pixels(split.paths, config.input_size, cache)
    return FieldPhotos(pixels, split.targets, split.train_idx, split.calibration_idx, split.report_idx)


def load_data(config: TrainConfig) -> TrainingData:
    dataset = ds.scan_folder(config.data, ds.read_label_map(config.labels), config.min_images)
    train_idx, val_idx = ds.validation_split(dataset, config.val_fraction, config.seed)
    cache = config.work_dir / "cache"
    pixels = ds.load_pixels(dataset.paths, config.input_size, cache)
    masks_file = cache / f"masks-{config.input_size}-{len(pixels)}.npy"
    if not masks_file.exists():
        cache.mkdir(parents=True, exist_ok=True)
        np.save(masks_file, leaf_masks(pixels))
    outlier_train, outlier_held = ds.split_outliers(ds.list_images(config.outliers) if config.outliers else [])
    other_train, other_held = ds.split_outliers(ds.other_plant_photos(config.field))
    field = load_field(config, dataset, cache)
    size = config.input_size
    empty = np.zeros((0, size, size, 3), np.uint8)
    outliers = [ds.load_pixels(p, size, cache) for p in (outlier_train, other_train) if p]
    synthetic = []
    if config.synthetic_outliers:
        # Its own seed: the selection set's synthetic photos (ood.selection_unknowns) must stay unseen.
        made = ood.synthetic_outliers(pixels[train_idx], config.synthetic_outliers, config.seed + 101)
        synthetic = list(made.values())
    log.info(
        "%d classes, %d train / %d validation images, %d / %d / %d field photos (train / calibration / report), "
        "%d + %d non-leaf photos, %d + %d other plants; left out: %s",
        len(dataset.labels),
        len(train_idx),
        len(val_idx),
        len(field.train_idx),
        len(field.calibration_idx),
        len(field.report_idx),
        len(outlier_train),
        len(outlier_held),
        len(other_train),
        len(other_held),
        dataset.excluded or "none",
    )
    return TrainingData(
        dataset,
        train_idx,
        val_idx,
        pixels,
        np.load(masks_file),
        np.concatenate(outliers + synthetic) if outliers or synthetic else empty,
        ds.load_pixels(outlier_held, size, cache) if outlier_held else empty,
        field,
        ds.load_pixels(other_held, size, cache) if other_held else empty,
        sum(len(kind) for kind in synthetic),
    )


def make_datasets(config: TrainConfig, data: TrainingData):
    """Training batches mix lab leaves, field photos (one-hot) and non-leaf photos (uniform target);
    validation is the plain lab split."""
    import tensorflow as tf

    classes = len(data.dataset.labels)

    def source(pixels: np.ndarray, masks: np.ndarray, targets: np.ndarray, seed: int):
        return (
            tf.data.Dataset.from_tensor_slices((pixels, masks, targets))
            .shuffle(len(pixels), seed=seed, reshuffle_each_iteration=True)
            .repeat()
        )

    idx = data.train_idx
    one_hot = np.eye(classes, dtype=np.float32)
    parts = [source(data.pixels[idx], data.masks[idx], one_hot[data.dataset.targets[idx]], config.training_seed)]
    weights = [1.0]
    field_idx = data.field.train_idx
    if len(field_idx) and config.field_share > 0:
        field_pixels = data.field.pixels[field_idx]
        no_masks = np.zeros((*field_pixels.shape[:3], 1), np.uint8)  # field photos are never composited
        parts.append(source(field_pixels, no_masks, one_hot[data.field.targets[field_idx]], config.training_seed + 2))
        weights.append(config.field_share)
    if len(data.outliers) and config.augment.outlier_share > 0:
        no_masks = np.zeros((*data.outliers.shape[:3], 1), np.uint8)
        uniform = np.full((len(data.outliers), classes), 1.0 / classes, np.float32)
        parts.append(source(data.outliers, no_masks, uniform, config.training_seed + 1))
        weights.append(config.augment.outlier_share)
    weights[0] = 1.0 - sum(weights[1:])
    backgrounds = data.outliers if len(data.outliers) else data.pixels[idx][:1] * 0 + 127
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
    """Keras has no wall-clock callback: log each epoch's seconds (for the card), stop after ``minutes`` or
    after ``epochs`` epochs (a schedule cut short the same way on any machine)."""

    def __new__(cls, minutes: float, epochs: int = 0):
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
                if epochs and epoch + 1 >= epochs:
                    log.info("stopping after epoch %d as asked (--stop-after-epochs)", epoch + 1)
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
        # Before CSVLogger, which then writes the epoch's seconds.
        WallClock(config.max_minutes, config.stop_after_epochs),
        keras.callbacks.CSVLogger(work / "history.csv", append=True),
        keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=config.patience),
    ]


def fit(config: TrainConfig, data: TrainingData):
    import keras

    train_ds, val_ds = make_datasets(config, data)
    steps = (len(data.train_idx) + len(data.field.train_idx)) // config.batch_size
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
