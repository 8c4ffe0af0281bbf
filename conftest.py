"""Run-wide pytest hooks and the logging reset every test gets (other fixtures live in tests/conftest.py).

`pytest` leaves out the tests marked slow and `pytest -m slow` runs only them (pyproject.toml), so a run
whose every collected test was left out by the marker, say `pytest tests/test_train.py`, is not a failure:
it ends with 0 and says how to run them, instead of pytest's exit code 5 ("no tests collected"). A run
that collects nothing at all still ends with 5.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

DESELECTED = pytest.StashKey[int]()


@pytest.fixture(autouse=True)
def restore_root_logging() -> Iterator[None]:
    """A command a test runs (util.bulk, util.server) sets the root logger up for its process, writing to the
    stderr pytest lent that test; put pytest's handlers back, or later threads log to a closed stream."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def pytest_deselected(items: list[pytest.Item]) -> None:
    config = items[0].config if items else None
    if config is not None:
        config.stash[DESELECTED] = config.stash.get(DESELECTED, 0) + len(items)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    left_out = session.config.stash.get(DESELECTED, 0)
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and left_out:
        session.exitstatus = pytest.ExitCode.OK


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    left_out = config.stash.get(DESELECTED, 0)
    if left_out and not terminalreporter.stats.get("passed") and not terminalreporter.stats.get("failed"):
        expression = config.option.markexpr
        terminalreporter.write_line(f"all {left_out} collected tests left out by -m {expression!r}")
