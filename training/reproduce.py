"""Reproduce the shipped model with one command: the shipped seed and its confirming seed side by side.

    python -m training.reproduce --data ../shared/data/plantvillage/train \
        --labels ../shared/data/plantvillage/labels.tsv --outliers ../shared/data/ood \
        --field ../shared/data/field --work-dir runs/reproduce --out runs/reproduce/model  # --resume: continue

The recipe (RECIPE below, the one place it is written) fine-tunes the model a commit of this
repository shipped, taken out of git history, with train.py on every seed in RECIPE.seeds at the
same time, each process pinned to its own core (two runs on one core each finish both in the
time one run takes on two). Each run ends with train.py's finishing (batch-norm recalibration,
evaluation, in-domain calibration, model card): RECIPE.shipped_seed writes ``--out``, the model
to ship; the others write beside it in ``--work-dir`` and confirm the recipe is not one lucky
seed. ``--dry-run`` prints the commands without running them; a call after an interruption
skips finished runs and, with ``--resume``, continues the others from their last epoch.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from util.model_dir import CARD_FILE, KERAS_FILE


@dataclass(frozen=True)
class Recipe:
    start_commit: str  # a commit whose plantnet/ holds the starting weights
    input_size: int
    epochs: int
    learning_rate: float
    warmup_epochs: float
    ema_momentum: float
    seeds: tuple[int, ...]  # --train-seed of each run; the validation split's --seed stays train.py's default
    shipped_seed: int  # the run whose model ships; the other seeds confirm the recipe
    label_smoothing: float
    field_share: float
    zoom_in: float
    aspect_jitter: float
    blur_share: float
    synthetic_outliers: int
    stop_after_epochs: int  # the shipped run's schedule was cut here (by its time budget); 0: run it all
    precision: str = "mixed_bfloat16"

    def train_arguments(self) -> list[str]:
        return [
            "--input-size", str(self.input_size),
            "--precision", self.precision,
            "--epochs", str(self.epochs),
            "--learning-rate", str(self.learning_rate),
            "--warmup-epochs", str(self.warmup_epochs),
            "--ema-momentum", str(self.ema_momentum),
            "--label-smoothing", str(self.label_smoothing),
            "--field-share", str(self.field_share),
            "--zoom-in", str(self.zoom_in),
            "--aspect-jitter", str(self.aspect_jitter),
            "--blur-share", str(self.blur_share),
            "--synthetic-outliers", str(self.synthetic_outliers),
            "--stop-after-epochs", str(self.stop_after_epochs),
        ]  # fmt: skip


# The first field model (2026-12-07): the 2026-12-04 model (in 238d737's plantnet/) fine-tuned on lab and field
# photos together, the whole 11-epoch schedule.
RECIPE = Recipe(
    start_commit="238d737",
    input_size=160,
    epochs=11,
    learning_rate=4e-4,
    warmup_epochs=0.5,
    ema_momentum=0.99,
    seeds=(1337, 1338),
    shipped_seed=1337,
    label_smoothing=0.1,
    field_share=0.35,
    zoom_in=0.45,
    aspect_jitter=0.25,
    blur_share=0.2,
    synthetic_outliers=150,
    stop_after_epochs=0,
)


@dataclass(frozen=True)
class Step:
    description: str
    command: list[str]
    done: Path  # the file the step writes last: when it exists the step is skipped
    core: int | None = None  # pin the process to this CPU core


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="folder with one sub-folder per class")
    p.add_argument("--labels", type=Path, help="folder<TAB>display label file (labels.tsv)")
    p.add_argument("--outliers", type=Path, help="folder of photos that are no leaf of ours (../shared/data/ood)")
    p.add_argument("--field", type=Path, help="field photos in class folders (../shared/data/field)")
    p.add_argument("--work-dir", type=Path, default=Path("runs/reproduce"), help="runs, logs, the other seeds' models")
    p.add_argument("--out", type=Path, default=Path("runs/reproduce/model"), help="model directory to write")
    p.add_argument("--resume", action="store_true", help="continue the seeds' runs in --work-dir")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    return p.parse_args(argv)


def dataset_arguments(args: argparse.Namespace) -> list[str]:
    found = [("--data", args.data), ("--labels", args.labels), ("--outliers", args.outliers), ("--field", args.field)]
    return [part for flag, value in found if value is not None for part in (flag, str(value))]


def start_weights(work_dir: Path) -> Path:
    return work_dir / f"start-{RECIPE.start_commit}.keras"


def seed_model(args: argparse.Namespace, seed: int) -> Path:
    """The model directory a seed's run writes: ``--out`` for the shipped seed."""
    return args.out if seed == RECIPE.shipped_seed else args.work_dir / f"model-s{seed}"


def steps(args: argparse.Namespace, cores: list[int]) -> list[Step]:
    """One train.py run per seed, to run side by side, each on its own core (shared when there are fewer)."""
    work = args.work_dir
    return [
        Step(
            f"seed {seed}",
            [
                sys.executable, "train.py", *dataset_arguments(args),
                *RECIPE.train_arguments(),
                "--init-from", str(start_weights(work)),
                "--train-seed", str(seed),
                "--work-dir", str(work / f"run-s{seed}"),
                "--out", str(seed_model(args, seed)),
                *(["--resume"] if args.resume and (work / f"run-s{seed}").exists() else []),
            ],
            seed_model(args, seed) / CARD_FILE,  # the finishing writes it last
            cores[i % len(cores)],
        )
        for i, seed in enumerate(RECIPE.seeds)
    ]  # fmt: skip


def extract_start(work_dir: Path) -> None:
    """The starting weights, out of git history (the repository must be a clone, not an export)."""
    target = start_weights(work_dir)
    if target.exists():
        return
    work_dir.mkdir(parents=True, exist_ok=True)
    blob = subprocess.run(
        ["git", "show", f"{RECIPE.start_commit}:plantnet/{KERAS_FILE}"], check=True, capture_output=True
    ).stdout
    target.write_bytes(blob)


def run_side_by_side(stage: list[Step], log_dir: Path) -> None:
    """Start every step that is not done yet, each logging to its own file; wait for all."""
    running = []
    for step in stage:
        if step.done.exists():
            print(f"{step.description}: done ({step.done})")
            continue
        log = log_dir / f"{step.description.replace(' ', '-')}.log"
        print(f"{step.description}: {shlex.join(step.command)} > {log}", flush=True)
        pin = None if step.core is None else (lambda core=step.core: os.sched_setaffinity(0, {core}))
        with log.open("ab") as stream:
            running.append((step, subprocess.Popen(step.command, stdout=stream, stderr=stream, preexec_fn=pin)))
    for step, process in running:
        if process.wait() != 0:
            raise SystemExit(f"{step.description} failed (exit {process.returncode}): see {log_dir}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    runs = steps(args, sorted(os.sched_getaffinity(0)))
    if args.dry_run:
        for step in runs:
            core = "" if step.core is None else f"[core {step.core}] "
            print(f"{core}{shlex.join(step.command)}")
        return
    extract_start(args.work_dir)
    run_side_by_side(runs, args.work_dir)
    print(f"wrote {args.out} (seed {RECIPE.shipped_seed}); the other seeds' models are in {args.work_dir}")


if __name__ == "__main__":
    main()
