"""Clean faults: a broken model stops start-up with one clear line; SIGTERM lets answers finish."""

from __future__ import annotations

import io
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
import requests

from application import create_app
from tests.support import PREDICT, Server, model_env, sample_bytes, serving
from util.model_dir import ModelLoadError


def broken_copy(tiny_model_dir: Path, target: Path, breakage: str) -> Path:
    shutil.copytree(tiny_model_dir, target)
    if breakage == "corrupt model":
        (target / "model.keras").write_bytes(os.urandom(4096))
    elif breakage == "mislabelled":
        (target / "labels.txt").write_text("Tomato_healthy\nApple_scab\n")
    elif breakage == "no labels":
        (target / "labels.txt").unlink()
    elif breakage == "missing model":
        (target / "model.keras").unlink()
    return target


BREAKAGES = {
    "corrupt model": "model.keras",
    "mislabelled": "labels.txt",
    "no labels": "labels.txt",
    "missing model": "model.keras",
}


@pytest.mark.parametrize(("breakage", "named_file"), BREAKAGES.items(), ids=BREAKAGES.keys())
def test_broken_model_refuses_to_start_naming_the_file(tiny_model_dir, tmp_path, breakage, named_file):
    model_dir = broken_copy(tiny_model_dir, tmp_path / "model", breakage)
    with pytest.raises(ModelLoadError, match=named_file):
        create_app({"SETTINGS": {"model_dir": model_dir, "cache_dir": tmp_path / "cache", "backend": "tensorflow"}})


def test_missing_model_directory_is_named(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        create_app({"SETTINGS": {"model_dir": tmp_path / "nowhere"}})


@pytest.mark.slow
@pytest.mark.parametrize("breakage", ["corrupt model", "mislabelled"])
def test_production_command_exits_non_zero_with_one_clear_line(tiny_model_dir, tmp_path, breakage):
    model_dir = broken_copy(tiny_model_dir, tmp_path / "model", breakage)
    process = Server(model_env(model_dir, tmp_path / "cache")).process
    _, stderr = process.communicate(timeout=180)
    assert process.returncode != 0
    lines = [line for line in stderr.splitlines() if "cannot start:" in line]
    assert len(lines) == 1, stderr
    assert BREAKAGES[breakage] in lines[0]
    assert "Traceback" not in stderr


@pytest.mark.slow
def test_sigterm_answers_in_flight_requests_before_exiting(tiny_model_dir, openvino_cache):
    server = Server(
        model_env(tiny_model_dir, openvino_cache, PLANTNET_MAX_WAIT_MS="1500", PLANTNET_MAX_BATCH_SIZE="64")
    )
    process = server.process
    try:
        server.wait_healthy()
        answers: list[int] = []

        def post() -> None:
            files = {"image": ("leaf.jpg", sample_bytes("tomato_healthy.jpg"))}
            answers.append(requests.post(f"{server.url}{PREDICT}", files=files, timeout=30).status_code)

        clients = [threading.Thread(target=post) for _ in range(4)]
        for client in clients:
            client.start()
        time.sleep(0.7)  # the requests now wait in the batcher for company
        process.send_signal(signal.SIGTERM)
        for client in clients:
            client.join(30)
        assert answers == [200, 200, 200, 200]
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_error_bodies_reveal_no_internals(app):
    client = app.test_client()
    bodies = [
        client.post("/Diagnosis/prediction", data={"image": (io.BytesIO(b"\x89PNG\r\n\x1a\n"), "x.png")}).get_data(
            True
        ),
        client.post("/Diagnosis/prediction", data={}).get_data(True),
        client.post("/Diagnosis/predictions", data={}).get_data(True),
        client.get("/Diagnosis/prediction").get_data(True),
        client.get("/missing").get_data(True),
    ]
    for body in bodies:
        for leak in ("Traceback", "/work", ".py", "werkzeug", "flask", "tensorflow", "openvino", "PIL"):
            assert leak not in body, body


@pytest.mark.parametrize("path", ["/Diagnosis/prediction", "/Diagnosis/predictions"])
def test_an_internal_bug_is_a_bare_500_logged_once(app, service, caplog, monkeypatch, path):
    def broken(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(service, "diagnose_many", broken)
    field = "image" if path.endswith("prediction") else "images"
    r = app.test_client().post(path, data={field: (io.BytesIO(b"x"), "x.jpg")})
    assert r.status_code == 500
    assert "secret" not in r.get_data(True) and r.get_json()["message"]
    assert (
        sum(
            "secret internal detail" in (rec.exc_text or "") or "secret" in rec.getMessage()
            for rec in caplog.records
            if rec.levelname == "ERROR"
        )
        == 1
    )


def test_debug_is_off(tiny_model_dir, openvino_cache):
    with serving(tiny_model_dir, openvino_cache) as app:  # the session's converted model: no conversion here
        assert app.debug is False and app.config["PROPAGATE_EXCEPTIONS"] is False
