"""Evaluation reports and the training artifact: accuracy, per-class scores, confusion matrix, model card."""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np

from util import leaf
from util.dataset import Dataset, class_counts
from util.model import LABELS_FILE, METADATA_FILE

Predict = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Evaluation:
    labels: list[str]
    targets: np.ndarray
    probabilities: np.ndarray

    @property
    def predictions(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    def top_k_accuracy(self, k: int) -> float:
        best = np.argsort(self.probabilities, axis=1)[:, ::-1][:, :k]
        return float(np.mean([t in row for t, row in zip(self.targets, best, strict=True)]))

    def confusion(self) -> np.ndarray:
        """Rows: true class; columns: predicted class."""
        matrix = np.zeros((len(self.labels), len(self.labels)), np.int64)
        np.add.at(matrix, (self.targets, self.predictions), 1)
        return matrix

    def per_class(self) -> list[dict]:
        matrix = self.confusion()
        rows = []
        for i, label in enumerate(self.labels):
            support, predicted, hits = int(matrix[i].sum()), int(matrix[:, i].sum()), int(matrix[i, i])
            rows.append(
                {
                    "label": label,
                    "support": support,
                    "precision": hits / predicted if predicted else None,
                    "recall": hits / support if support else None,
                }
            )
        return rows

    def summary(self) -> dict:
        return {
            "images": len(self.targets),
            "top1": self.top_k_accuracy(1),
            "top3": self.top_k_accuracy(3),
            "per_class": self.per_class(),
            "labels": self.labels,
            "confusion": self.confusion().tolist(),
        }


def predict_pixels(predict: Predict, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Run uint8 images (N x S x S x 3) through ``predict`` with the service's pixel scaling."""
    rows = [
        predict(leaf.scale_pixels(pixels[i : i + batch_size].astype(np.float32)))
        for i in range(0, len(pixels), batch_size)
    ]
    return np.concatenate(rows).astype(np.float32)


def accuracy(model, pixels: np.ndarray, targets: np.ndarray) -> float:
    """Top-1 accuracy of a Keras model on uint8 images, in inference mode."""
    probabilities = predict_pixels(lambda x: model(x, training=False).numpy(), pixels)
    return float(np.mean(probabilities.argmax(axis=1) == targets))


def plot_confusion(matrix: np.ndarray, labels: Sequence[str], path: Path, title: str) -> None:
    """Draw the confusion matrix, normalised per true class, with counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    size = max(6.0, 0.32 * len(labels) + 3)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(share, cmap="Greens", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            ax.text(
                j, i, str(count), ha="center", va="center", fontsize=5, color="white" if share[i, j] > 0.5 else "black"
            )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def per_class_table(evaluation: Evaluation, train_counts: dict[str, int] | None = None) -> str:
    def pct(value):
        return "n/a" if value is None else f"{100 * value:.1f}%"

    head = "| class | train images | val images | precision | recall |\n|---|---:|---:|---:|---:|\n"
    return head + "\n".join(
        f"| {row['label']} | {(train_counts or {}).get(row['label'], '')} | {row['support']} "
        f"| {pct(row['precision'])} | {pct(row['recall'])} |"
        for row in evaluation.per_class()
    )


def write_artifact(model, data: Dataset, train_idx, val_idx, pixels, state: dict, args) -> None:
    """Save the served model with its labels, metadata, evaluation, confusion matrix and model card."""
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "model.keras")
    (out / LABELS_FILE).write_text("\n".join(data.labels) + "\n", encoding="utf-8")
    version = date.today().isoformat()
    metadata = {"name": "plantnet-inceptionv3", "version": version, "input_size": args.input_size}
    (out / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")

    evaluation = Evaluation(
        data.labels,
        data.targets[val_idx],
        predict_pixels(lambda x: model(x, training=False).numpy(), pixels[val_idx]),
    )
    summary = evaluation.summary()
    (out / "evaluation.json").write_text(json.dumps({**summary, "split": "validation"}, indent=1))
    plot_confusion(
        evaluation.confusion(),
        data.labels,
        out / "confusion_matrix.png",
        f"Validation split, {len(val_idx)} images: top-1 {100 * summary['top1']:.1f}%",
    )
    train_counts = dict(class_counts(data, train_idx))
    (out / "MODEL.md").write_text(
        model_card(data, train_counts, len(train_idx), evaluation, state, args, version, model.count_params()),
        encoding="utf-8",
    )


def model_card(
    data: Dataset,
    train_counts: dict,
    n_train: int,
    evaluation: Evaluation,
    state: dict,
    args,
    version: str,
    parameters: int,
) -> str:
    summary = evaluation.summary()
    results_row = (
        f"| validation (stratified {100 * args.val_fraction:.0f}%, seed {args.seed}) | {summary['images']} "
        f"| **{100 * summary['top1']:.2f}%** | {100 * summary['top3']:.2f}% |"
    )
    argv = [a for a in args.argv if a != "--resume"]  # a resumed run reproduces the whole run
    command = "python train.py " + " ".join(shlex.quote(a) for a in argv)
    recalibration = state.get("batch_norm_recalibration")
    recalibration_line = (
        "Batch-norm statistics were then recomputed on unaugmented training images (see Training); "
        + "; ".join(
            f"{name} (epoch {state.get('best_epoch', '?') if name == 'best epoch' else state['epoch']}): "
            f"validation top-1 {100 * r['val_accuracy_before']:.2f}% before, {100 * r['val_accuracy_after']:.2f}% after"
            for name, r in recalibration["candidates"].items()
        )
        + f". Shipped: the {recalibration['chosen']}."
        if recalibration
        else ""
    )
    history = "\n".join(
        f"| {h['epoch']} | {h.get('loss', 0):.3f} | {100 * h.get('accuracy', 0):.1f}% "
        f"| {h.get('val_loss', 0):.3f} | {100 * h.get('val_accuracy', 0):.1f}% |"
        for h in state["history"]
    )
    excluded = ", ".join(f"`{k}` ({v})" for k, v in data.excluded.items()) or "none"
    weakest = sorted((r for r in evaluation.per_class() if r["recall"] is not None), key=lambda r: r["recall"])[:3]
    return f"""# PlantNet leaf-disease model, version {version}

An InceptionV3 network trained from scratch to name the disease (or health) of a single plant
leaf in a photo. It is the default model of PlantNet API (`plantnet/model.keras`).

## Results

| split | images | top-1 | top-3 |
|---|---:|---:|---:|
{results_row}

Best epoch {state.get("best_epoch", "?")} of {state["epoch"]} (early stopping on validation accuracy,
patience {args.patience}). Wall time on the training machine (2 CPU cores, no GPU):
{state["wall_seconds"] / 60:.0f} minutes.
{recalibration_line}

![confusion matrix on the validation split](confusion_matrix.png)

Weakest classes by recall: {", ".join(f"{r['label']} ({100 * r['recall']:.0f}%)" for r in weakest)}.

### Per class (validation split)

{per_class_table(evaluation, train_counts)}

### Training curve

| epoch | loss | accuracy | val loss | val accuracy |
|---:|---:|---:|---:|---:|
{history}

## Data

Real PlantVillage leaf photos (Hughes and Salathé 2015, arXiv:1511.08060): lab photographs of one
leaf on a plain background, 256x256 JPEG. {n_train} images trained the model and {summary["images"]}
were held out for validation, stratified per class. Folder names map to the display labels the
original PlantNet API returned (`labels.tsv`).

**Left out:** {excluded}. These classes have fewer than {args.min_images} photos in the training
data, too few to learn or to measure; a model claiming them would be guessing. The model cannot
answer them: a photo of such a leaf gets the nearest known class, typically with low confidence.

## Architecture and input

`keras.applications.InceptionV3(include_top=False, weights=None)` with global average pooling,
dropout 0.3 and a {len(data.labels)}-way softmax; {parameters / 1e6:.1f} M parameters.
Input: {args.input_size}x{args.input_size} RGB, chosen for training time on a 2-core CPU.

## Preprocessing (util/leaf.py, shared by training, evaluation and the service)

1. Decode with Pillow, apply the EXIF orientation, convert to RGB (transparency over white).
   JPEGs decode in draft mode straight to the smallest power-of-two scale at least
   {args.input_size} px on the short side.
2. Crop the centred square and resize it to {args.input_size}x{args.input_size} (bilinear).
3. Scale pixels to [-1, 1]: `x / 127.5 - 1` (the InceptionV3 convention), outside the model.

Training augmentation (training only): flips, any rotation, zoom 0.9-1.25, shifts up to 10%,
brightness and contrast ±20%, hue ±0.04.

## Training

    {command}

Adam, learning rate {args.learning_rate} with {args.warmup_epochs:g} warm-up epoch and cosine decay,
batch {args.batch_size}, label smoothing {args.label_smoothing}, {args.precision}, seed {args.seed},
up to {args.epochs} epochs; checkpoints every epoch; `--resume` continues a stopped run. The
weights of the best epoch are kept; then their batch-norm moving averages, which tracked
augmented images and lagging weights during training, are recomputed as a running mean over
up to 7,680 unaugmented training images ("precise BN"). Validation images are never used for
this.

## Known limits

- Lab photos: every training image is one leaf on a plain background. Field photos (several
  leaves, soil, hands, shadows) are out of distribution; expect lower accuracy and check the
  confidence and `top_k` before acting on an answer.
- Near-duplicate photos of the same leaf can occur in both splits (PlantVillage photographs some
  leaves several times), so validation accuracy may be optimistic.
- Classes with few images: `Potato_healthy` has {train_counts.get("Potato_healthy", "?")} training images;
  the four classes listed under Data are not covered at all.
- The model always answers one of its {len(data.labels)} classes, even for a photo that is not a leaf.
"""
