"""The shipped model in plantnet/: real diagnoses of the sample photos, in-process and over HTTP."""

from __future__ import annotations

import pytest
import requests

from tests.support import PREDICT, SHIPPED_MODEL, Diagnoser, Server, expected_samples, model_env, sample_bytes, serving
from util.model import find_artifact

pytestmark = pytest.mark.shipped_model
SAMPLES = expected_samples()


@pytest.fixture(scope="module")
def shipped(openvino_cache) -> Diagnoser:
    with serving(SHIPPED_MODEL, openvino_cache) as app:
        yield Diagnoser(app.test_client())


def test_shipped_model_is_the_trained_inception_v3():
    artifact = find_artifact(SHIPPED_MODEL)
    assert artifact.kind == "keras" and artifact.name == "plantnet-inceptionv3"
    assert len(artifact.labels) == 34
    assert (SHIPPED_MODEL / "MODEL.md").exists() and (SHIPPED_MODEL / "confusion_matrix.png").exists()


def test_sample_images_cover_several_crops():
    assert len(SAMPLES) >= 10
    assert len({label.split("_")[0] for _, label in SAMPLES}) >= 8


@pytest.mark.parametrize(("name", "label"), SAMPLES, ids=[name for name, _ in SAMPLES])
def test_sample_photo_is_diagnosed_as_its_true_label(shipped, name, label):
    r = shipped.one(sample_bytes(name), name)
    assert r.status_code == 200, r.get_data(as_text=True)
    body = r.get_json()
    assert body["label"] == label, body["top_k"]
    assert body["confidence"] > 5 / 34  # far above chance among the 34 labels


def test_the_original_twelve_megapixel_sample_is_answered(shipped):
    r = shipped.one(sample_bytes("plantnet_original_sample.jpg"), "sample.jpg")
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.get_json()["label"] in find_artifact(SHIPPED_MODEL).labels


@pytest.mark.slow
def test_procfile_command_serves_a_real_diagnosis_over_http(openvino_cache):
    """Start the Procfile's web command on 127.0.0.1 and POST a sample photo with requests."""
    server = Server(model_env(SHIPPED_MODEL, openvino_cache))
    try:
        server.wait_healthy()
        name, label = SAMPLES[0]
        r = requests.post(
            f"{server.url}{PREDICT}", files={"image": (name, sample_bytes(name), "image/jpeg")}, timeout=30
        )
        assert r.status_code == 200, r.text
        assert r.json()["label"] == label
        assert r.headers["Content-Type"].startswith("application/json") and r.headers["X-Request-ID"]
        assert requests.get(f"{server.url}{PREDICT}", timeout=10).status_code == 405
        assert requests.get(f"{server.url}/", timeout=10).status_code == 200
    finally:
        returncode = server.stop()
    assert returncode == 0
