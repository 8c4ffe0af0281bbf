"""PlantNet API: upload a leaf photo, get a plant-disease diagnosis as JSON.

The HTTP shell only: it parses the request, calls the LeafDoctor and shapes the answer.
Run it with ``gunicorn application:app`` (see Procfile and gunicorn.conf.py) or
``flask --app application run``.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from flask import Flask, Response, current_app, g, request
from flask_restx import Api, Namespace, Resource, fields
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import BadRequest, HTTPException, RequestEntityTooLarge

from util import leaf, metrics
from util.batcher import BatcherClosed
from util.config import Settings
from util.model import ModelLoadError
from util.service import LeafDoctor

__version__ = "1.0.0"
STARTUP_FAILED = 3  # gunicorn's "worker failed to boot": the master stops instead of respawning
REQUEST_ID_HEADER = "X-Request-ID"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

log = logging.getLogger("plantnet")
access_log = logging.getLogger("plantnet.access")

api = Api(
    version=__version__,
    title="PlantNet API",
    description=(
        "Diagnose plant-leaf diseases from a photo. POST a leaf photo (JPEG, PNG, WebP, BMP, "
        "TIFF or GIF) to /Diagnosis/prediction as the multipart field `image` and get the most "
        "likely disease, its confidence and the runners-up."
    ),
    doc="/",
)
ns = Namespace("Diagnosis", description="Leaf-disease diagnosis from a photo")
service_ns = Namespace("Service", path="/", description="Operations: readiness")
api.add_namespace(ns)
api.add_namespace(service_ns)

prediction_parser = api.parser()
prediction_parser.add_argument(
    "image",
    location="files",
    type=FileStorage,
    required=True,
    help="A photo of one leaf (JPEG, PNG, WebP, BMP, TIFF or GIF) in the multipart field 'image'",
)
prediction_parser.add_argument(
    "top_k",
    location=("args", "form"),
    type=int,
    required=False,
    help="How many of the most likely labels to list in top_k (default 3)",
)

guess_model = ns.model(
    "Guess",
    {
        "label": fields.String(required=True, example="Tomato_Late blight"),
        "confidence": fields.Float(required=True, min=0, max=1, example=0.97),
    },
)
model_info = ns.model(
    "ModelInfo",
    {
        "name": fields.String(required=True, example="plantnet-inceptionv3"),
        "version": fields.String(required=True, example="2026.11.23"),
    },
)
diagnosis_model = ns.model(
    "Diagnosis",
    {
        "label": fields.String(
            required=True, description="Most likely '<species>_<condition>'", example="Tomato_Late blight"
        ),
        "confidence": fields.Float(required=True, min=0, max=1, description="Probability of label", example=0.97),
        "top_k": fields.List(fields.Nested(guess_model), required=True, description="Most likely first"),
        "species": fields.String(required=True, example="Tomato"),
        "condition": fields.String(required=True, example="Late blight"),
        "healthy": fields.Boolean(required=True, example=False),
        "model": fields.Nested(model_info, required=True),
    },
)
error_model = ns.model("Error", {"message": fields.String(required=True, description="What to fix")})
health_model = service_ns.model(
    "Health",
    {
        "status": fields.String(required=True, enum=["ok", "starting"]),
        "model": fields.Nested(model_info),
        "backend": fields.String(example="openvino"),
        "precision": fields.String(example="bf16"),
        "input_size": fields.Integer(example=128),
        "labels": fields.Integer(example=34),
    },
)


def doctor() -> LeafDoctor:
    """The process's one LeafDoctor (model, engine, batcher), created with the app."""
    return current_app.extensions["plantnet"]


def error(status: int, message: str) -> tuple[dict, int]:
    return {"message": message}, status


@ns.route("/prediction")
class Prediction(Resource):
    @ns.expect(prediction_parser)
    @ns.response(200, "The diagnosis", diagnosis_model)
    @ns.response(400, "No image, an empty or damaged file, or a bad top_k", error_model)
    @ns.response(413, "The upload or the image's pixel count is over the limit", error_model)
    @ns.response(415, "The file is not an image in a supported format", error_model)
    @ns.response(503, "The model is still warming up or the service is overloaded", error_model)
    def post(self):
        """Diagnose the leaf in an uploaded photo."""
        files = request.files.getlist("image")
        if len(files) > 1:
            return error(400, "Send one image per request in the field 'image'.")
        settings: Settings = current_app.config["PLANTNET"]
        try:
            args = prediction_parser.parse_args()
        except BadRequest as exc:
            return error(400, _argument_error(exc, settings))
        top_k = settings.default_top_k if args["top_k"] is None else args["top_k"]
        if not 1 <= top_k <= settings.max_top_k:
            return error(400, f"top_k must be an integer from 1 to {settings.max_top_k}.")
        data = args["image"].read()
        try:
            diagnosis = doctor().diagnose(data, top_k)
        except leaf.ImageError as exc:
            return error(exc.status_code, str(exc))
        except (FutureTimeout, BatcherClosed):
            return error(503, "The service is busy or restarting; try again in a moment.")
        g.label = diagnosis.label
        return diagnosis.to_json(), 200


