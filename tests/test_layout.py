"""The house keeps its shape: the server never loads training code, TensorFlow or matplotlib; tests and bench
depend in one direction only."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import pytest

from tests.support import ROOT, model_env

SERVER_MUST_NOT_LOAD = ("tensorflow", "keras", "tf_keras", "matplotlib", "training")

SERVING_PROCESS = """
import json, sys
from util.config import Settings
from util.engine import openvino_ir
from util.model_dir import find_artifact

settings = Settings.from_env()
openvino_ir(find_artifact(settings.model_dir), settings.openvino_cache)  # converts in a child process if needed
from application import create_app

app = create_app()
service = app.extensions["diagnosis"]
assert service.ready.wait(120)
with open(sys.argv[1], "rb") as photo:
    answer = app.test_client().post("/Diagnosis/prediction", data={"image": (photo, "leaf.jpg")})
assert answer.status_code == 200, answer.get_data(as_text=True)
print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] in {"tensorflow", "keras", "tf_keras",
      "matplotlib"} or name.startswith("training"))))
"""


@pytest.mark.slow
def test_a_serving_worker_never_loads_training_code_tensorflow_or_matplotlib(tiny_model_dir, openvino_cache):
    env = {**os.environ, **model_env(tiny_model_dir, openvino_cache, PLANTNET_BACKEND="openvino")}
    photo = ROOT / "sample_images" / "tomato_healthy.jpg"
    done = subprocess.run(
        [sys.executable, "-c", SERVING_PROCESS, str(photo)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def imports_of(path) -> set[str]:
    """Every module a Python file imports, at any depth (lazy imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


SERVING_MODULES = [
    path
    for path in (ROOT / "util").rglob("*.py")
    if "training" not in path.relative_to(ROOT).parts and path.name not in ("export.py", "bulk.py")
]


@pytest.mark.parametrize("path", SERVING_MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_serving_code_does_not_import_training_code(path):
    assert not {name for name in imports_of(path) if name.startswith("training") or name == "matplotlib"}


TEST_FILES = sorted([*(ROOT / "tests").glob("*.py"), *(ROOT / "client" / "tests").glob("*.py")])


def is_test_module(name: str) -> bool:
    return name.rsplit(".", 1)[-1].startswith("test_")


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_test_imports_conftest_another_test_module_or_bench(path):
    """Shared helpers live in tests/support.py (and the doubles beside it); fixtures come through conftest."""
    names = imports_of(path)
    assert "conftest" not in names and not any(name.endswith(".conftest") for name in names)
    assert not [name for name in names if is_test_module(name)]
    assert not any(name == "bench" or name.startswith("bench.") for name in names)


def test_the_import_check_sees_every_kind_of_test_module_import():
    assert is_test_module("tests.test_bulk") and is_test_module("test_bulk")
    assert not is_test_module("tests.support") and not is_test_module("pytest")
