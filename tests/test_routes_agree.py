"""The same photo gets the same answer by every route, with the shipped model on the sample images.

Routes: the API's one-photo endpoint and its many-photo endpoint (a real server process on
127.0.0.1, the Procfile's command), the Python client against that server, bulk classification
in local mode, and bulk on Ray (skipped when Ray is not installed). Every route runs the engine
in f32, so the labels must be equal and every number within 1e-4 (batches of other sizes may
round differently), the in-domain score within one reference rank; the rest of the JSON must be equal.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from tests.support import PREDICT, PREDICTIONS, SAMPLES, SHIPPED_MODEL, Server, assert_same_answer, model_env
from util import bulk

pytestmark = [pytest.mark.shipped_model, pytest.mark.slow]
PRECISION = {"PLANTNET_PRECISION": "f32"}
TOLERANCE = 1e-4  # f32
PHOTOS = sorted(p for p in SAMPLES.glob("*.jpg"))  # the 13 leaves and the original 12-megapixel photo


@pytest.fixture(scope="module")
def server(openvino_cache):
    process = Server(model_env(SHIPPED_MODEL, openvino_cache, **PRECISION))
    try:
        process.wait_healthy(300)
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def api(server) -> dict[str, dict]:
    """The reference: each photo POSTed alone to /Diagnosis/prediction."""
    answers = {}
    with requests.Session() as session:
        for path in PHOTOS:
            r = session.post(f"{server.url}{PREDICT}", files={"image": (path.name, path.read_bytes())}, timeout=120)
            assert r.status_code == 200, r.text
            answers[path.name] = r.json()
    return answers


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    """PHOTOS alone in one folder: the folder routes walk sub-folders, and sample_images/field/ repeats names."""
    folder = tmp_path_factory.mktemp("photos")
    for path in PHOTOS:
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


@pytest.fixture
def f32(monkeypatch, openvino_cache):
    """In-process routes read PLANTNET_* like the server: f32, and the session's converted model."""
    monkeypatch.setenv("PLANTNET_CACHE_DIR", str(openvino_cache))
    for name, value in PRECISION.items():
        monkeypatch.setenv(name, value)


RANK_STEP = 0.01  # in_domain.score is a rank among held-out leaves: a tiny difference may move it one place


def assert_agree(route: dict[str, dict], api: dict[str, dict]) -> None:
    assert sorted(route) == sorted(api)
    for name, body in api.items():
        ours, theirs = dict(route[name]), dict(body)
        assert ours["label"] == theirs["label"], name
        ours_domain, theirs_domain = ours.pop("in_domain", None), theirs.pop("in_domain", None)
        assert_same_answer(ours, theirs, TOLERANCE, name)
        if isinstance(theirs_domain, dict) and isinstance(theirs_domain.get("score"), float):
            assert isinstance(ours_domain, dict), name
            ours_domain, theirs_domain = dict(ours_domain), dict(theirs_domain)
            assert abs(ours_domain.pop("score") - theirs_domain.pop("score")) <= RANK_STEP, name
        assert ours_domain == theirs_domain, name


def bulk_answers(out: Path) -> dict[str, dict]:
    items = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(item["status"] == 200 for item in items), items
    return {Path(item["source"]).name: item["diagnosis"] for item in items}


def test_the_many_photo_endpoint_agrees(server, api):
    files = [("images", (path.name, path.read_bytes())) for path in PHOTOS]
    r = requests.post(f"{server.url}{PREDICTIONS}", files=files, timeout=300)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [item["status"] for item in results] == [200] * len(PHOTOS)
    assert_agree({item["filename"]: item["diagnosis"] for item in results}, api)


def test_the_client_agrees(server, api, photo_folder):
    from plantnet_client import Client

    with Client(server.url, timeout=300) as client:
        results = list(client.diagnose_many([str(photo_folder)], batch_size=8))
    assert all(result.ok for result in results), [r.error_message for r in results if not r.ok]
    assert_agree({Path(result.source).name: dict(result.raw) for result in results}, api)


def test_bulk_local_agrees(api, f32, tmp_path, photo_folder):
    out = tmp_path / "bulk.jsonl"
    assert bulk.main([str(photo_folder), "--out", str(out), "--model", str(SHIPPED_MODEL), "--no-progress"]) == 0
    assert_agree(bulk_answers(out), api)


def test_bulk_on_ray_agrees(api, f32, tmp_path, photo_folder):
    pytest.importorskip("ray.data", reason="Ray is not installed: .venv/bin/pip install -r requirements-ray.txt")
    out = tmp_path / "ray.jsonl"
    argv = [str(photo_folder), "--out", str(out), "--model", str(SHIPPED_MODEL), "--ray", "--no-progress"]
    assert bulk.main(argv) == 0
    assert_agree(bulk_answers(out), api)
