"""One error body for every failure: ``{"message": ...}`` with the status that says whose fault it is.

Routes raise (``ApiError``, an image error from util.leaf, the batcher's ``Overloaded`` ...);
``describe`` turns each kind into a status, a message and headers, and ``init_app`` installs the
app's only handlers, which answer with it inside the API and outside it (404, 405, 413) alike.
The many-photo endpoint uses the same words for each photo's own failure.
"""

from __future__ import annotations

import logging
from concurrent.futures import TimeoutError as FutureTimeout

import flask_restx
from flask import Flask, current_app, g, request
from flask_restx import Model, fields
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from util import leaf, messages
from util.batcher import BatcherClosed, Overloaded
from util.service import UploadTooLarge

log = logging.getLogger("plantnet")

error_model = Model("Error", {"message": fields.String(required=True, description="What to fix")})


class ApiError(Exception):
    """A failure the client can act on: its status, a message and optional headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def describe(exc: Exception) -> tuple[int, str, dict[str, str]]:
    """Status, message and headers for a failure the client caused or can retry; 500 for anything else."""
    if isinstance(exc, ApiError):
        if exc.status == 503 and "Retry-After" not in exc.headers:  # every 503 says when to come back
            return 503, exc.message, {**exc.headers, "Retry-After": str(current_app.config["SETTINGS"].retry_after_s)}
        return exc.status, exc.message, exc.headers
    if isinstance(exc, leaf.ImageError):
        return exc.status_code, str(exc), {}
    if isinstance(exc, Overloaded):
        seconds = current_app.config["SETTINGS"].retry_after_s
        return 503, messages.overloaded(seconds), {"Retry-After": str(seconds)}
    if isinstance(exc, FutureTimeout | BatcherClosed):
        return 503, messages.BUSY, {"Retry-After": str(current_app.config["SETTINGS"].retry_after_s)}
    if isinstance(exc, RequestEntityTooLarge):
        return 413, str(UploadTooLarge(request.max_content_length or 0)), {}
    if isinstance(exc, HTTPException):
        headers = {name: value for name, value in exc.get_headers() if name.lower() != "content-type"}
        return exc.code or 500, exc.description or exc.name, headers
    return 500, "Internal server error; the request id in X-Request-ID helps us find it.", {}


def answer(exc: Exception):
    """The app's one error handler."""
    status, message, headers = describe(exc)
    if status == 500 and not isinstance(exc, HTTPException):
        log.exception("unhandled error in request %s", g.get("request_id"))
    return {"message": message}, status, headers


def init_app(app: Flask) -> None:
    app.register_error_handler(Exception, answer)


class Api(flask_restx.Api):
    """A flask-restx Api that leaves every error to the app's handler above.

    restx's own handler would build a second kind of error body, and log every 5xx (a 503 for
    overload included) as a crash.
    """

    def handle_error(self, e: Exception):
        raise e
