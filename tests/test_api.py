"""The HTTP contract through the Flask test client, on a tiny real model."""

from __future__ import annotations

import io

import pytest
from conftest import TINY_LABELS, image_bytes, sample_bytes

PREDICT = "/Diagnosis/prediction"
LEAF = sample_bytes("tomato_healthy.jpg")


def upload(data: bytes, name: str = "leaf.jpg", **fields) -> dict:
    return {"image": (io.BytesIO(data), name), **fields}


def test_prediction_returns_the_documented_body(client):
    r = client.post(PREDICT, data=upload(LEAF))
    assert r.status_code == 200, r.get_data(as_text=True)
    body = r.get_json()
    assert set(body) == {"label", "confidence", "top_k", "species", "condition", "healthy", "model"}
    assert body["label"] in TINY_LABELS
    assert 0.0 <= body["confidence"] <= 1.0
    assert next(g["label"] for g in body["top_k"]) == body["label"]
    assert len(body["top_k"]) == 3
    assert body["top_k"][0]["confidence"] == pytest.approx(body["confidence"])
    assert f"{body['species']}_{body['condition']}" == body["label"]
    assert body["healthy"] == (body["condition"] == "healthy")
    assert body["model"] == {"name": "tiny-test-model", "version": "0.0.1"}
    assert r.headers["X-Request-ID"]


def test_same_image_gets_the_same_answer(client):
    first = client.post(PREDICT, data=upload(LEAF)).get_json()
    second = client.post(PREDICT, data=upload(LEAF)).get_json()
    assert first == second


@pytest.mark.parametrize("k", [1, 2, 3])
def test_top_k_lists_that_many_labels_most_likely_first(client, k):
    body = client.post(PREDICT, data=upload(LEAF, top_k=str(k))).get_json()
    confidences = [g["confidence"] for g in body["top_k"]]
    assert len(confidences) == k
    assert confidences == sorted(confidences, reverse=True)


def test_top_k_in_the_query_string_works_too(client):
    assert len(client.post(f"{PREDICT}?top_k=1", data=upload(LEAF)).get_json()["top_k"]) == 1


def test_top_k_above_the_label_count_lists_every_label(client):
    body = client.post(PREDICT, data=upload(LEAF, top_k="10")).get_json()
    assert sorted(g["label"] for g in body["top_k"]) == sorted(TINY_LABELS)
    assert sum(g["confidence"] for g in body["top_k"]) == pytest.approx(1.0, abs=1e-3)


ERRORS = {
    "no image field": ({}, 400),
    "wrong field name": ({"photo": (io.BytesIO(LEAF), "leaf.jpg")}, 400),
    "empty file": (upload(b""), 400),
    "text file": (upload(b"just some text\n", "notes.txt"), 415),
    "svg": (upload(b'<svg xmlns="http://www.w3.org/2000/svg"/>', "x.svg"), 415),
    "pdf": (upload(b"%PDF-1.7\n%%EOF", "x.pdf"), 415),
    "zip": (upload(b"PK\x03\x04" + b"\0" * 50, "x.zip"), 415),
    "truncated jpeg": (upload(image_bytes(fmt="JPEG", size=(300, 300))[:500]), 400),
    "too many pixels": (upload(image_bytes(size=(3000, 2000), color=(0, 90, 0))), 413),
    "upload over the byte limit": (upload(b"\xff\xd8" + b"\0" * (3 * 1024 * 1024)), 413),
    "top_k zero": (upload(LEAF, top_k="0"), 400),
    "top_k negative": (upload(LEAF, top_k="-2"), 400),
    "top_k too big": (upload(LEAF, top_k="11"), 400),
    "top_k not a number": (upload(LEAF, top_k="three"), 400),
    "two files in the field": ({"image": [(io.BytesIO(LEAF), "a.jpg"), (io.BytesIO(LEAF), "b.jpg")]}, 400),
}


@pytest.mark.parametrize(("data", "status"), ERRORS.values(), ids=ERRORS.keys())
def test_client_errors_answer_4xx_json_and_the_service_keeps_serving(client, data, status):
    r = client.post(PREDICT, data=data, content_type="multipart/form-data")
    assert r.status_code == status, r.get_data(as_text=True)
    message = r.get_json()["message"]
    assert message and "Traceback" not in message and ".py" not in message
    assert client.post(PREDICT, data=upload(LEAF)).status_code == 200


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b'{"image": "leaf.jpg"}'),
        ("application/x-www-form-urlencoded", b"image=leaf.jpg"),
        ("image/jpeg", LEAF),
    ],
)
def test_non_multipart_bodies_are_refused_with_400(client, content_type, body):
    r = client.post(PREDICT, data=body, content_type=content_type)
    assert r.status_code == 400, r.get_data(as_text=True)
    assert "image" in r.get_json()["message"]


def test_get_on_prediction_is_405_json(client):
    r = client.get(PREDICT)
    assert r.status_code == 405
    assert r.get_json()["message"]


def test_unknown_route_is_404_json(client):
    r = client.get("/no/such/page")
    assert r.status_code == 404
    assert r.get_json()["message"]


def test_health_reports_the_ready_model(client):
    r = client.get("/health")
    assert r.status_code == 200
    body = r.get_json()
    assert body["status"] == "ok"
    assert body["labels"] == len(TINY_LABELS) and body["input_size"] == 32
    assert body["backend"] in ("openvino", "tensorflow")


def test_health_is_503_until_warm(app):
    doctor = app.extensions["plantnet"]
    doctor.ready.clear()
    try:
        r = app.test_client().get("/health")
        assert r.status_code == 503 and r.get_json()["status"] == "starting"
    finally:
        doctor.ready.set()


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


def test_metrics_count_requests_and_batches(client):
    client.post(PREDICT, data=upload(LEAF))
    text = client.get("/metrics").get_data(as_text=True)
    assert 'plantnet_http_requests_total{method="POST",route="/Diagnosis/prediction",status="200"}' in text
    assert "plantnet_batch_size_count" in text and "plantnet_inference_seconds_bucket" in text


def test_request_id_is_echoed_when_safe_and_replaced_when_not(client):
    assert client.get("/health", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    replaced = client.get("/health", headers={"X-Request-ID": "bad id <script>"}).headers["X-Request-ID"]
    assert replaced != "bad id" and len(replaced) == 32
