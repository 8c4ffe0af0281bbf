"""Hostile uploads: each answers 4xx JSON (or 200 for awkward-but-valid images) in bounded time and memory."""

from __future__ import annotations

import io
import resource
import time

import pytest
from conftest import sample_bytes

from bench.payloads import hostile_payloads

PREDICT = "/Diagnosis/prediction"
LEAF = sample_bytes("tomato_healthy.jpg")
PAYLOADS = hostile_payloads()


def still_serving(client) -> None:
    r = client.post(PREDICT, data={"image": (io.BytesIO(LEAF), "leaf.jpg")})
    assert r.status_code == 200, r.get_data(as_text=True)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("payload", PAYLOADS, ids=[p.name for p in PAYLOADS])
def test_hostile_upload_gets_its_status_quickly_within_bounded_memory(client, payload):
    peak_before = peak_rss_mb()
    began = time.monotonic()
    r = client.post(PREDICT, data={"image": (io.BytesIO(payload.data), payload.filename)})
    took = time.monotonic() - began
    assert r.status_code == payload.status, r.get_data(as_text=True)
    assert r.is_json
    if payload.status == 200:
        assert r.get_json()["label"]
    else:
        assert r.get_json()["message"]
    assert took < 10, f"took {took:.1f} s"
    assert peak_rss_mb() - peak_before < 150, "decoding raised the peak memory by more than 150 MB"
    still_serving(client)


def multipart(parts: list[tuple[str, str, bytes]], boundary: str = "XyZ") -> bytes:
    body = b""
    for field, filename, data in parts:
        body += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
                f"Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + data
            + b"\r\n"
        )
    return body + f"--{boundary}--\r\n".encode()


RAW = {
    "several files in one field": (
        "multipart/form-data; boundary=XyZ",
        multipart([("image", "a.jpg", LEAF), ("image", "b.jpg", LEAF)]),
        400,
    ),
    "wrong field name": ("multipart/form-data; boundary=XyZ", multipart([("file", "a.jpg", LEAF)]), 400),
    "json body": ("application/json", b'{"image": "aGVsbG8="}', 400),
    "urlencoded body": ("application/x-www-form-urlencoded", b"image=leaf.jpg", 400),
    "raw image bytes": ("image/jpeg", LEAF, 400),
    "no content type": ("", LEAF, 400),
    "multipart without boundary": ("multipart/form-data", multipart([("image", "a.jpg", LEAF)]), 400),
    "multipart with a wrong boundary": (
        "multipart/form-data; boundary=Other",
        multipart([("image", "a.jpg", LEAF)]),
        400,
    ),
    "garbage multipart": ("multipart/form-data; boundary=XyZ", b"--XyZ\r\n\x00\xff garbage", 400),
}


@pytest.mark.parametrize(("content_type", "body", "status"), RAW.values(), ids=RAW.keys())
def test_malformed_requests_answer_4xx_json(app, content_type, body, status):
    client = app.test_client()
    r = client.post(PREDICT, data=body, headers={"Content-Type": content_type} if content_type else {})
    assert r.status_code == status, r.get_data(as_text=True)
    assert r.get_json()["message"]
    still_serving(client)


@pytest.mark.parametrize("declared", [10, 100_000])
def test_a_content_length_that_lies_answers_4xx(app, declared):
    body = multipart([("image", "a.jpg", LEAF)])
    environ = {"CONTENT_LENGTH": str(declared), "CONTENT_TYPE": "multipart/form-data; boundary=XyZ"}
    r = app.test_client().post(PREDICT, input_stream=io.BytesIO(body), environ_overrides=environ)
    assert 400 <= r.status_code < 500, r.get_data(as_text=True)
    assert r.get_json()["message"]
    still_serving(app.test_client())


def test_a_body_over_the_upload_limit_is_413_before_it_is_read(app):
    limit = app.config["MAX_CONTENT_LENGTH"]
    r = app.test_client().post(PREDICT, data={"image": (io.BytesIO(b"\0" * (limit + 1)), "big.jpg")})
    assert r.status_code == 413
    assert f"{limit:,}" in r.get_json()["message"]
