"""Dynamic batching: shared engine calls, one answer per request, failures kept to their batch."""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tests.payloads import payload
from tests.support import sample_bytes
from util.batcher import Batcher, BatcherClosed, Overloaded

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


def test_waiting_only_for_announced_work_runs_a_lone_request_at_once():
    model = RecordingModel()
    batcher = Batcher(model, SHAPE, max_batch_size=16, max_wait_ms=2000, wait_only_for_announced=True)
    try:
        began = time.monotonic()
        batcher.predict(pixels(1), timeout=5)
        assert time.monotonic() - began < 1.0  # far below max_wait: nothing else was announced
    finally:
        batcher.close()
    assert model.batch_sizes == [1]


def test_work_announced_while_a_batch_gathers_joins_it():
    model = RecordingModel()
    batcher = Batcher(model, SHAPE, max_batch_size=16, max_wait_ms=2000, wait_only_for_announced=True)
    try:
        with batcher.announced(1):  # another caller is still decoding its photo
            first = batcher.submit(pixels(1))
            time.sleep(0.1)  # the batch waits for it instead of running the first alone
            second = batcher.submit(pixels(2))
        assert [float(f.result(5)[0]) for f in (first, second)] == [1, 2]
    finally:
        batcher.close()
    assert model.batch_sizes == [2]


def test_rows_that_are_views_of_the_reused_batch_buffer_stay_each_callers_own():
    batcher = Batcher(lambda batch: batch.reshape(len(batch), -1), SHAPE, max_batch_size=2, max_wait_ms=0)
    try:
        rows = [batcher.predict(pixels(v), timeout=5) for v in (1, 2, 3)]
    finally:
        batcher.close()
    assert [float(row[0]) for row in rows] == [1, 2, 3]


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


class BlockingModel(RecordingModel):
    """Holds the inference thread inside the engine until released, so later work stays queued."""

    def __init__(self):
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.seen: list[float] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.seen += [float(v) for v in batch[:, 0, 0, 0]]
        self.entered.set()
        assert self.release.wait(10), "never released"
        return super().__call__(batch)


def test_a_timed_out_request_is_cancelled_and_its_image_never_reaches_the_engine():
    model = BlockingModel()
    batcher = Batcher(model, SHAPE, max_batch_size=1, max_wait_ms=0)
    try:
        busy = batcher.submit(pixels(1))
        assert model.entered.wait(5)
        with pytest.raises(TimeoutError):
            batcher.predict(pixels(2), timeout=0.05)
        model.release.set()
        np.testing.assert_allclose(busy.result(5), [1, -1, 2])
        np.testing.assert_allclose(batcher.predict(pixels(3), timeout=5), [3, -3, 6])
    finally:
        model.release.set()
        batcher.close()
    assert model.seen == [1, 3]


def test_a_cancelled_future_is_skipped_and_its_batch_filled_with_live_work():
    model = BlockingModel()
    batcher = Batcher(model, SHAPE, max_batch_size=4, max_wait_ms=200)
    try:
        batcher.submit(pixels(0))
        assert model.entered.wait(5)
        futures = batcher.submit_many([pixels(v) for v in (1, 2, 3, 4, 5)])
        assert futures[1].cancel() and futures[3].cancel()
        model.release.set()
        assert [float(futures[i].result(5)[0]) for i in (0, 2, 4)] == [1, 3, 5]
    finally:
        model.release.set()
        batcher.close()
    assert model.seen == [0, 1, 3, 5] and model.batch_sizes == [1, 3]


def test_work_beyond_the_queue_bound_is_refused_at_once_all_or_nothing():
    model = BlockingModel()
    depths: list[int] = []
    batcher = Batcher(model, SHAPE, max_batch_size=1, max_wait_ms=0, max_queue=3, observe_depth=depths.append)
    try:
        first = batcher.submit(pixels(0))
        assert model.entered.wait(5)  # the engine holds the first; the queue is empty
        queued = batcher.submit_many([pixels(1), pixels(2)])
        with pytest.raises(Overloaded):
            batcher.submit_many([pixels(3), pixels(4)])
        assert batcher.depth == 2 and depths[-1] == 2
        queued.append(batcher.submit(pixels(5)))  # one more still fits
        with pytest.raises(Overloaded):
            batcher.submit(pixels(6))
        model.release.set()
        assert [float(f.result(5)[0]) for f in [first, *queued]] == [0, 1, 2, 5]
    finally:
        model.release.set()
        batcher.close()
    assert depths[-1] == 0


def test_an_engine_returning_named_outputs_gives_each_caller_its_own_rows():
    def named(batch: np.ndarray) -> dict[str, np.ndarray]:
        means = batch.reshape(len(batch), -1).mean(axis=1)
        return {"probabilities": np.stack([means, 1 - means], axis=1), "features": np.stack([means] * 5, axis=1)}

    batcher = Batcher(named, SHAPE, max_batch_size=8, max_wait_ms=50)
    try:
        futures = batcher.submit_many([pixels(v) for v in (0.25, 0.5, 0.75)])
        rows = [f.result(5) for f in futures]
    finally:
        batcher.close()
    for value, row in zip((0.25, 0.5, 0.75), rows, strict=True):
        assert set(row) == {"probabilities", "features"}
        np.testing.assert_allclose(row["probabilities"], [value, 1 - value])
        np.testing.assert_allclose(row["features"], [value] * 5)


def test_an_engine_answering_the_wrong_number_of_rows_fails_the_batch():
    batcher = Batcher(lambda batch: np.zeros((len(batch) + 1, 3)), SHAPE, max_wait_ms=0)
    try:
        with pytest.raises(ValueError, match="rows"):
            batcher.predict(pixels(1), timeout=5)
    finally:
        batcher.close()


def test_mixed_good_and_bad_uploads_sent_together_get_their_own_answers(app):
    good = {name: sample_bytes(name) for name in ("tomato_healthy.jpg", "apple_scab.jpg", "grape_black_rot.jpg")}
    bad = {p.name: p for p in map(payload, ("0 bytes", "text", "truncated jpeg"))}
    client = app.test_client()

    def post(data: bytes):
        r = app.test_client().post("/Diagnosis/prediction", data={"image": (io.BytesIO(data), "x.jpg")})
        return r.status_code, r.get_json()

    alone = {name: post(data)[1] for name, data in good.items()}
    jobs = [(name, data) for name, data in good.items()] * 4 + [(name, p.data) for name, p in bad.items()] * 4
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
            assert status == bad[name].status and body["message"]
    assert client.get("/health").status_code == 200
