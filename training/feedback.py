"""Turn growers' feedback into field data: the photos they confirmed or corrected, in class folders.

    python -m training.feedback export OUT_DIR \\
        --database-url postgresql+psycopg://... --photo-store s3://bucket/photos \\
        --labels ../shared/data/plantvillage/labels.tsv
    python train.py --data ... --labels ../shared/data/plantvillage/labels.tsv --field OUT_DIR ...

OUT_DIR gets one folder per class, named as in labels.tsv (the layout of ../shared/data/field, which
``train.py --field`` reads), holding ``<diagnosis id>.jpg`` for each kept diagnosis that a grower
confirmed (its label) or corrected to one of the model's labels (the label given), and
``manifest.csv``: one row per photo, where it came from. A correction to "other", and a confirmed
"Unknown", name no class: they are counted, not exported. The database and photo store default to
the service's own settings (PLANTNET_DATABASE_URL, PLANTNET_PHOTO_STORE).

Exporting again into the same folder brings it up to date: photos whose diagnosis was deleted or
purged since, or whose label changed, are removed from it (the previous manifest lists them).
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from training.data import read_label_map
from util.config import PROJECT_ROOT, Settings, configure_logging
from util.feedback import OTHER_LABEL, Database, PhotoStore, StoredDiagnosis, open_photo_store

log = logging.getLogger("training.feedback")

MANIFEST = "manifest.csv"
MANIFEST_FIELDS = (
    "file",
    "folder",
    "label",
    "source",
    "diagnosed_label",
    "confidence",
    "model_name",
    "model_version",
    "diagnosed_at",
    "feedback_at",
    "id",
)
DEFAULT_LABELS = PROJECT_ROOT.parent / "shared" / "data" / "plantvillage" / "labels.tsv"


@dataclass(frozen=True)
class ExportSummary:
    exported: int
    skipped: Counter  # why a confirmed or corrected photo was not exported -> how many
    removed: int  # files of an earlier export whose diagnosis is gone or changed
    classes: Counter  # folder -> photos
    unmapped: Counter  # labels not in labels.tsv, exported under their own name -> photos


def class_folders(labels_tsv: Path | None) -> dict[str, str]:
    """Display label -> class folder name, from a ``folder<TAB>label`` file (train.py's --labels)."""
    return {label: folder for folder, label in read_label_map(labels_tsv).items()}


def why_not_exported(kept: StoredDiagnosis) -> str | None:
    """None when the photo names a class to train on; else why not."""
    if kept.photo is None:
        return "no photo kept"
    label = kept.true_label
    if label is None:
        return "wrong, right label not given"
    if label == OTHER_LABEL:
        return "wrong, none of the model's labels"
    if kept.feedback is not None and kept.feedback.correct and kept.answer.get("species") is None:
        return "confirmed that it is no leaf the model knows"
    return None


def export(database: Database, photos: PhotoStore, out_dir: Path, folders: dict[str, str]) -> ExportSummary:
    """Write the confirmed and corrected photos into ``out_dir``/<class folder>/ and the manifest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    previous = read_manifest(out_dir / MANIFEST)
    rows, skipped, classes, unmapped = [], Counter(), Counter(), Counter()
    for kept in database.with_feedback():
        if reason := why_not_exported(kept):
            skipped[reason] += 1
            continue
        label = kept.true_label
        folder = folders.get(label, label)  # a label without a folder in labels.tsv keeps its own name
        if label not in folders:
            unmapped[label] += 1
        relative = f"{folder}/{kept.id}.jpg"
        target = out_dir / relative
        if not target.is_file():
            try:
                data = photos.get(kept.photo)
            except Exception as exc:  # noqa: BLE001 (one missing photo must not stop the export)
                log.warning("photo of %s not found in %r: %s", kept.id, photos, exc)
                skipped["photo missing from the store"] += 1
                continue
            write_atomically(target, data)
        rows.append(manifest_row(relative, folder, label, kept))
        classes[folder] += 1
    kept_files = {row["file"] for row in rows}
    removed = 0
    for stale in previous - kept_files:
        path = out_dir / stale
        if path.is_file():
            path.unlink()
            removed += 1
    write_manifest(out_dir / MANIFEST, rows)
    return ExportSummary(len(rows), skipped, removed, classes, unmapped)


def manifest_row(relative: str, folder: str, label: str, kept: StoredDiagnosis) -> dict[str, str]:
    feedback = kept.feedback
    assert feedback is not None
    return {
        "file": relative,
        "folder": folder,
        "label": label,
        "source": "confirmed" if feedback.correct else "corrected",
        "diagnosed_label": kept.label,
        "confidence": f"{float(kept.answer.get('confidence') or 0.0):.4f}",
        "model_name": kept.model_name,
        "model_version": kept.model_version,
        "diagnosed_at": kept.created_at.isoformat(),
        "feedback_at": feedback.at.isoformat(),
        "id": kept.id,
    }


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.incoming")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def read_manifest(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    with path.open(newline="", encoding="utf-8") as file:
        return {row["file"] for row in csv.DictReader(file) if row.get("file")}


def write_manifest(path: Path, rows: list[dict[str, str]]) -> None:
    temporary = path.with_name(f".{path.name}.incoming")
    with temporary.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, MANIFEST_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(temporary, path)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(prog="python -m training.feedback", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    out = commands.add_parser("export", help="write confirmed and corrected photos into class folders")
    out.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="folder to write (train.py --field reads it)")
    out.add_argument(
        "--database-url", default=settings.database_url, help="SQLAlchemy URL (default: PLANTNET_DATABASE_URL)"
    )
    out.add_argument(
        "--photo-store",
        default=settings.photo_store,
        help="folder or s3://bucket/prefix (default: PLANTNET_PHOTO_STORE)",
    )
    out.add_argument(
        "--labels",
        type=Path,
        default=DEFAULT_LABELS if DEFAULT_LABELS.is_file() else None,
        help="folder<TAB>label file naming the class folders: the one train.py gets (default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    args = parse_args(sys.argv[1:] if argv is None else argv)
    database = Database(args.database_url)
    try:
        database.migrate()  # an empty or older database reads as the service would see it
        summary = export(database, open_photo_store(args.photo_store), args.out_dir, class_folders(args.labels))
    finally:
        database.close()
    print(f"{summary.exported} photos in {len(summary.classes)} class folders under {args.out_dir}")
    for folder, count in sorted(summary.classes.items()):
        print(f"  {folder}: {count}")
    for label, count in sorted(summary.unmapped.items()):
        print(f"  {label!r} is not in {args.labels}: {count} photos in a folder of that name, which train.py ignores")
    for reason, count in sorted(summary.skipped.items()):
        print(f"  not exported ({reason}): {count}")
    if summary.removed:
        print(f"  removed from an earlier export (deleted, purged or relabelled since): {summary.removed}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
