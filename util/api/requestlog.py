"""One structured log line and metrics per request, and a request id the client can quote."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from flask import Flask, Response, g, request

from util import metrics
from util.budget import IDLE_TRIM

REQUEST_ID_HEADER = "X-Request-ID"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

access_log = logging.getLogger("plantnet.access")


def init_app(app: Flask) -> None:
    app.before_request(_start_request)
    app.after_request(_finish_request)
    app.teardown_request(_end_request)


def _start_request() -> None:
    metrics.INFLIGHT.inc()
    IDLE_TRIM.started()
    g.inflight = True
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
        "method": request.method[:16],  # any token is a method to waitress: keep log lines short
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


def _end_request(_exc: BaseException | None) -> None:
    """Runs whatever happened to the request, so the in-flight gauge never drifts."""
    if g.pop("inflight", False):
        metrics.INFLIGHT.dec()
        IDLE_TRIM.finished(request.content_length or 0)
