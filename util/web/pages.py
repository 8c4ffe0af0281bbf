"""The page for people: choose or photograph leaves, see each diagnosis, how sure it is and what it means.

``GET /diagnose`` renders the page. With JavaScript the page sends the photos to
``POST /Diagnosis/predictions`` and draws the answers itself (static/diagnose.js); without it the
same form posts here and the server diagnoses through ``DiagnosisService.diagnose_many`` (no HTTP
round trip) and renders the same result cards (templates/_results.html). The limits the page
checks before sending are the service's settings, rendered into the page.

Every answer of this blueprint carries page security headers (a same-origin-only
Content-Security-Policy and friends); the JSON API and the Swagger page keep their own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from flask import Blueprint, Response, current_app, g, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from util import conditions, leaf
from util.batcher import BatcherClosed, Overloaded
from util.conditions import ConditionNote
from util.config import Settings
from util.domain import UNAVAILABLE
from util.labels import split_label
from util.service import EXTENSION, Diagnosis, DiagnosisService, ImageFailure

log = logging.getLogger("plantnet")
web = Blueprint(
    "web",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/diagnose/static",
)

FIELD = "images"
NOT_A_LEAF = (
    "This photo does not look like a leaf of a crop the model knows, so it gives no diagnosis. "
    "Take a photo of one leaf that fills the frame, on a plain background, in daylight."
)
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True)
class Problem:
    """A failure in words a person understands: a headline and what to do about it."""

    title: str
    detail: str


@dataclass(frozen=True)
class Card:
    """One photo's result as the page shows it: a diagnosis, a not-a-leaf message, or a problem."""

    number: int  # from 1, as people count
    filename: str
    diagnosis: Diagnosis | None = None
    problem: Problem | None = None
    note: ConditionNote | None = None

    @property
    def known(self) -> bool:
        """False only when the model judged the photo unlike the leaves it knows."""
        verdict = getattr(self.diagnosis, "in_domain", UNAVAILABLE)
        return not (verdict.available and verdict.known is False)

    @property
    def message(self) -> str:
        return getattr(self.diagnosis, "message", None) or NOT_A_LEAF


def problem_for(status: int, message: str) -> Problem:
    """The headline for a photo's failure status; the service's own message says the details."""
    if status == 413:
        return Problem("This photo is too large.", message)
    if status == 415:
        return Problem("This file is not a photo the service can read.", message)
    if status == 503:
        return Problem("The service is busy.", "Try again in a moment.")
    if status == 400:
        return Problem("This file could not be read as a photo.", message)
    return Problem("Something went wrong with this photo.", message)


def capitalised(words: str) -> str:
    return words[:1].upper() + words[1:]


def label_words(label: str) -> str:
    """``"Tomato_Late blight"`` -> ``"Tomato: Late blight"``; ``"Tomato_healthy"`` -> ``"Tomato: Healthy"``."""
    plant, condition = split_label(label)
    return f"{plant}: {capitalised(condition)}"


@web.context_processor
def helpers() -> dict:
    return {"label_words": label_words, "capitalised": capitalised, "megabytes": megabytes}


def diagnosis_service() -> DiagnosisService:
    return current_app.extensions[EXTENSION]


def limits(settings: Settings) -> dict[str, int]:
    """What the page checks before sending: the service's own limits."""
    return {
        "max_photos": settings.max_images_per_request,
        "max_photo_bytes": settings.max_upload_bytes,
        "max_request_bytes": settings.max_request_bytes,
        "top_k": settings.default_top_k,
    }


def render_page(cards: list[Card] | None = None, error: Problem | None = None, status: int = 200) -> Response:
    settings: Settings = current_app.config["SETTINGS"]
    html = render_template(
        "diagnose.html",
        cards=cards or [],
        error=error,
        limits=limits(settings),
        formats=", ".join(leaf.ACCEPTED_FORMATS),
        disclaimer=conditions.disclaimer(),
        not_a_leaf=NOT_A_LEAF,
    )
    return Response(html, status, mimetype="text/html")


def megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.0f} MB"


@web.get("/diagnose")
def page() -> Response:
    """The page: a form to choose or photograph leaves."""
    return render_page()


@web.get("/app")
def app_alias():
    return redirect(url_for("web.page"), 302)


@web.post("/diagnose")
def diagnose_form() -> Response:
    """The form without JavaScript: diagnose the photos in-process and render the result cards."""
    settings: Settings = current_app.config["SETTINGS"]
    request.max_content_length = settings.max_request_bytes
    try:
        photos = [photo for photo in request.files.getlist(FIELD) if photo.filename]  # no file: an empty name
    except RequestEntityTooLarge:
        return render_page(error=too_large_together(settings), status=413)
    if not photos:
        return render_page(error=Problem("No photo was chosen.", "Choose one or more leaf photos first."), status=400)
    if len(photos) > settings.max_images_per_request:
        detail = f"You chose {len(photos)}; send at most {settings.max_images_per_request} photos at a time."
        return render_page(error=Problem("Too many photos at once.", detail), status=400)
    try:
        results = diagnosis_service().diagnose_many([photo.read() for photo in photos], settings.default_top_k)
    except (Overloaded, BatcherClosed):
        response = render_page(error=Problem("The service is busy.", "Try again in a moment."), status=503)
        response.headers["Retry-After"] = str(settings.retry_after_s)
        return response
    cards = [card(n, p.filename or f"photo {n}", r) for n, (p, r) in enumerate(zip(photos, results, strict=True), 1)]
    return render_page(cards)


def too_large_together(settings: Settings) -> Problem:
    return Problem(
        "The photos are too large together.",
        f"Send at most {megabytes(settings.max_request_bytes)} at a time, "
        f"and no photo over {megabytes(settings.max_upload_bytes)}.",
    )


def card(number: int, filename: str, result: Diagnosis | ImageFailure) -> Card:
    if isinstance(result, ImageFailure):
        return Card(number, filename, problem=problem_for(result.status, result.message))
    shown = Card(number, filename, diagnosis=result)
    return replace(shown, note=conditions.note_for(result.label)) if shown.known else shown


@web.errorhandler(HTTPException)
def page_error(exc: HTTPException) -> Response:
    """Errors of the page are pages too (the app's handler answers JSON for the API)."""
    if isinstance(exc, RequestEntityTooLarge):
        return render_page(error=too_large_together(current_app.config["SETTINGS"]), status=413)
    return render_page(error=Problem(exc.name, exc.description or ""), status=exc.code or 500)


@web.errorhandler(Exception)
def page_bug(exc: Exception) -> Response:
    """A bug on the page: logged once, answered as a page (the request id finds the log line)."""
    log.exception("unhandled error on the page in request %s", g.get("request_id"))
    detail = f"Try again; if it keeps happening, quote request id {g.get('request_id', '-')} to whoever runs it."
    return render_page(error=Problem("Something went wrong on our side.", detail), status=500)


@web.after_request
def security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response
