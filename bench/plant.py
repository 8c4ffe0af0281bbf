"""One plant, several photos: is one combined diagnosis better than one photo at a time? And a crop hint?

    python -m bench.plant --data ../shared/data/plantvillage/train --labels ../shared/data/plantvillage/labels.tsv
        [--model plantnet] [--group-size 3] [--field ../shared/data/field --field-limit 600] [--json out.json]

Every photo of the shipped model's validation split (the stratified split train.py held out: same
fraction, seed and minimum class size) goes once through util.service.DiagnosisService in-process
(decode, batcher, engine, in-domain verdict). The photos of each class are then dealt, in a seeded
random order, into disjoint groups of ``--group-size`` (photos of one class stand in for photos of one
plant), and each way of util/plant.COMBINATIONS combines a group's accepted photos, as
POST /Diagnosis/plant does. Reported, for single photos and for groups, with and without the true crop
as the hint:

* best guess: the top label is the true one, whatever the verdict;
* right: the verdict accepts (at least one photo of the group) and the top label is the true one;
* harm: the verdict accepts and the top label is wrong.

``--field`` adds the same single-photo numbers on field photos (PlantDoc, folder per class), the
photos a crop hint is for.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training import data as ds
from util.config import Settings
from util.labels import crop_of, restrict_to_crop
from util.plant import COMBINATIONS
from util.service import DiagnosisService, Judged

MIN_CLASS_IMAGES = 10  # train.py leaves out classes with fewer photos (the card's "Left out")
CHUNK = 32  # photos handed to the service at once (its default PLANTNET_MAX_IMAGES_PER_REQUEST)


@dataclass(frozen=True)
class Photo:
    probabilities: np.ndarray
    known: bool  # the verdict accepts it (True when the model has no verdict)
    target: str  # the true label


@dataclass
class Tally:
    count: int = 0
    best_guess: int = 0
    right: int = 0
    harm: int = 0

    def add(self, label: str, target: str, accepted: bool) -> None:
        self.count += 1
        self.best_guess += label == target
        self.right += accepted and label == target
        self.harm += accepted and label != target

    def shares(self) -> dict[str, float | int]:
        n = max(self.count, 1)
        return {
            "count": self.count,
            "best_guess": round(self.best_guess / n, 4),
            "right": round(self.right / n, 4),
            "harm": round(self.harm / n, 4),
        }


def judge(service: DiagnosisService, paths: Sequence[Path], targets: Sequence[str]) -> list[Photo]:
    """Each photo's probabilities and verdict, through the service (unreadable photos are left out)."""
    photos = []
    for start in range(0, len(paths), CHUNK):
        chunk = [path.read_bytes() for path in paths[start : start + CHUNK]]
        for judged, target in zip(service.judge_many(chunk), targets[start : start + CHUNK], strict=True):
            if isinstance(judged, Judged):
                photos.append(Photo(judged.probabilities, judged.in_domain.known is not False, target))
    return photos


def top_label(probabilities: np.ndarray, labels: Sequence[str], crop: str | None) -> str:
    if crop is not None:
        probabilities, labels = restrict_to_crop(probabilities, labels, crop)
    return labels[int(np.argmax(probabilities))]


def single_photos(photos: Sequence[Photo], labels: Sequence[str], hint: bool) -> dict:
    tally = Tally()
    for photo in photos:
        crop = crop_of(photo.target) if hint else None
        tally.add(top_label(photo.probabilities, labels, crop), photo.target, photo.known)
    return tally.shares()


def groups_of(photos: Sequence[Photo], size: int, seed: int) -> list[list[Photo]]:
    """Disjoint groups of ``size`` photos of one class, dealt in a seeded random order."""
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[Photo]] = {}
    for photo in photos:
        by_class.setdefault(photo.target, []).append(photo)
    groups = []
    for members in by_class.values():
        order = rng.permutation(len(members))
        groups += [[members[i] for i in order[s : s + size]] for s in range(0, len(order) - size + 1, size)]
    return groups


def combined(groups: Sequence[list[Photo]], labels: Sequence[str], method: str, hint: bool) -> dict:
    tally = Tally()
    for group in groups:
        accepted = [photo for photo in group if photo.known]
        rows = [photo.probabilities for photo in (accepted or group)]  # none accepted: the nearest labels
        crop = crop_of(group[0].target) if hint else None
        tally.add(top_label(COMBINATIONS[method](rows), labels, crop), group[0].target, bool(accepted))
    return tally.shares()


def report(photos: Sequence[Photo], labels: Sequence[str], group_size: int, seed: int) -> dict:
    groups = groups_of(photos, group_size, seed)
    result: dict = {}
    for hint in (False, True):
        key = "with the true crop" if hint else "no hint"
        result[key] = {"one photo at a time": single_photos(photos, labels, hint)}
        for method in COMBINATIONS:
            result[key][f"groups of {group_size}: {method}"] = combined(groups, labels, method, hint)
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ds.add_dataset_arguments(parser)
    parser.add_argument("--model", type=Path, default=Path("plantnet"))
    parser.add_argument("--group-size", type=int, default=3)
    parser.add_argument("--field", type=Path, help="field photos, a folder per class (PlantDoc)")
    parser.add_argument("--field-limit", type=int, default=0, help="at most this many field photos (0: all)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)

    service = DiagnosisService(Settings.from_env(model_dir=args.model))
    try:
        service.ready.wait(300)
        label_map = ds.read_label_map(args.labels)
        data = ds.scan_folder(args.data, label_map, min_images=MIN_CLASS_IMAGES)
        indices, _ = ds.restrict_to_labels(
            data, ds.stratified_split(data.targets, args.val_fraction, args.seed)[1], service.labels
        )
        started = time.perf_counter()
        photos = judge(service, [data.paths[i] for i in indices], [data.labels[data.targets[i]] for i in indices])
        numbers: dict = {
            "model": service.model_info,
            "engine": f"{service.engine.name}/{service.engine.precision}",
            "validation": report(photos, service.labels, args.group_size, args.seed),
        }
        if args.field:
            field = ds.scan_folder(args.field, label_map)
            kept, _ = ds.restrict_to_labels(field, np.arange(len(field.paths)), service.labels)
            if args.field_limit:
                kept = sorted(np.random.default_rng(args.seed).permutation(kept)[: args.field_limit].tolist())
            field_photos = judge(
                service, [field.paths[i] for i in kept], [field.labels[field.targets[i]] for i in kept]
            )
            numbers["field"] = report(field_photos, service.labels, args.group_size, args.seed)
        numbers["seconds"] = round(time.perf_counter() - started, 1)
    finally:
        service.close()
    text = json.dumps(numbers, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