def _argument_error(exc: BadRequest, settings: Settings) -> str:
    """Say which argument is wrong and how to send it right."""
    errors = (getattr(exc, "data", None) or {}).get("errors", {})
    if "image" in errors:
        return "Upload a leaf photo as the multipart form field 'image' (curl -F image=@leaf.jpg ...)."
    if "top_k" in errors:
        return f"top_k must be an integer from 1 to {settings.max_top_k}."
    return exc.description or "The request is not a valid multipart upload."


@service_ns.route("/health")
class Health(Resource):
    @service_ns.response(200, "The model is loaded and warmed up", health_model)
    @service_ns.response(503, "The model is still warming up", health_model)
    def get(self):
        """Report whether the service is ready to diagnose."""
        leaf_doctor = doctor()
        body = {
            "status": "ok" if leaf_doctor.ready.is_set() else "starting",
            "model": leaf_doctor.model_info,
            "backend": leaf_doctor.engine.name,
            "precision": leaf_doctor.engine.precision,
            "input_size": leaf_doctor.input_size,
            "labels": len(leaf_doctor.labels),
        }
        return body, 200 if leaf_doctor.ready.is_set() else 503


@api.errorhandler(RequestEntityTooLarge)
def upload_too_large(exc: RequestEntityTooLarge):
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    return {"message": f"The upload is over the {limit:,}-byte limit; send a smaller photo."}, 413


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the app: settings from defaults, then PLANTNET_* variables, then ``config``."""
    config = dict(config or {})
    settings = Settings.from_env(**config.pop("PLANTNET", {}))
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = Flask(__name__)
    app.config.update(
        PLANTNET=settings,
        MAX_CONTENT_LENGTH=settings.max_upload_bytes,
        ERROR_404_HELP=False,
        RESTX_MASK_SWAGGER=False,
        PROPAGATE_EXCEPTIONS=False,
    )
    app.config.update(config)
    app.extensions["plantnet"] = LeafDoctor(settings, metrics.observe_batch)
    api.init_app(app)
    app.before_request(_start_request)
    app.after_request(_finish_request)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _server_error)
    app.add_url_rule("/metrics", "metrics", _metrics)
    return app


def _metrics() -> Response:
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)


def _start_request() -> None:
    g.started = time.perf_counter()
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex


def _finish_request(response: Response) -> Response:
    seconds = time.perf_counter() - g.get("started", time.perf_counter())
    route = request.url_rule.rule if request.url_rule else "unmatched"
    response.headers[REQUEST_ID_HEADER] = g.get("request_id", "")
    metrics.observe_request(route, request.method, response.status_code, seconds)
    line = {
        "request_id": g.get("request_id"),
        "method": request.method,
        "route": route,
        "status": response.status_code,
        "latency_ms": round(seconds * 1000, 1),
        "bytes_in": request.content_length,
    }
    if response.status_code >= 400 and response.is_json:
        line["message"] = (response.get_json(silent=True) or {}).get("message")
    if "label" in g:
        line["label"] = g.label
    access_log.info(json.dumps(line))
    return response


def _http_error(exc: HTTPException):
    """Answer routing and protocol errors (404, 405, 413...) as JSON, outside the API too."""
    if isinstance(exc, RequestEntityTooLarge):
        return upload_too_large(exc)
    return {"message": exc.description or exc.name}, exc.code or 500


def _server_error(exc: Exception):
    """A bug, not the client's fault: log it once with its traceback, answer without details."""
    log.exception("unhandled error in request %s", g.get("request_id"))
    return {"message": "Internal server error; the request id in X-Request-ID helps us find it."}, 500


_default_app: Flask | None = None


def __getattr__(name: str) -> Flask:
    """Build ``app`` / ``application`` on first use, so importing create_app loads no model.

    ``gunicorn application:app`` and ``flask --app application run`` both look the name up.
    """
    global _default_app
    if name not in ("app", "application"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _default_app is None:
        try:
            _default_app = create_app()
        except (ModelLoadError, ValueError) as exc:
            log.error("cannot start: %s", exc)
            raise SystemExit(STARTUP_FAILED) from None
    return _default_app
