"""Folder-per-class image datasets (the PlantVillage layout), read through the serving pipeline."""

from __future__ import annotations

import argparse
import hashlib
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from util import leaf

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
FIELD_VAL_FRACTION = 0.2  # of each class's field photos held out (half chooses, half reports)
OTHER_PLANTS = "_other_plants"  # in a field folder: photos of plants we do not serve
# The kinds of unknown photos; each has its own rejection target (training/ood.UNKNOWN_REJECTION).
NOT_A_PLANT, OTHER_PLANT = "not a plant", "other plants"
OTHER_PLANT_FOLDERS = ("near", OTHER_PLANTS)  # folders of plants that are not ours; any other holds no plant
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dataset:
    paths: list[Path]
    targets: np.ndarray  # class index of each path, into ``labels``
    labels: list[str]  # display labels, in output order
    folders: list[str]  # folder name of each label
    excluded: dict[str, int]  # folder -> image count, for classes left out


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the dataset options train.py, evaluate.py and bench/agreement.py share (one split definition)."""
    parser.add_argument("--data", type=Path, required=True, help="folder with one sub-folder per class")
    parser.add_argument("--labels", type=Path, help="folder<TAB>display label file (labels.tsv)")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="share of each class held out")
    parser.add_argument(
        "--seed",
        type=int,
        default=1337,
        help="seed of the validation split (train.py: also of training; see --train-seed)",
    )


def read_label_map(path: Path | None) -> dict[str, str]:
    """Read a ``folder<TAB>display label`` file (a header line ``folder<TAB>label`` is skipped)."""
    if path is None:
        return {}
    mapping = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        folder, _, label = line.partition("\t")
        if label and folder != "folder":
            mapping[folder] = label.strip()
    return mapping


def scan_folder(root: Path, label_map: dict[str, str], min_images: int = 1) -> Dataset:
    """List the images of every class folder under ``root``; classes are sorted by folder name.

    Classes with fewer than ``min_images`` images are left out and reported in ``excluded``.
    """
    folders, excluded, paths, targets = [], {}, [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if len(files) < min_images:
            excluded[folder.name] = len(files)
            continue
        paths += files
        targets += [len(folders)] * len(files)
        folders.append(folder.name)
    if not folders:
        raise ValueError(f"No class folder under {root} has {min_images} or more images.")
    labels = [label_map.get(f, f) for f in folders]
    return Dataset(paths, np.array(targets), labels, folders, excluded)


def stratified_split(targets: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (train, validation) index arrays holding ``fraction`` of each class out, at least one."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for cls in np.unique(targets):
        members = rng.permutation(np.flatnonzero(targets == cls))
        n_val = max(1, round(len(members) * fraction)) if len(members) > 1 else 0
        val += list(members[:n_val])
        train += list(members[n_val:])
    return np.array(sorted(train)), np.array(sorted(val))


def load_pixels(paths: Sequence[Path], size: int, cache_dir: Path | None = None) -> np.ndarray:
    """Decode and resize images exactly as the service does; uint8, N x size x size x 3."""
    cache = None
    if cache_dir is not None:
        key = hashlib.sha256("\n".join(map(str, paths)).encode() + str(size).encode()).hexdigest()
        cache = cache_dir / f"pixels-{size}-{key[:16]}.npy"
        if cache.exists():
            return np.load(cache)
    pixels = np.empty((len(paths), size, size, 3), np.uint8)
    for i, path in enumerate(paths):
        image = leaf.decode_image(path.read_bytes(), min_side=size)
        pixels[i] = leaf.resize_pixels(image, size)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, pixels)
    return pixels


def restrict_to_labels(dataset: Dataset, indices: Sequence[int], labels: Sequence[str]) -> tuple[list[int], np.ndarray]:
    """The images among ``indices`` of a class in ``labels`` (a model's), and their targets in that order."""
    known = {label: i for i, label in enumerate(labels)}
    kept = [int(i) for i in indices if dataset.labels[dataset.targets[i]] in known]
    return kept, np.array([known[dataset.labels[dataset.targets[i]]] for i in kept], dtype=np.int64)


def class_counts(dataset: Dataset, indices: np.ndarray) -> Counter:
    return Counter(dataset.labels[t] for t in dataset.targets[indices])


def list_images(root: Path) -> list[Path]:
    """Every image file under ``root``, recursively, sorted."""
    return sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def split_outliers(paths: Sequence[Path], held_out_share: float = 0.5) -> tuple[list[Path], list[Path]]:
    """Split non-leaf photos into (training, held out) by a hash of the file name: stable as files are added.

    Training uses its share as backgrounds and outlier-exposure images; the held-out share is never
    trained on and measures the out-of-domain verdict and the field-photo proxy.
    """
    train, held_out = [], []
    for path in paths:
        bucket = int(hashlib.sha256(path.name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        (held_out if bucket < held_out_share else train).append(path)
    return train, held_out


def unknown_kind(path: Path) -> str:
    return OTHER_PLANT if path.parent.name in OTHER_PLANT_FOLDERS else NOT_A_PLANT


def other_plant_photos(field: Path | None) -> list[Path]:
    """The field folder's photos of plants we do not serve (none without the folder)."""
    folder = None if field is None else field / OTHER_PLANTS
    return list_images(folder) if folder is not None and folder.is_dir() else []


def unknowns_by_kind(outliers: Path | None, field: Path | None, held_out: bool) -> dict[str, list[Path]]:
    """The non-leaf photos and other plants' field photos, by kind: the half training sees (and the
    verdict's operating point is chosen on) or, with ``held_out``, the half that only reports."""
    found: dict[str, list[Path]] = {NOT_A_PLANT: [], OTHER_PLANT: []}
    for photos in (list_images(outliers) if outliers else [], other_plant_photos(field)):
        for path in split_outliers(photos)[1 if held_out else 0]:
            found[unknown_kind(path)].append(path)
    return found


# ## Group-aware splits: near-copies of one photo stay on one side.

HASH_SIDE = 8  # dHash on a 9x8 greyscale resize: 64 bits
NEAR_COPY_BITS = 6  # Hamming distance at or below which two photos count as copies of one


def dihash(gray: np.ndarray) -> int:
    """64-bit difference hash of a (HASH_SIDE) x (HASH_SIDE + 1) greyscale array."""
    bits = (gray[:, 1:] > gray[:, :-1]).ravel()
    return int(np.packbits(bits).view(">u8")[0])


def orientation_hashes(pixels: np.ndarray) -> np.ndarray:
    """N x 8 dHashes: one per right-angle orientation (flips, transpose), since copies are often turned."""
    from PIL import Image

    out = np.empty((len(pixels), 8), np.uint64)
    for i, rgb in enumerate(pixels):
        gray = np.asarray(Image.fromarray(rgb).convert("L").resize((HASH_SIDE + 1, HASH_SIDE + 1), Image.BILINEAR))
        gray = gray.astype(np.int16)
        views = [gray, gray[::-1], gray[:, ::-1], gray[::-1, ::-1]]
        views += [v.T for v in views]
        out[i] = [dihash(v[:HASH_SIDE, :]) for v in views]
    return out


def near_copy_groups(pixels: np.ndarray, targets: np.ndarray, max_bits: int = NEAR_COPY_BITS) -> np.ndarray:
    """Group id of every image: images of one class within ``max_bits`` of each other in any orientation
    share a group (near-copies never cross classes; comparing across them only chains plain backgrounds)."""
    hashes = orientation_hashes(pixels)
    parent = np.arange(len(pixels))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    upright = hashes[:, 0]
    for i in range(len(pixels)):
        distance = np.bitwise_count(hashes[i][:, None] ^ upright[None, i + 1 :]).min(axis=0)
        same_class = targets[i + 1 :] == targets[i]
        for j in np.flatnonzero((distance <= max_bits) & same_class) + i + 1:
            a, b = root(i), root(int(j))
            if a != b:
                parent[max(a, b)] = min(a, b)
    return np.array([root(i) for i in range(len(pixels))])


def grouped_split(targets: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Like ``stratified_split``, but whole near-copy groups go to one side (about ``fraction`` of each class)."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for cls in np.unique(targets):
        members = np.flatnonzero(targets == cls)
        class_groups = rng.permutation(np.unique(groups[members]))
        wanted = max(1, round(len(members) * fraction)) if len(class_groups) > 1 else 0
        taken = 0
        for group in class_groups:
            in_group = list(members[groups[members] == group])
            if taken < wanted and len(in_group) <= wanted:  # a chained big group would crowd out the rest
                val += in_group
                taken += len(in_group)
            else:
                train += in_group
    return np.array(sorted(train), dtype=np.int64), np.array(sorted(val), dtype=np.int64)


def halves(indices: np.ndarray, targets: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split held-out images into (calibration, report) halves per class: one chooses, the other judges."""
    rng = np.random.default_rng(seed)
    first, second = [], []
    for cls in np.unique(targets[indices]):
        members = rng.permutation(indices[targets[indices] == cls])
        first += list(members[: len(members) // 2])
        second += list(members[len(members) // 2 :])
    return np.array(sorted(first), dtype=np.int64), np.array(sorted(second), dtype=np.int64)


def validation_split(dataset: Dataset, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The one (train, validation) split every command uses: stratified by class, near-copies kept together."""
    pixels = load_pixels(dataset.paths, 64)
    return grouped_split(dataset.targets, near_copy_groups(pixels, dataset.targets), fraction, seed)


@dataclass(frozen=True)
class FieldSplit:
    """Field photos of the classes in ``folders`` (targets index them) and their group-aware split."""

    paths: list[Path]
    targets: np.ndarray
    train_idx: np.ndarray
    calibration_idx: np.ndarray  # held out: chooses the candidate and the verdict's operating point
    report_idx: np.ndarray  # held out: judges, never chooses


def field_split(root: Path, folders: Sequence[str], fraction: float, seed: int) -> FieldSplit:
    """The one field split train.py and evaluate.py share: ``fraction`` of each class held out by near-copy
    group, then halved per class into calibration and report photos. Folders of other classes are ignored."""
    index = {folder: i for i, folder in enumerate(folders)}
    paths: list[Path] = []
    targets: list[int] = []
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir() and p.name in index):
        files = list_images(folder)
        paths += files
        targets += [index[folder.name]] * len(files)
    target_array = np.array(targets, np.int64)
    groups = near_copy_groups(load_pixels(paths, 64), target_array) if paths else target_array
    train_idx, held_idx = grouped_split(target_array, groups, fraction, seed)
    calibration_idx, report_idx = halves(held_idx, target_array, seed)
    return FieldSplit(paths, target_array, train_idx, calibration_idx, report_idx)
