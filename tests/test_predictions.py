"""POST /Diagnosis/predictions: many photos in one request, one result per photo, in upload order.

Request-level refusals (no photos, too many, too large in total) are rows of tests/test_api.py's
BAD_REQUESTS; the hostile photos are tests/payloads.py's table.
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest

from tests.payloads import hostile_payloads
from tests.support import TEST_LIMITS, leaf_samples, sample_bytes
from util.messages import BUSY

LEAVES = leaf_samples()


@pytest.fixture
def engine_calls(service, monkeypatch) -> list[int]:
    """The size of every batch the engine computes from now on."""
    sizes: list[int] = []
    predict = service.batcher._predict

    def recording(batch: np.ndarray):
        sizes.append(len(batch))
        return predict(batch)

    monkeypatch.setattr(service.batcher, "_predict", recording)
    return sizes


def test_results_come_in_upload_order_each_the_single_photo_answer(diagnose):
    photos = LEAVES[:6] + LEAVES[:2]
    r = diagnose.many(photos)
    assert r.status_code == 200, r.get_data(as_text=True)
    body = r.get_json()
    assert set(body) == {"results", "model"}
    assert body["model"] == {"name": "tiny-test-model", "version": "0.0.1"}
    assert [item["index"] for item in body["results"]] == list(range(len(photos)))
    assert [item["filename"] for item in body["results"]] == [name for name, _ in photos]
    for item, (_, data) in zip(body["results"], photos, strict=True):
        assert set(item) == {"index", "filename", "status", "diagnosis"}
        assert item["status"] == 200
        assert item["diagnosis"] == diagnose.one(data).get_json()


def test_one_bad_photo_never_fails_the_others_and_says_what_the_single_endpoint_says(diagnose):
    payloads = hostile_payloads()
    photos = [(p.filename, p.data) for p in payloads] + LEAVES[:3]
    r = diagnose.many(photos)
    assert r.status_code == 200, r.get_data(as_text=True)
    results = r.get_json()["results"]
    assert len(results) == len(photos)
    for item, p in zip(results, payloads, strict=False):
        alone = diagnose.one(p.data, p.filename)
        assert item["status"] == p.status == alone.status_code, p.name
        if p.status == 200:
            assert item["diagnosis"] == alone.get_json()
        else:
            assert set(item) == {"index", "filename", "status", "message"}
            assert item["message"] == alone.get_json()["message"]
    for item, (_, data) in zip(results[len(payloads) :], LEAVES[:3], strict=True):
        assert item["status"] == 200 and item["diagnosis"] == diagnose.one(data).get_json()


def test_a_photo_over_the_single_photo_limit_fails_alone_with_the_same_message(diagnose):
    limit = TEST_LIMITS["max_upload_bytes"]
    big = b"\xff\xd8" + b"\0" * limit
    r = diagnose.many([("big.jpg", big), LEAVES[0]])
    assert r.status_code == 200, r.get_data(as_text=True)
    first, second = r.get_json()["results"]
    assert first["status"] == 413 and f"{limit:,}" in first["message"]
    assert first["message"] == diagnose.one(big).get_json()["message"]
    assert second["status"] == 200


@pytest.mark.parametrize("k", [1, 2])
def test_top_k_applies_to_every_photo(diagnose, k):
    results = diagnose.many(LEAVES[:3], top_k=str(k)).get_json()["results"]
    assert [len(item["diagnosis"]["top_k"]) for item in results] == [k] * 3


def test_thirty_two_photos_reach_the_engine_in_full_batches(diagnose, service, engine_calls):
    photos = [LEAVES[i % len(LEAVES)] for i in range(32)]
    r = diagnose.many(photos)
    assert r.status_code == 200, r.get_data(as_text=True)
    assert [item["status"] for item in r.get_json()["results"]] == [200] * 32
    assert sum(engine_calls) == 32
    assert len(engine_calls) <= 3, engine_calls  # 32 photos / 16 per batch: two batches, or three at worst
    assert max(engine_calls) == service.settings.max_batch_size


def test_photos_not_answered_in_time_fail_with_503_and_are_never_computed(diagnose, service, engine_calls, monkeypatch):
    """The inference thread is held on another image; the request times out, cancels and moves on."""
    monkeypatch.setattr(service, "settings", dataclasses.replace(service.settings, request_timeout_s=0.3))
    entered, release = threading.Event(), threading.Event()
    predict = service.batcher._predict

    def held(batch):
        entered.set()
        assert release.wait(10)
        return predict(batch)

    monkeypatch.setattr(service.batcher, "_predict", held)
    blocker = service.batcher.submit(service.preprocess(sample_bytes("apple_scab.jpg")))
    assert entered.wait(10)  # the inference thread is inside the engine: what comes next waits in the queue
    try:
        many = diagnose.many(LEAVES[:3])
        one = diagnose.one(LEAVES[0][1])
    finally:
        release.set()
    blocker.result(10)
    assert many.status_code == 200
    assert [(item["status"], item["message"]) for item in many.get_json()["results"]] == [(503, BUSY)] * 3
    assert one.status_code == 503 and one.get_json()["message"] == BUSY
    monkeypatch.setattr(service.batcher, "_predict", predict)
    assert diagnose.one(LEAVES[0][1]).status_code == 200
    assert engine_calls == [1, 1]  # the blocker, then the last photo: the four that timed out were skipped
