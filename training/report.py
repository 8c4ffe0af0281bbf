"""Field-photo numbers, written once for the finishing (model card, evaluation.json) and evaluate.py.

A field photo's outcome is one of: *right* (accepted by the in-domain verdict and correct), *harm*
(accepted and wrong: a grower is told a wrong disease) or *rejected* ("not a leaf I know"). The
model's *best guess* is scored too, with and without the true crop as a hint (the API's ``crop``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.evaluation import wilson_interval
from util.labels import crop_indices, crop_of


def with_crop_predictions(probabilities: np.ndarray, targets: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """The best guess among the true crop's labels only (what a grower's crop hint gives)."""
    predictions = np.empty(len(targets), np.int64)
    for crop in {crop_of(labels[t]) for t in targets}:
        rows = np.flatnonzero([crop_of(labels[t]) == crop for t in targets])
        keep = crop_indices(labels, crop)
        predictions[rows] = keep[probabilities[np.ix_(rows, keep)].argmax(axis=1)]
    return predictions


def _share(hits: int, total: int) -> dict:
    low, high = wilson_interval(hits, total) if total else (None, None)
    return {"share": hits / total if total else None, "count": int(hits), "interval_95": [low, high]}


def field_report(
    probabilities: np.ndarray,
    targets: np.ndarray,
    known: np.ndarray,
    labels: Sequence[str],
    known_with_crop: np.ndarray | None = None,
) -> dict:
    """Best guess (alone and with the crop), accepted, right, harm; overall and per class. ``known_with_crop``:
    the verdict on each photo sent with its true crop (the model's crop-hint point; default ``known``)."""
    known_with_crop = known if known_with_crop is None else known_with_crop
    correct = probabilities.argmax(axis=1) == targets
    with_crop = with_crop_predictions(probabilities, targets, labels) == targets
    total = len(targets)
    per_class = []
    for cls in np.unique(targets):
        rows = targets == cls
        n = int(rows.sum())
        per_class.append(
            {
                "label": labels[cls],
                "images": n,
                "best_guess": float(correct[rows].mean()),
                "with_crop": float(with_crop[rows].mean()),
                "accepted": float(known[rows].mean()),
                "right": float((known & correct)[rows].mean()),
                "harm": float((known & ~correct)[rows].mean()),
            }
        )
    return {
        "images": total,
        "best_guess": _share(int(correct.sum()), total),
        "best_guess_with_crop": _share(int(with_crop.sum()), total),
        "accepted": _share(int(known.sum()), total),
        "right": _share(int((known & correct).sum()), total),
        "harm": _share(int((known & ~correct).sum()), total),
        "accepted_with_crop": _share(int(known_with_crop.sum()), total),
        "right_with_crop": _share(int((known_with_crop & with_crop).sum()), total),
        "harm_with_crop": _share(int((known_with_crop & ~with_crop).sum()), total),
        "per_class": per_class,
    }


def pct(entry: dict) -> str:
    """'40.4% (34-47)' from a ``_share`` entry."""
    if entry["share"] is None:
        return "n/a"
    low, high = entry["interval_95"]
    return f"{100 * entry['share']:.1f}% ({100 * low:.0f}-{100 * high:.0f})"


def field_table(report: dict) -> str:
    """The card's and evaluate.py's Markdown table of a field report, overall then per class."""
    rows = [
        "| field photos | images | best guess | with the crop | accepted | right | harm |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| all | {report['images']} | {pct(report['best_guess'])} | {pct(report['best_guess_with_crop'])} | "
        f"{pct(report['accepted'])} | {pct(report['right'])} | {pct(report['harm'])} |",
    ]
    if "right_with_crop" in report:  # the crop hint's own verdict (util.domain.HintPoint) decides these
        hinted = " | ".join(pct(report[f"{name}_with_crop"]) for name in ("best_guess", "accepted", "right", "harm"))
        rows.append(f"| all, each sent with its true crop | {report['images']} | | {hinted} |")
    for row in report["per_class"]:
        rows.append(
            f"| {row['label']} | {row['images']} | {100 * row['best_guess']:.0f}% | {100 * row['with_crop']:.0f}% | "
            f"{100 * row['accepted']:.0f}% | {100 * row['right']:.0f}% | {100 * row['harm']:.0f}% |"
        )
    return "\n".join(rows)
