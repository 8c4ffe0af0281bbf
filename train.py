"""Train the PlantNet leaf-disease classifier: an InceptionV3 backbone with a softmax head.

Reads a folder-per-class dataset (the PlantVillage layout), holds out a stratified, seeded
validation split, trains from scratch (or from local ImageNet weights with ``--weights``),
checkpoints every epoch and writes the artifact the service loads: ``model.keras``,
``labels.txt`` (output order), ``MODEL.md`` and ``confusion_matrix.png``.

    python train.py --data ../shared/data/plantvillage/train \
        --labels ../shared/data/plantvillage/labels.tsv --out plantnet/

Pixels go through util.leaf exactly as in the service; augmentation runs beside the model
in the input pipeline, so the saved model holds only what inference needs.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np

from util import dataset as ds
from util import leaf, report

DEFAULT_INPUT_SIZE = 128
DEFAULT_MIN_IMAGES = 10
CHECKPOINT = "checkpoint.keras"
STATE = "state.json"

log = logging.getLogger("train")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ds.add_dataset_arguments(p)
    p.add_argument("--out", type=Path, default=Path("plantnet"), help="artifact directory")
    p.add_argument("--work-dir", type=Path, default=Path("runs/train"), help="checkpoints, cache")
    p.add_argument("--input-size", type=int, default=DEFAULT_INPUT_SIZE, help="pixels, >= 75")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--label-smoothing", type=float, default=0.05)
    p.add_argument(
        "--min-images",
        type=int,
        default=DEFAULT_MIN_IMAGES,
        help="leave out classes with fewer images (reported in MODEL.md)",
    )
    p.add_argument("--patience", type=int, default=8, help="early stopping on val accuracy")
    p.add_argument("--max-minutes", type=float, default=0, help="stop after the epoch that passes this")
    p.add_argument("--precision", choices=["float32", "mixed_bfloat16"], default="float32")
    p.add_argument("--weights", type=Path, help="local ImageNet InceptionV3 no-top weights (.h5)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--verbose", type=int, default=2, help="Keras fit verbosity: 1 bar, 2 line per epoch")
    return p.parse_args(argv)


def make_model(input_size: int, num_classes: int, weights: Path | None = None):
    """InceptionV3 backbone, global average pooling, dropout and a float32 softmax head."""
    import keras
    from keras import layers

    inputs = keras.Input((input_size, input_size, 3), name="pixels")
    backbone = keras.applications.InceptionV3(include_top=False, weights=None, input_tensor=inputs, pooling="avg")
    if weights is not None:
        backbone.load_weights(weights, skip_mismatch=True)
    x = layers.Dropout(0.3, name="head_dropout")(backbone.output)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name="plantnet_inception_v3")


def make_augmenter(seed: int):
    """Photo-like variation for leaves: any orientation, framing, light and a little hue."""
    import keras
    import tensorflow as tf
    from keras import layers

    geometric = keras.Sequential(
        [
            layers.RandomFlip("horizontal_and_vertical", seed=seed),
            layers.RandomRotation(0.5, fill_mode="reflect", seed=seed),
            layers.RandomZoom((-0.25, 0.1), fill_mode="reflect", seed=seed),
            layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=seed),
            layers.RandomBrightness(0.2, value_range=(0, 255), seed=seed),
            layers.RandomContrast(0.2, seed=seed),
        ],
        name="augment",
    )

    def augment(pixels, target):
        x = geometric(tf.cast(pixels, tf.float32), training=True)
        x = tf.image.random_hue(x / 255.0, 0.04, seed=seed) * 255.0
        return leaf.scale_pixels(tf.clip_by_value(x, 0.0, 255.0)), target

    return augment


def make_datasets(pixels, targets, train_idx, val_idx, num_classes, batch_size, seed):
    import tensorflow as tf

    def one_hot(x, y):
        return x, tf.one_hot(y, num_classes)

    def scale(x, y):
        return leaf.scale_pixels(tf.cast(x, tf.float32)), y

    train = (
        tf.data.Dataset.from_tensor_slices((pixels[train_idx], targets[train_idx]))
        .shuffle(len(train_idx), seed=seed, reshuffle_each_iteration=True)
        .map(one_hot)
        .batch(batch_size, drop_remainder=True)
        .map(make_augmenter(seed), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    val = (
        tf.data.Dataset.from_tensor_slices((pixels[val_idx], targets[val_idx]))
        .map(one_hot)
        .batch(64)
        .map(scale)
        .prefetch(tf.data.AUTOTUNE)
    )
    return train, val


def make_schedule(learning_rate: float, steps_per_epoch: int, args: argparse.Namespace):
    import keras

    total = steps_per_epoch * args.epochs
    warmup = int(steps_per_epoch * args.warmup_epochs)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=learning_rate * 0.1,
        decay_steps=max(1, total - warmup),
        warmup_target=learning_rate,
        warmup_steps=warmup,
        alpha=0.01,
    )


class EpochState:
    """Record epoch number, history and best score beside the checkpoint so --resume can go on."""

    def __init__(self, path: Path):
        self.path = path
        self.data = (
            json.loads(path.read_text())
            if path.exists()
            else {"epoch": 0, "history": [], "best_val_accuracy": -1.0, "wall_seconds": 0.0}
        )

    def save(self) -> None:
        self.path.write_text(json.dumps(self.data, indent=1))


def make_callbacks(args, work: Path, state: EpochState, best_path: Path):
    import keras

    started = time.monotonic()
    wall_before = state.data["wall_seconds"]

    class Bookkeeping(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs = {k: float(v) for k, v in (logs or {}).items()}
            if not math.isfinite(logs.get("loss", 0.0)):
                log.error("epoch %d: loss is %s; keeping the previous checkpoint", epoch + 1, logs.get("loss"))
                state.data["diverged"] = True
                state.save()
                self.model.stop_training = True
                return
            state.data["epoch"] = epoch + 1
            state.data["history"].append({"epoch": epoch + 1, **logs})
            state.data["wall_seconds"] = wall_before + time.monotonic() - started
            if logs.get("val_accuracy", -1) > state.data["best_val_accuracy"]:
                state.data["best_val_accuracy"] = logs["val_accuracy"]
                state.data["best_epoch"] = epoch + 1
                self.model.save(best_path)
            self.model.save(work / CHECKPOINT)
            state.save()
            best = state.data["best_val_accuracy"]
            since_best = epoch + 1 - state.data.get("best_epoch", 0)
            minutes = state.data["wall_seconds"] / 60
            log.info("epoch %d: best val_accuracy %.4f, %.1f min", epoch + 1, best, minutes)
            if since_best >= args.patience:
                log.info("no improvement for %d epochs: stopping early", since_best)
                state.data["stopped_early"] = True
                state.save()
                self.model.stop_training = True
            if args.max_minutes and minutes >= args.max_minutes:
                log.info("time budget of %.0f min reached: stopping", args.max_minutes)
                self.model.stop_training = True

    return [keras.callbacks.TerminateOnNaN(), Bookkeeping()]


def recalibrate_batch_norm(model, pixels, seed: int, batch_size: int = 64, max_batches: int = 120) -> int:
    """Recompute batch-norm statistics on unaugmented training images, as the service will see them.

    During training the moving averages follow augmented images and lag the moving weights;
    inference then normalises with statistics that fit neither ("precise BN", Wu and Johnson
    2021). Averaging the batch statistics of the final weights over plain images fixes that.
    Returns the number of images used.
    """
    import keras

    layers = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    order = np.random.default_rng(seed).permutation(len(pixels))[: batch_size * max_batches]
    batches = [order[i : i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]
    for step, batch in enumerate(batches):
        for layer in layers:
            layer.momentum = step / (step + 1)  # a running mean over all batches seen so far
        model(leaf.scale_pixels(pixels[batch].astype(np.float32)), training=True)
    for layer in layers:
        layer.momentum = 0.99
    return len(batches) * batch_size


def select_recalibrated(candidates: dict, pixels, targets, train_idx, val_idx, state: EpochState, args):
    """Recalibrate batch norm of each saved candidate and keep the one with the best validation accuracy.

    The epoch-end validation scores that chose "best epoch" used lagging batch-norm statistics,
    so the last epoch (lowest learning rate) is judged again on equal terms.
    """
    import keras

    results, models = {}, {}
    for name, path in candidates.items():
        if not path.exists():
            continue
        model = keras.models.load_model(path, compile=False)
        before = report.accuracy(model, pixels[val_idx], targets[val_idx])
        recalibrate_batch_norm(model, pixels[train_idx], args.seed)
        after = report.accuracy(model, pixels[val_idx], targets[val_idx])
        log.info("%s: validation accuracy %.4f before, %.4f after batch-norm recalibration", name, before, after)
        results[name] = {"val_accuracy_before": before, "val_accuracy_after": after}
        models[name] = model
    chosen = max(results, key=lambda name: results[name]["val_accuracy_after"])
    state.data["batch_norm_recalibration"] = {**results[chosen], "chosen": chosen, "candidates": results}
    return models[chosen]


def train(args: argparse.Namespace) -> None:
    import keras

    keras.utils.set_random_seed(args.seed)
    if args.precision != "float32":
        keras.mixed_precision.set_global_policy(args.precision)
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    state = EpochState(work / STATE)
    if not args.resume and state.data["epoch"]:
        raise SystemExit(f"{work} holds a run at epoch {state.data['epoch']}: pass --resume or a new --work-dir")

    data = ds.scan_folder(args.data, ds.read_label_map(args.labels), args.min_images)
    train_idx, val_idx = ds.stratified_split(data.targets, args.val_fraction, args.seed)
    log.info(
        "%d classes, %d train / %d validation images; left out: %s",
        len(data.labels),
        len(train_idx),
        len(val_idx),
        data.excluded or "none",
    )
    pixels = ds.load_pixels(data.paths, args.input_size, work / "cache")
    train_ds, val_ds = make_datasets(
        pixels, data.targets, train_idx, val_idx, len(data.labels), args.batch_size, args.seed
    )
    steps = len(train_idx) // args.batch_size
    best_path = work / "best.keras"

    if args.resume and (work / CHECKPOINT).exists():
        model = keras.models.load_model(work / CHECKPOINT)
        log.info("resumed from %s at epoch %d", work / CHECKPOINT, state.data["epoch"])
    else:
        model = make_model(args.input_size, len(data.labels), args.weights)
        model.compile(
            optimizer=keras.optimizers.Adam(make_schedule(args.learning_rate, steps, args)),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=args.label_smoothing),
            metrics=["accuracy", keras.metrics.TopKCategoricalAccuracy(3, name="top3")],
        )
    if state.data["epoch"] < args.epochs and not state.data.get("stopped_early"):
        model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=args.epochs,
            initial_epoch=state.data["epoch"],
            verbose=args.verbose,
            callbacks=make_callbacks(args, work, state, best_path),
        )
        if state.data.pop("diverged", False):
            state.save()
            raise SystemExit("training diverged (NaN loss); resume with --precision float32")

    best = select_recalibrated(
        {"best epoch": best_path, "last epoch": work / CHECKPOINT},
        pixels,
        data.targets,
        train_idx,
        val_idx,
        state,
        args,
    )
    report.write_artifact(best, data, train_idx, val_idx, pixels, state.data, args)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    args.argv = argv
    train(args)


if __name__ == "__main__":
    main()
