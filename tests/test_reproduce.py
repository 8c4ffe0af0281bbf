"""The one-command reproduction: its plan (without training anything) and its resumability."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from training import reproduce
from util.model_dir import CARD_FILE

DATA = ["--data", "d", "--labels", "l.tsv", "--outliers", "o"]


def plan(tmp_path: Path, *extra: str, cores=(0, 1)) -> list[reproduce.Step]:
    args = reproduce.parse_args([*DATA, "--work-dir", str(tmp_path), "--out", str(tmp_path / "model"), *extra])
    return reproduce.steps(args, list(cores))


def argument(step: reproduce.Step, flag: str) -> str:
    return step.command[step.command.index(flag) + 1]


def test_seeds_train_side_by_side_on_their_own_cores(tmp_path):
    runs = plan(tmp_path)
    assert [s.core for s in runs] == [0, 1]
    assert [argument(s, "--train-seed") for s in runs] == [str(seed) for seed in reproduce.RECIPE.seeds]
    for step in runs:
        assert argument(step, "--init-from") == str(reproduce.start_weights(tmp_path))
        assert argument(step, "--epochs") == str(reproduce.RECIPE.epochs)
        assert argument(step, "--outliers") == "o" and "--resume" not in step.command
    # the shipped seed writes --out; the confirming seed writes into the work dir
    shipped = {argument(s, "--train-seed"): s for s in runs}[str(reproduce.RECIPE.shipped_seed)]
    assert argument(shipped, "--out") == str(tmp_path / "model") and shipped.done == tmp_path / "model" / CARD_FILE
    assert len({argument(s, "--out") for s in runs}) == len(runs)


def test_one_core_runs_the_seeds_on_it(tmp_path):
    assert [s.core for s in plan(tmp_path, cores=(3,))] == [3, 3]


def test_resume_continues_only_runs_that_started(tmp_path):
    (tmp_path / f"run-s{reproduce.RECIPE.seeds[0]}").mkdir()
    assert ["--resume" in s.command for s in plan(tmp_path, "--resume")] == [True, False]


def test_finished_runs_are_skipped_and_failures_stop(tmp_path, capsys):
    done = tmp_path / "done.md"
    done.touch()
    ran = tmp_path / "ran.txt"
    write = [sys.executable, "-c", f"open({str(ran)!r}, 'w').write('x')"]
    reproduce.run_side_by_side(
        [reproduce.Step("finished", ["false"], done), reproduce.Step("new", write, ran)], tmp_path
    )
    assert ran.read_text() == "x" and (tmp_path / "new.log").exists()
    assert "finished: done" in capsys.readouterr().out
    failing = reproduce.Step("broken", [sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "never")
    with pytest.raises(SystemExit, match=r"broken failed \(exit 3\)"):
        reproduce.run_side_by_side([failing], tmp_path)


def test_dry_run_prints_every_command_and_does_nothing(tmp_path, capsys):
    reproduce.main([*DATA, "--work-dir", str(tmp_path), "--dry-run"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(reproduce.RECIPE.seeds)
    assert all(line.startswith("[core ") and "train.py" in line for line in lines)
    assert not list(tmp_path.iterdir())  # nothing extracted, nothing run
