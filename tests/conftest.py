"""Shared fixtures: a tiny real Keras model, apps built on it, and uploads made in memory."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest
import requests
from flask import Flask
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_images"
SHIPPED_MODEL = ROOT / "plantnet"
TINY_DATA = Path(__file__).parent / "data" / "tiny"
TINY_LABELS_TSV = Path(__file__).parent / "data" / "tiny-labels.tsv"
LEGACY_FIXTURE = Path(__file__).parent / "fixtures" / "plantnet-original"
TINY_LABELS = ("Tomato_healthy", "Tomato_Late blight", "Apple_scab")
TINY_SIZE = 32


def build_tiny_model(size: int = TINY_SIZE, classes: int = len(TINY_LABELS), seed: int = 7):
    """A small real CNN whose answer depends on the image: enough to test serving end to end."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3))
    x = layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="tiny")


def write_model_dir(directory: Path, model, labels) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory / "model.keras")
    (directory / "labels.txt").write_text("\n".join(labels) + "\n")
    (directory / "model.json").write_text('{"name": "tiny-test-model", "version": "0.0.1"}')
    return directory


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("tiny-model"), build_tiny_model(), TINY_LABELS)


@pytest.fixture(scope="session")
def openvino_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("openvino-cache")


@contextmanager
def serving(model_dir: Path, cache_dir: Path, **settings) -> Iterator[Flask]:
    """An app on ``model_dir``, warmed up; its inference thread is stopped on exit."""
    from application import create_app

    app = create_app({"TESTING": True, "PLANTNET": {"model_dir": model_dir, "cache_dir": cache_dir, **settings}})
    try:
        assert app.extensions["plantnet"].ready.wait(120), "the model did not warm up"
        yield app
    finally:
        app.extensions["plantnet"].close()


@pytest.fixture(scope="session")
def app(tiny_model_dir, openvino_cache):
    with serving(tiny_model_dir, openvino_cache, max_upload_bytes=2 * 1024 * 1024, max_pixels=5_000_000) as app:
        yield app


@pytest.fixture
def client(app):
    return app.test_client()


def image_bytes(mode: str = "RGB", size=(64, 48), fmt: str = "PNG", color=None, **save) -> bytes:
    """Encode a synthetic image in memory: a gradient, so resizing and orientation are visible."""
    width, height = size
    ramp = np.linspace(0, 255, width * height, dtype=np.float64).reshape(height, width)
    rgb = np.stack([ramp, ramp[::-1], np.full_like(ramp, 90)], axis=-1).astype(np.uint8)
    image = Image.fromarray(rgb, "RGB") if color is None else Image.new("RGB", size, color)
    if mode != "RGB":
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


def sample_bytes(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def expected_samples() -> list[tuple[str, str]]:
    """(file name, true label) for each leaf photo in sample_images/labels.tsv."""
    rows = (SAMPLES / "labels.tsv").read_text().splitlines()[1:]
    return [tuple(row.split("\t")[:2]) for row in rows if row.strip()]


def procfile_web_command() -> list[str]:
    """The Procfile's web command, with its program taken from this Python's environment."""
    line = next(line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:"))
    program, *args = line.split(":", 1)[1].split()
    return [str(Path(sys.executable).with_name(program)), *args]


def start_server(model_dir: Path, cache_dir: Path, **env: str) -> tuple[subprocess.Popen, str]:
    """Start the production command on a free 127.0.0.1 port; return the process and its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    full_env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "PLANTNET_MODEL_DIR": str(model_dir),
        "PLANTNET_CACHE_DIR": str(cache_dir),
        **env,
    }
    process = subprocess.Popen(
        procfile_web_command(), cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    return process, f"http://127.0.0.1:{port}"


def wait_healthy(process: subprocess.Popen, url: str, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    pytest.fail(f"the service was not healthy within {limit:.0f} s")
