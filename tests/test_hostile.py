"""Hostile uploads: each answers 4xx JSON (or 200 for awkward-but-valid images) in bounded time and memory.

The photos are tests/payloads.py's table; malformed requests are tests/test_api.py's BAD_REQUESTS.
"""

from __future__ import annotations

import io
import resource
import time

import pytest

from tests.payloads import hostile_payloads
from tests.support import PREDICT, multipart_body, sample_bytes

LEAF = sample_bytes("tomato_healthy.jpg")
PAYLOADS = hostile_payloads()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("payload", PAYLOADS, ids=[p.name for p in PAYLOADS])
def test_hostile_upload_gets_its_status_quickly_within_bounded_memory(diagnose, payload):
    peak_before = peak_rss_mb()
    began = time.monotonic()
    r = diagnose.one(payload.data, payload.filename)
    took = time.monotonic() - began
    assert r.status_code == payload.status, r.get_data(as_text=True)
    assert r.is_json
    if payload.status == 200:
        assert r.get_json()["label"]
    else:
        message = r.get_json()["message"]
        assert message and "Traceback" not in message and ".py" not in message
    assert took < 10, f"took {took:.1f} s"
    assert peak_rss_mb() - peak_before < 150, "decoding raised the peak memory by more than 150 MB"
    assert diagnose.one(LEAF).status_code == 200


@pytest.mark.parametrize("declared", [10, 100_000])
def test_a_content_length_that_lies_answers_4xx(app, diagnose, declared):
    body = multipart_body([("image", "a.jpg", LEAF)])
    environ = {"CONTENT_LENGTH": str(declared), "CONTENT_TYPE": "multipart/form-data; boundary=XyZ"}
    r = app.test_client().post(PREDICT, input_stream=io.BytesIO(body), environ_overrides=environ)
    assert 400 <= r.status_code < 500, r.get_data(as_text=True)
    assert r.get_json()["message"]
    assert diagnose.one(LEAF).status_code == 200
