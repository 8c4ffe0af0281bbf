"""Evaluation: run images through an engine, score top-k accuracy with its interval, per-class tables, pictures."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from util import leaf

Predict = Callable[[np.ndarray], dict]  # float32 batch -> util.engine.Outputs


def run_engine(predict: Predict, pixels: np.ndarray, batch_size: int = 32) -> dict[str, np.ndarray]:
    """Run uint8 images (N x S x S x 3) through ``predict`` with the service's scaling; concatenate the outputs."""
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(pixels), batch_size):
        outputs = predict(leaf.scale_pixels(pixels[start : start + batch_size].astype(np.float32)))
        for name, values in outputs.items():
            parts.setdefault(name, []).append(np.asarray(values, np.float32))
    return {name: np.concatenate(values) for name, values in parts.items()}


def wilson_interval(hits: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    if total == 0:
        return (0.0, 1.0)
    p = hits / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return (max(0.0, centre - half), min(1.0, centre + half))


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

    def interval(self) -> tuple[float, float]:
        return wilson_interval(int(np.sum(self.predictions == self.targets)), len(self.targets))

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
        low, high = self.interval()
        return {
            "images": len(self.targets),
            "top1": self.top_k_accuracy(1),
            "top1_interval_95": [low, high],
            "top3": self.top_k_accuracy(3),
            "per_class": self.per_class(),
            "labels": self.labels,
            "confusion": self.confusion().tolist(),
        }


def per_class_table(evaluation: Evaluation, train_counts: dict[str, int] | None = None) -> str:
    def pct(value):
        return "n/a" if value is None else f"{100 * value:.1f}%"

    head = "| class | train images | val images | precision | recall |\n|---|---:|---:|---:|---:|\n"
    return head + "\n".join(
        f"| {row['label']} | {(train_counts or {}).get(row['label'], '')} | {row['support']} "
        f"| {pct(row['precision'])} | {pct(row['recall'])} |"
        for row in evaluation.per_class()
    )


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(matrix: np.ndarray, labels: Sequence[str], path: Path, title: str) -> None:
    """Draw the confusion matrix, normalised per true class, with counts in the cells."""
    plt = _pyplot()
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
            colour = "white" if share[i, j] > 0.5 else "black"
            ax.text(j, i, str(count), ha="center", va="center", fontsize=5, color=colour)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_history(history: list[dict], path: Path) -> None:
    """Training curve: loss and accuracy per epoch, training and validation."""
    plt = _pyplot()
    epochs = [int(row["epoch"]) + 1 for row in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key, name in (("loss", "training"), ("val_loss", "validation")):
        left.plot(epochs, [float(row[key]) for row in history], label=name)
    for key, name in (("accuracy", "training"), ("val_accuracy", "validation (epoch-end, EMA, before precise BN)")):
        right.plot(epochs, [float(row[key]) for row in history], label=name)
    left.set_title("loss")
    right.set_title("top-1 accuracy")
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_scores(groups: dict[str, np.ndarray], threshold: float, path: Path) -> None:
    """Histogram of in-domain scores per image group, with the shipped threshold."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.8))
    bins = np.linspace(0, 1, 41)
    for name, scores in groups.items():
        if len(scores):
            ax.hist(scores, bins=bins, alpha=0.55, label=f"{name} ({len(scores)})", density=True)
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.set_xlabel("in-domain score (share of known validation leaves that look less typical)")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
