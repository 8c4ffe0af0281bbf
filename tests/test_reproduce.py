"""The one-command reproduction: its plan (without training anything) and its resumability."""

from __future__ import annotations

import sys
from pathlib import Path

from util.training import reproduce

DATA = ["--data", "d", "--labels", "l.tsv", "--outliers", "o"]


def plan(tmp_path: Path, *extra: str, cores=(0, 1)) -> list[list[reproduce.Step]]:
    args = reproduce.parse_args([*DATA, "--work-dir", str(tmp_path), "--out", str(tmp_path / "model"), *extra])
    return reproduce.steps(args, list(cores))


def test_seeds_train_side_by_side_on_their_own_cores(tmp_path):
    seeds, soup, finish = plan(tmp_path)
    assert [s.core for s in seeds] == [0, 1]
    assert len(seeds) == len(reproduce.RECIPE.seeds) == 2
    for step, seed in zip(seeds, reproduce.RECIPE.seeds, strict=True):
        command = step.command
        assert command[command.index("--train-seed") + 1] == str(seed)
        assert command[command.index("--init-from") + 1] == str(reproduce.start_weights(tmp_path))
        assert command[command.index("--epochs") + 1] == str(reproduce.RECIPE.epochs)
        assert "--resume" not in command
    # the soup averages exactly the seeds' models, and the finishing reads the soup
    assert [a for a in soup[0].command if a.endswith("model.keras")] == [str(s.done) for s in seeds]
    assert finish[0].command[finish[0].command.index("--finish-from") + 1] == str(soup[0].done)
    assert finish[0].done == tmp_path / "model" / "model.keras"


def test_one_core_runs_the_seeds_on_it(tmp_path):
    seeds, _, _ = plan(tmp_path, cores=(3,))
    assert [s.core for s in seeds] == [3, 3]


def test_resume_continues_only_runs_that_started(tmp_path):
    (tmp_path / f"run-s{reproduce.RECIPE.seeds[0]}").mkdir()
    seeds, _, _ = plan(tmp_path, "--resume")
    assert ["--resume" in s.command for s in seeds] == [True, False]


def test_finished_steps_are_skipped_and_failures_stop(tmp_path, capsys):
    done = tmp_path / "done.keras"
    done.touch()
    ran = tmp_path / "ran.txt"
    write = [sys.executable, "-c", f"open({str(ran)!r}, 'w').write('x')"]
    reproduce.run_stage([reproduce.Step("finished", ["false"], done), reproduce.Step("new", write, ran)], tmp_path)
    assert ran.read_text() == "x"
    assert "finished: done" in capsys.readouterr().out
    failing = reproduce.Step("broken", [sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "never")
    try:
        reproduce.run_stage([failing], tmp_path)
    except SystemExit as stop:
        assert "broken failed (exit 3)" in str(stop)
    else:
        raise AssertionError("a failing step must stop the reproduction")


def test_dry_run_prints_every_command(tmp_path, capsys):
    reproduce.main([*DATA, "--work-dir", str(tmp_path), "--dry-run"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(reproduce.RECIPE.seeds) + 2
    assert lines[0].startswith("[core ") and "train.py" in lines[0]
    assert not list(tmp_path.iterdir())  # nothing extracted, nothing run
