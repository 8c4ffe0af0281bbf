"""Fixtures: a tiny real Keras model, the app built on it, its client and an uploader.

Helpers live in tests/support.py; import them from there, never from this file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fake_plantnet import fake, url  # noqa: F401  (fixtures: the client's HTTP double)
from tests.support import TEST_LIMITS, TINY_LABELS, TINY_METADATA, Diagnoser, build_tiny_model, serving
from util.model_dir import save_model_dir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("tiny-model")
    return save_model_dir(directory, build_tiny_model(), TINY_LABELS, TINY_METADATA).directory


@pytest.fixture(scope="session")
def openvino_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("openvino-cache")


@pytest.fixture
def bulk_env(monkeypatch, openvino_cache) -> None:
    """Commands that read PLANTNET_* like the server (util.bulk) reuse the session's converted tiny model."""
    monkeypatch.setenv("PLANTNET_CACHE_DIR", str(openvino_cache))
    monkeypatch.delenv("PLANTNET_MODEL_DIR", raising=False)


@pytest.fixture(scope="session")
def app(tiny_model_dir, openvino_cache):
    with serving(tiny_model_dir, openvino_cache, **TEST_LIMITS) as app:
        yield app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def diagnose(client) -> Diagnoser:
    """``diagnose.one(data)`` posts to /Diagnosis/prediction, ``diagnose.many(photos)`` to /Diagnosis/predictions."""
    return Diagnoser(client)


@pytest.fixture
def service(app):
    """The test app's DiagnosisService (model, engine, batcher)."""
    from util.service import EXTENSION

    return app.extensions[EXTENSION]
