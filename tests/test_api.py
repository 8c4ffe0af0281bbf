"""The HTTP contract through the Flask test client, on a tiny real model.

BAD_REQUESTS is the one table of requests the API must refuse, with their status; the hostile
photos themselves are tests/payloads.py's table (tests/test_hostile.py).
"""

from __future__ import annotations

import pytest

from tests.support import (
    PREDICT,
    PREDICTIONS,
    TEST_LIMITS,
    TINY_LABELS,
    image_bytes,
    multipart_body,
    sample_bytes,
)
from util.batcher import Overloaded

LEAF = sample_bytes("tomato_healthy.jpg")
MULTIPART = "multipart/form-data; boundary=XyZ"
UPLOAD_LIMIT = TEST_LIMITS["max_upload_bytes"]
REQUEST_LIMIT = TEST_LIMITS["max_request_bytes"]
BIG = b"\xff\xd8" + b"\0" * (UPLOAD_LIMIT - 1024)  # just under one photo's limit


def photo(data: bytes = LEAF, field: str = "image", **fields: str) -> bytes:
    """A multipart body with one photo and optional plain fields."""
    return multipart_body(
        [(field, "leaf.jpg", data), *((name, None, value.encode()) for name, value in fields.items())]
    )


# name: (path, content type, body, status, a word the message must contain)
BAD_REQUESTS = {
    "no image field": (PREDICT, MULTIPART, multipart_body([]), 400, "image"),
    "wrong field name": (PREDICT, MULTIPART, photo(field="photo"), 400, "image"),
    "two files in the field": (
        PREDICT,
        MULTIPART,
        multipart_body([("image", "a.jpg", LEAF), ("image", "b.jpg", LEAF)]),
        400,
        "one image",
    ),
    "upload over the byte limit": (PREDICT, MULTIPART, photo(b"\0" * (UPLOAD_LIMIT + 1)), 413, f"{UPLOAD_LIMIT:,}"),
    "too many pixels": (PREDICT, MULTIPART, photo(image_bytes(size=(3000, 2000), color=(0, 90, 0))), 413, "limit"),
    "top_k zero": (PREDICT, MULTIPART, photo(top_k="0"), 400, "top_k"),
    "top_k negative": (PREDICT, MULTIPART, photo(top_k="-2"), 400, "top_k"),
    "top_k too big": (PREDICT, MULTIPART, photo(top_k="11"), 400, "top_k"),
    "top_k not a number": (PREDICT, MULTIPART, photo(top_k="three"), 400, "top_k"),
    "top_k too big in the query": (f"{PREDICT}?top_k=99", MULTIPART, photo(), 400, "top_k"),
    "json body": (PREDICT, "application/json", b'{"image": "aGVsbG8="}', 400, "image"),
    "urlencoded body": (PREDICT, "application/x-www-form-urlencoded", b"image=leaf.jpg", 400, "image"),
    "raw image bytes": (PREDICT, "image/jpeg", LEAF, 400, "image"),
    "no content type": (PREDICT, "", LEAF, 400, "image"),
    "multipart without boundary": (PREDICT, "multipart/form-data", photo(), 400, ""),
    "multipart with a wrong boundary": (PREDICT, "multipart/form-data; boundary=Other", photo(), 400, ""),
    "garbage multipart": (PREDICT, MULTIPART, b"--XyZ\r\n\x00\xff garbage", 400, ""),
    "many: no images field": (PREDICTIONS, MULTIPART, photo(field="image"), 400, "images"),
    "many: empty list": (PREDICTIONS, MULTIPART, multipart_body([]), 400, "images"),
    "many: images as a plain field": (PREDICTIONS, MULTIPART, multipart_body([("images", None, b"")]), 400, "images"),
    "many: json body": (PREDICTIONS, "application/json", b'{"images": []}', 400, "images"),
    "many: 33 photos": (
        PREDICTIONS,
        MULTIPART,
        multipart_body([("images", f"{i}.jpg", LEAF) for i in range(33)]),
        400,
        "at most 32",
    ),
    "many: over the total byte limit": (
        PREDICTIONS,
        MULTIPART,
        multipart_body([("images", f"{i}.jpg", BIG) for i in range(REQUEST_LIMIT // len(BIG) + 1)]),
        413,
        f"{REQUEST_LIMIT:,}",
    ),
    "many: top_k too big": (PREDICTIONS, MULTIPART, photo(field="images", top_k="11"), 400, "top_k"),
    "many: garbage multipart": (PREDICTIONS, MULTIPART, b"--XyZ\r\n\x00\xff garbage", 400, ""),
}


@pytest.mark.parametrize(("path", "content_type", "body", "status", "word"), BAD_REQUESTS.values(), ids=BAD_REQUESTS)
def test_bad_requests_answer_4xx_json_and_the_service_keeps_serving(
    client, diagnose, path, content_type, body, status, word
):
    r = client.post(path, data=body, headers={"Content-Type": content_type} if content_type else {})
    assert r.status_code == status, r.get_data(as_text=True)
    message = r.get_json()["message"]
    assert message and "Traceback" not in message and ".py" not in message
    assert word in message
    assert diagnose.one(LEAF).status_code == 200


def test_prediction_returns_the_documented_body(diagnose):
    r = diagnose.one(LEAF)
    assert r.status_code == 200, r.get_data(as_text=True)
    body = r.get_json()
    assert set(body) == {
        *("label", "confidence", "top_k", "species", "condition", "healthy", "model", "in_domain", "message")
    }
    assert body["in_domain"] == {"available": False}  # the tiny model has no in-domain calibration
    assert body["message"] is None  # only a photo judged unknown carries one
    assert body["label"] in TINY_LABELS
    assert 0.0 <= body["confidence"] <= 1.0
    assert next(g["label"] for g in body["top_k"]) == body["label"]
    assert len(body["top_k"]) == 3
    assert body["top_k"][0]["confidence"] == pytest.approx(body["confidence"])
    assert f"{body['species']}_{body['condition']}" == body["label"]
    assert body["healthy"] == (body["condition"] == "healthy")
    assert body["model"] == {"name": "tiny-test-model", "version": "0.0.1"}
    assert r.headers["X-Request-ID"]


def test_same_image_gets_the_same_answer(diagnose):
    assert diagnose.one(LEAF).get_json() == diagnose.one(LEAF).get_json()


@pytest.mark.parametrize("k", [1, 2, 3])
def test_top_k_lists_that_many_labels_most_likely_first(diagnose, k):
    confidences = [g["confidence"] for g in diagnose.one(LEAF, top_k=str(k)).get_json()["top_k"]]
    assert len(confidences) == k
    assert confidences == sorted(confidences, reverse=True)


def test_top_k_in_the_query_string_works_too(client):
    assert len(client.post(f"{PREDICT}?top_k=1", data=photo(), content_type=MULTIPART).get_json()["top_k"]) == 1


def test_top_k_above_the_label_count_lists_every_label(diagnose):
    body = diagnose.one(LEAF, top_k="10").get_json()
    assert sorted(g["label"] for g in body["top_k"]) == sorted(TINY_LABELS)
    assert sum(g["confidence"] for g in body["top_k"]) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("path", [PREDICT, PREDICTIONS])
def test_get_on_the_diagnosis_routes_is_405_json(client, path):
    r = client.get(path)
    assert r.status_code == 405
    assert r.get_json()["message"]
    assert "POST" in r.headers["Allow"]


def test_unknown_route_is_404_json(client):
    r = client.get("/no/such/page")
    assert r.status_code == 404
    assert r.get_json()["message"]


def test_overload_is_503_with_retry_after_at_once(diagnose, service, monkeypatch):
    def full(images):
        raise Overloaded("64 images wait")

    monkeypatch.setattr(service.batcher, "submit_many", full)
    for r in (diagnose.one(LEAF), diagnose.many([("a.jpg", LEAF), ("b.jpg", LEAF)])):
        assert r.status_code == 503, r.get_data(as_text=True)
        assert r.headers["Retry-After"] == str(service.settings.retry_after_s)
        assert "overloaded" in r.get_json()["message"]


def test_health_reports_the_ready_model(client):
    r = client.get("/health")
    assert r.status_code == 200
    body = r.get_json()
    assert body["status"] == "ok"
    assert body["labels"] == len(TINY_LABELS) and body["input_size"] == 32
    assert body["backend"] in ("openvino", "tensorflow")
    assert client.get("/health/ready").get_json() == body


def test_health_is_503_until_warm_while_liveness_answers(app, service):
    service.ready.clear()
    try:
        client = app.test_client()
        for path in ("/health", "/health/ready"):
            r = client.get(path)
            assert r.status_code == 503 and r.get_json()["status"] == "starting"
        live = client.get("/health/live")
        assert live.status_code == 200 and live.get_json() == {"status": "alive"}
    finally:
        service.ready.set()
    assert app.test_client().get("/health/ready").status_code == 200


def test_swagger_ui_is_the_home_page(client):
    r = client.get("/")
    assert r.status_code == 200 and b"swagger" in r.data.lower() and b"PlantNet API" in r.data


def test_spec_documents_the_upload_and_the_answer(client):
    spec = client.get("/swagger.json").get_json()
    assert spec["info"]["title"] == "PlantNet API"
    post = spec["paths"]["/Diagnosis/prediction"]["post"]
    assert "get" not in spec["paths"]["/Diagnosis/prediction"]
    params = {p["name"]: p for p in post["parameters"]}
    assert params["image"]["in"] == "formData" and params["image"]["type"] == "file"
    assert params["image"]["required"] is True
    assert params["top_k"]["type"] == "integer"
    assert "multipart/form-data" in post["consumes"]
    assert post["responses"]["200"]["schema"]["$ref"] == "#/definitions/Diagnosis"
    for code in ("400", "413", "415", "503"):
        assert post["responses"][code]["schema"]["$ref"] == "#/definitions/Error"
    diagnosis = spec["definitions"]["Diagnosis"]
    assert set(diagnosis["required"]) == {"label", "confidence", "top_k", "species", "condition", "healthy", "model"}
    assert post["summary"] == "Diagnose the leaf in an uploaded photo"


def test_spec_documents_the_many_photo_upload_and_every_status(client):
    spec = client.get("/swagger.json").get_json()
    post = spec["paths"]["/Diagnosis/predictions"]["post"]
    params = {p["name"]: p for p in post["parameters"]}
    assert params["images"]["in"] == "formData" and params["images"]["required"] is True
    assert params["images"]["type"] == "array" and params["images"]["items"]["type"] == "file"
    assert params["top_k"]["type"] == "integer"
    assert "multipart/form-data" in post["consumes"]
    assert post["responses"]["200"]["schema"]["$ref"] == "#/definitions/Predictions"
    for code in ("400", "413", "503"):
        assert post["responses"][code]["schema"]["$ref"] == "#/definitions/Error"
    item = spec["definitions"]["PhotoResult"]
    assert set(item["properties"]) == {"index", "filename", "status", "diagnosis", "message"}
    assert item["properties"]["diagnosis"]["allOf"] == [{"$ref": "#/definitions/Diagnosis"}]
    assert set(spec["definitions"]["Predictions"]["required"]) == {"results", "model"}
    assert {"/health", "/health/live", "/health/ready"} <= set(spec["paths"])


def test_help_texts_read_their_defaults_from_settings(client):
    from util.config import Settings

    params = {p["name"]: p for p in client.get("/swagger.json").get_json()["paths"][PREDICT]["post"]["parameters"]}
    assert f"({Settings.default_top_k} unless set)" in params["top_k"]["description"]


def test_metrics_count_requests_batches_queue_and_inflight(diagnose, client):
    diagnose.one(LEAF)
    text = client.get("/metrics").get_data(as_text=True)
    assert 'plantnet_http_requests_total{method="POST",route="/Diagnosis/prediction",status="200"}' in text
    assert "plantnet_batch_size_count" in text and "plantnet_inference_seconds_bucket" in text
    assert "plantnet_queue_depth 0.0" in text
    assert "plantnet_inflight_requests 1.0" in text  # this very request


def test_request_id_is_echoed_when_safe_and_replaced_when_not(client):
    assert client.get("/health", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    replaced = client.get("/health", headers={"X-Request-ID": "bad id <script>"}).headers["X-Request-ID"]
    assert replaced != "bad id" and len(replaced) == 32
