"""Dynamic batching: shared engine calls, one answer per request, failures kept to their batch."""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import image_bytes, sample_bytes

from util.batcher import Batcher, BatcherClosed

SHAPE = (4, 4, 3)


class RecordingModel:
    """A deterministic stand-in engine: each row's answer is a function of its own pixels."""

    def __init__(self, delay: float = 0.0, fail_on: float | None = None):
        self.batch_sizes: list[int] = []
        self.delay = delay
        self.fail_on = fail_on

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.batch_sizes.append(len(batch))
        time.sleep(self.delay)
        if self.fail_on is not None and np.isclose(batch[:, 0, 0, 0], self.fail_on).any():
            raise RuntimeError("engine failure")
        means = batch.reshape(len(batch), -1).mean(axis=1)
        return np.stack([means, -means, means * 2], axis=1)


def pixels(value: float) -> np.ndarray:
    return np.full(SHAPE, value, np.float32)


def test_requests_that_arrive_together_share_a_batch_and_get_their_own_rows():
    model = RecordingModel(delay=0.02)
    batcher = Batcher(model, SHAPE, max_batch_size=8, max_wait_ms=50)
    try:
        futures = [batcher.submit(pixels(i)) for i in range(20)]
        answers = [f.result(5) for f in futures]
    finally:
        batcher.close()
    for i, answer in enumerate(answers):
        np.testing.assert_allclose(answer, [i, -i, 2 * i])
    assert max(model.batch_sizes) > 1
    assert max(model.batch_sizes) <= 8
    assert sum(model.batch_sizes) == 20


def test_concurrent_answers_equal_sequential_ones():
    model = RecordingModel()
    batcher = Batcher(model, SHAPE, max_batch_size=16, max_wait_ms=5)
    try:
        sequential = [batcher.predict(pixels(v)) for v in np.linspace(0, 1, 40)]
        with ThreadPoolExecutor(16) as pool:
            concurrent = list(pool.map(lambda v: batcher.predict(pixels(v)), np.linspace(0, 1, 40)))
    finally:
        batcher.close()
    np.testing.assert_allclose(np.array(concurrent), np.array(sequential))


def test_a_lone_request_waits_at_most_about_max_wait():
    batcher = Batcher(RecordingModel(), SHAPE, max_batch_size=16, max_wait_ms=30)
    try:
        began = time.monotonic()
        batcher.predict(pixels(1), timeout=5)
        assert time.monotonic() - began < 0.03 + 0.5  # generous: a bound, not a benchmark
    finally:
        batcher.close()


def test_an_engine_failure_fails_only_its_batch_and_the_batcher_keeps_serving():
    model = RecordingModel(fail_on=7.0)
    batcher = Batcher(model, SHAPE, max_batch_size=1, max_wait_ms=0)
    try:
        bad = batcher.submit(pixels(7))
        good = batcher.submit(pixels(3))
        with pytest.raises(RuntimeError, match="engine failure"):
            bad.result(5)
        np.testing.assert_allclose(good.result(5), [3, -3, 6])
        np.testing.assert_allclose(batcher.predict(pixels(1), timeout=5), [1, -1, 2])
    finally:
        batcher.close()


def test_wrong_shape_is_refused_before_queueing():
    batcher = Batcher(RecordingModel(), SHAPE)
    try:
        with pytest.raises(ValueError, match="shape"):
            batcher.submit(np.zeros((5, 5, 3), np.float32))
    finally:
        batcher.close()


def test_close_answers_queued_work_then_refuses_new_work():
    model = RecordingModel(delay=0.05)
    batcher = Batcher(model, SHAPE, max_batch_size=2, max_wait_ms=1)
    futures = [batcher.submit(pixels(i)) for i in range(6)]
    batcher.close()
    assert [float(f.result(5)[0]) for f in futures] == [0, 1, 2, 3, 4, 5]
    with pytest.raises(BatcherClosed):
        batcher.submit(pixels(1))


def test_mixed_good_and_bad_uploads_sent_together_get_their_own_answers(app):
    good = {name: sample_bytes(name) for name in ("tomato_healthy.jpg", "apple_scab.jpg", "grape_black_rot.jpg")}
    bad = {"empty": (b"", 400), "text": (b"plain text", 415), "truncated": (image_bytes(fmt="JPEG")[:300], 400)}
    client = app.test_client()

    def post(data: bytes):
        r = app.test_client().post("/Diagnosis/prediction", data={"image": (io.BytesIO(data), "x.jpg")})
        return r.status_code, r.get_json()

    alone = {name: post(data)[1] for name, data in good.items()}
    jobs = [(name, data) for name, data in good.items()] * 4 + [(name, data) for name, (data, _) in bad.items()] * 4
    barrier = threading.Barrier(len(jobs))

    def together(job):
        barrier.wait()
        return job[0], post(job[1])

    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(together, jobs))
    for name, (status, body) in answers:
        if name in good:
            assert status == 200 and body == alone[name]
        else:
            assert status == bad[name][1] and body["message"]
    assert client.get("/health").status_code == 200
