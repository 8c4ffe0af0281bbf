"""Health that tells the truth (issue 27): a dead or stalled inference thread, a damaged engine cache."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from application import create_app
from tests.support import PREDICT, Server, model_env, sample_bytes, serving
from util.batcher import Batcher, BatcherClosed
from util.model_dir import INT8_IR, ModelLoadError
from util.service import DiagnosisService

SHAPE = (2, 2, 3)


def echo(batch: np.ndarray) -> np.ndarray:
    return batch.reshape(len(batch), -1)[:, :2]


def test_a_warm_up_that_keeps_failing_stops_the_thread_and_refuses_work_at_once():
    def broken_warm_up():
        raise RuntimeError("no memory for the engine")

    batcher = Batcher(echo, SHAPE, before_first=broken_warm_up, warm_up_attempts=3, retry_pause_s=0.01)
    assert batcher.warmed.wait(5)
    assert not batcher.alive and "no memory" in str(batcher.failure)
    began = time.monotonic()
    with pytest.raises(BatcherClosed, match="no memory"):
        batcher.submit(np.zeros(SHAPE, np.float32))
    assert time.monotonic() - began < 0.5


def test_a_warm_up_that_fails_once_is_retried_and_the_batcher_serves():
    calls = []

    def flaky_warm_up():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first call failed")

    batcher = Batcher(echo, SHAPE, before_first=flaky_warm_up, retry_pause_s=0.01)
    try:
        assert batcher.predict(np.ones(SHAPE, np.float32), timeout=5).tolist() == [1.0, 1.0]
        assert len(calls) == 2 and batcher.alive and batcher.failure is None
    finally:
        batcher.close()


def test_work_queued_before_the_thread_dies_fails_instead_of_timing_out():
    started = threading.Event()

    def slow_broken_warm_up():
        started.set()
        time.sleep(0.2)
        raise RuntimeError("engine gone")

    batcher = Batcher(echo, SHAPE, before_first=slow_broken_warm_up, warm_up_attempts=1)
    started.wait(5)
    future = batcher.submit(np.zeros(SHAPE, np.float32))
    with pytest.raises(BatcherClosed):
        future.result(timeout=5)


def test_a_hung_engine_shows_as_stalled_while_work_waits():
    release = threading.Event()

    def hanging(batch: np.ndarray) -> np.ndarray:
        release.wait(10)
        return echo(batch)

    batcher = Batcher(hanging, SHAPE, max_wait_ms=1)
    try:
        assert batcher.stalled_for() == 0.0
        future = batcher.submit(np.zeros(SHAPE, np.float32))
        time.sleep(0.3)
        assert batcher.stalled_for() >= 0.25 and batcher.alive
        release.set()
        future.result(timeout=5)
        assert batcher.stalled_for() == 0.0
    finally:
        release.set()
        batcher.close()


def test_readiness_and_liveness_report_a_stalled_then_dead_engine(tiny_model_dir, openvino_cache):
    with serving(tiny_model_dir, openvino_cache, inference_stall_s=0.2) as app:
        client, service = app.test_client(), app.extensions["diagnosis"]
        assert client.get("/health/ready").get_json()["status"] == "ok"
        release = threading.Event()
        predict = service.batcher._predict
        service.batcher._predict = lambda batch: (release.wait(10), predict(batch))[1]  # the engine hangs
        waiting = threading.Thread(target=service.diagnose, args=(sample_bytes("tomato_healthy.jpg"), 3))
        waiting.start()
        time.sleep(0.5)
        stalled = client.get("/health/ready")
        assert stalled.status_code == 503 and stalled.get_json()["status"] == "stalled"
        assert client.get("/health/live").status_code == 200  # slow is not dead
        release.set()
        waiting.join(10)
        assert client.get("/health/ready").status_code == 200


@pytest.mark.slow  # three warm-up attempts, 2 and 4 s apart
def test_a_failed_warm_up_fails_liveness_and_answers_503_at_once(tiny_model_dir, openvino_cache, monkeypatch):
    def broken(self):
        raise RuntimeError("the engine cannot run a batch")

    monkeypatch.setattr(DiagnosisService, "_warm_up", broken)
    with ServingUnready(tiny_model_dir, openvino_cache) as app:
        client = app.test_client()
        assert app.extensions["diagnosis"].batcher.warmed.wait(30)
        assert client.get("/health/live").status_code == 503
        assert client.get("/health/live").get_json() == {"status": "dead"}
        assert client.get("/health/ready").get_json()["status"] == "failed"
        began = time.monotonic()
        r = client.post(PREDICT, data={"image": (io.BytesIO(sample_bytes("tomato_healthy.jpg")), "a.jpg")})
        assert r.status_code == 503 and "Retry-After" in r.headers
        assert time.monotonic() - began < 2


class ServingUnready:
    """An app whose warm-up may fail: ``serving`` would wait for it to be ready."""

    def __init__(self, model_dir, cache_dir):
        self.app = create_app({"TESTING": True, "SETTINGS": {"model_dir": model_dir, "cache_dir": cache_dir}})

    def __enter__(self):
        return self.app

    def __exit__(self, *exc):
        self.app.extensions["diagnosis"].close()


def test_a_damaged_int8_ir_is_one_clear_line(tiny_model_dir, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    ir = model_dir / INT8_IR
    ir.parent.mkdir(parents=True)
    ir.write_text("<net>not an IR</net>")
    ir.with_suffix(".bin").write_bytes(b"\0" * 10)
    with pytest.raises(ModelLoadError, match="cannot be read by OpenVINO") as caught:
        create_app({"SETTINGS": {"model_dir": model_dir, "cache_dir": tmp_path / "cache", "precision": "int8"}})
    assert "\n" not in str(caught.value)


@pytest.mark.slow
def test_a_truncated_engine_cache_is_converted_again(app, tiny_model_dir, openvino_cache, tmp_path):
    from util.engine import openvino_ir
    from util.model_dir import find_artifact

    cache = tmp_path / "cache"
    shutil.copytree(openvino_cache, cache)
    # The tiny model's own IR: the session's cache also holds other models' (which one a glob finds first varies)
    weights = openvino_ir(find_artifact(tiny_model_dir), cache).with_suffix(".bin")
    weights.write_bytes(weights.read_bytes()[:100])
    with serving(tiny_model_dir, cache, backend="openvino") as rebuilt:
        r = rebuilt.test_client().post(
            PREDICT, data={"image": (io.BytesIO(sample_bytes("tomato_healthy.jpg")), "a.jpg")}
        )
        assert r.status_code == 200, r.get_data(as_text=True)
    assert weights.stat().st_size > 100


@pytest.mark.slow
def test_two_processes_converting_into_one_cache_at_once_both_succeed(tiny_model_dir, tmp_path):
    """Replicas starting together on one cache volume: each converts, neither loses its half-written pair."""
    ir = tmp_path / "cache" / "model.xml"
    command = [sys.executable, "-m", "util.export", str(tiny_model_dir), str(ir)]
    root = Path(__file__).resolve().parent.parent
    both = [subprocess.Popen(command, cwd=root, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [process.communicate(timeout=300)[1] for process in both]
    assert [process.returncode for process in both] == [0, 0], errors
    assert sorted(path.name for path in ir.parent.iterdir()) == ["model.bin", "model.xml"]  # no partial left
    assert ir.with_suffix(".bin").stat().st_size > 0


@pytest.mark.slow
def test_the_server_ends_with_one_line_when_the_warm_up_keeps_failing(tiny_model_dir, openvino_cache):
    inject = (
        "import sys, util.service as s\n"
        "def broken(self): raise RuntimeError('the engine cannot run a batch')\n"
        "s.DiagnosisService._warm_up = broken\n"
        "from util.server import main\n"
        "sys.exit(main())\n"
    )
    server = Server(model_env(tiny_model_dir, openvino_cache), command=[Path(sys.executable).name, "-c", inject])
    _, stderr = server.process.communicate(timeout=120)
    assert server.process.returncode == 3, stderr
    lines = [line for line in stderr.splitlines() if "cannot start:" in line]
    assert len(lines) == 1 and "warm-up failed: the engine cannot run a batch" in lines[0], stderr
    assert stderr.count("warm-up failed (attempt") == 3
