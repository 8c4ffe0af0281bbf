"""A test double of the PlantNet HTTP API for the client's protocol tests: scripted answers, no model.

It implements the documented contract of /Diagnosis/prediction, /Diagnosis/predictions and /health on
127.0.0.1 (werkzeug), so retries, Retry-After, batching and per-photo errors can be tested exactly;
end-to-end runs against the real service live in tests/test_client_e2e.py and tests/test_routes_agree.py.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict, deque
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

PREDICTION = "/Diagnosis/prediction"
PREDICTIONS = "/Diagnosis/predictions"
PLANT = "/Diagnosis/plant"
MODEL = "/Diagnosis/model"
MODEL_INFO = {
    "name": "fake",
    "version": "0",
    "input_size": 160,
    "engine": "fake",
    "precision": "f32",
    "labels": 2,
    "crops": [{"crop": "Apple", "labels": ["Apple_scab"]}, {"crop": "Tomato", "labels": ["Tomato_Late blight"]}],
    "in_domain": {"available": True, "method": "fake", "threshold": 0.5},
    "measured": {"split": "validation", "images": 10, "top1": 0.9},
    "limits": {"max_photos_per_plant": 5},
}


# -- the HTTP double -----------------------------------------------------------------------------
def photo_bytes(label: str, n: int = 0) -> bytes:
    """Bytes the double recognises as a photo of ``label`` (it never decodes images)."""
    return f"PHOTO {label}\n{n}\n".encode()


def label_of(data: bytes) -> str | None:
    if not data.startswith(b"PHOTO "):
        return None
    return data.split(b"\n", 1)[0][len(b"PHOTO ") :].decode()


def diagnosis(label: str, top_k: int | None) -> dict:
    known = label != "Unknown"
    species, _, condition = label.partition("_") if known else (None, None, None)
    ranked = [{"label": label, "confidence": 0.9}, {"label": "Apple_scab", "confidence": 0.07}]
    return {
        "label": label,
        "confidence": 0.9,
        "top_k": ranked[: top_k or 1],
        "species": species,
        "condition": condition,
        "healthy": condition == "healthy" if known else None,
        "model": {"name": "fake", "version": "0"},
        "in_domain": {"known": known, "score": 0.8 if known else 0.1, "threshold": 0.5, "available": True},
        "an_extra_field_from_the_future": [1, 2, 3],
    }


class FakePlantNet:
    """A test double for protocol behaviour only: NOT the PlantNet service and no model behind it.

    A real HTTP server (werkzeug, on 127.0.0.1) that speaks the service's contract: ``POST
    /Diagnosis/prediction`` (field ``image``), ``POST /Diagnosis/predictions`` (repeated field
    ``images``, at most ``max_images``), ``GET /health``. It labels a photo from its bytes (see
    :func:`photo_bytes`), answers 415 for anything else, and plays scripted answers (status,
    headers, body) first when a test queues them with :meth:`script`. It also serves files for URL
    sources under ``/files/`` and records every request.
    """

    def __init__(self, max_images: int = 32, many: bool = True) -> None:
        self.max_images = max_images
        self.many = many
        self.requests: list[dict] = []
        self.scripted: dict[str, deque] = defaultdict(deque)
        self.files: dict[str, bytes] = {}
        self.lock = threading.Lock()

    def script(self, path: str, *answers: tuple[int, dict, dict | None]) -> None:
        self.scripted[path].extend(answers)

    def sizes(self, path: str = PREDICTIONS) -> list[int]:
        return [len(r["filenames"]) for r in self.requests if r["path"] == path]

    @Request.application
    def __call__(self, request: Request) -> Response:
        path = request.path
        if path.startswith("/files/"):
            return self.serve_file(request, path[len("/files/") :])
        uploads = request.files.getlist("images" if path in (PREDICTIONS, PLANT) else "image")
        with self.lock:
            self.requests.append(
                {
                    "path": path,
                    "filenames": [u.filename for u in uploads],
                    "top_k": request.form.get("top_k"),
                    **{hint: request.form[hint] for hint in ("crop", "strict") if hint in request.form},
                }
            )
            answer = self.scripted[path].popleft() if self.scripted[path] else None
        if answer is not None:
            status, headers, body = answer
            return Response(json.dumps(body or {"message": "scripted"}), status, headers, mimetype="application/json")
        top_k = int(request.form["top_k"]) if request.form.get("top_k") else None
        if path == "/health":
            return self.json({"status": "ok"})
        if path == PREDICTION and request.method == "POST":
            if not uploads:
                return self.json({"message": "no image"}, 400)
            label = label_of(uploads[0].read())
            return self.json(diagnosis(label, top_k)) if label else self.json({"message": "not an image"}, 415)
        if path == PREDICTIONS and request.method == "POST" and self.many:
            if not uploads:
                return self.json({"message": "no images"}, 400)
            if len(uploads) > self.max_images:
                return self.json({"message": f"at most {self.max_images} images per request"}, 400)
            results = []
            for index, upload in enumerate(uploads):
                label = label_of(upload.read())
                item = {"index": index, "filename": upload.filename}
                if label:
                    item.update(status=200, diagnosis=diagnosis(label, top_k), message=None)
                else:
                    item.update(status=415, message="not an image")
                results.append(item)
            return self.json({"results": results, "model": {"name": "fake", "version": "0"}})
        if path == PLANT and request.method == "POST":
            return self.plant(uploads, top_k, request.form.get("crop"))
        if path == MODEL and request.method == "GET":
            return self.json(MODEL_INFO)
        return self.json({"message": "not found"}, 404)

    def plant(self, uploads: list, top_k: int | None, crop: str | None) -> Response:
        """One plant: the first readable photo's label stands for the combination; 'Unknown' photos are left out."""
        if not uploads or len(uploads) > 5:
            return self.json({"message": "Send 1 to 5 photos of one plant in 'images'."}, 400)
        if crop is not None and crop not in ("Apple", "Tomato"):
            return self.json({"message": f"This model does not know the crop {crop!r}."}, 400)
        photos, labels = [], []
        for index, upload in enumerate(uploads):
            label = label_of(upload.read())
            item = {"index": index, "filename": upload.filename}
            if label:
                item.update(status=200, diagnosis=diagnosis(label, top_k))
                labels += [label] if label != "Unknown" else []
            else:
                item.update(status=415, message="not an image")
            photos.append(item)
        body = {**diagnosis(labels[0] if labels else "Unknown", top_k), "combined_from": len(labels), "photos": photos}
        return self.json({**body, "crop": crop} if crop else body)

    def serve_file(self, request: Request, name: str) -> Response:
        if name.startswith("stream-"):  # chunked, no Content-Length: the client must count
            size = int(name.split("-")[1])
            return Response((b"x" * 1000 for _ in range(size // 1000)), mimetype="image/jpeg")
        if name not in self.files:
            return Response("missing", 404)
        return Response(self.files[name], mimetype="image/jpeg")

    @staticmethod
    def json(body: dict, status: int = 200) -> Response:
        return Response(json.dumps(body), status, mimetype="application/json")


@contextmanager
def serving(app, port: int = 0) -> Iterator[str]:
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()


# -- fixtures: tests/conftest.py and client/tests/conftest.py both import these ---------------------
@pytest.fixture
def fake() -> FakePlantNet:
    """The client tests' HTTP double of the API."""
    return FakePlantNet()


@pytest.fixture
def url(fake) -> Iterator[str]:
    """The double's base URL on 127.0.0.1."""
    with serving(fake) as base:
        yield base
