"""The page for people: choose or photograph leaves, see each diagnosis, how sure it is and what it means.

``GET /diagnose`` renders the page. With JavaScript the page sends the photos to
``POST /Diagnosis/predictions`` (or, when "These photos show one plant" is ticked, to
``POST /Diagnosis/plant``), then posts the API's answer to ``POST /diagnose/cards`` and puts the
cards it gets back in place (static/diagnose.js); without it the same form posts here and the server
diagnoses through ``DiagnosisService.diagnose_many`` or ``diagnose_plant`` (no HTTP round trip).
Either way the server draws every result card, from one set of macros (templates/_results.html).
"Which plant is this?" sends the crop hint both ways. The limits the page checks before sending are
the service's settings, and the script's sentences util.messages.PAGE_SCRIPT, rendered into the page.

Every answer of this blueprint carries page security headers (a same-origin-only
Content-Security-Policy and friends); the JSON API and the Swagger page keep their own.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from typing import Any

from flask import Blueprint, Response, current_app, g, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from util import conditions, leaf, messages
from util.api.errors import ApiError
from util.api.feedback import forget, give_feedback
from util.batcher import BatcherClosed, Overloaded
from util.conditions import ConditionNote
from util.config import Settings
from util.domain import UNAVAILABLE, Verdict
from util.feedback import OTHER_LABEL, feedback_store, remember, remember_plant
from util.labels import Prediction, UnknownCrop, split_label
from util.service import Diagnosis, ImageFailure, PlantDiagnosis, diagnosis_service

log = logging.getLogger("plantnet")
web = Blueprint(
    "web",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/diagnose/static",
)

FIELD = "images"
CROP_FIELD = "crop"
ONE_PLANT_FIELD = "one_plant"
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
    title: str | None = None  # instead of "Photo <number>: <filename>" (the card of one plant)
    used: bool = False  # one photo of a plant that went into the plant's diagnosis

    @property
    def known(self) -> bool:
        """False only when the model judged the photo unlike the leaves it knows."""
        verdict = getattr(self.diagnosis, "in_domain", UNAVAILABLE)
        return not (verdict.available and verdict.known is False)

    @property
    def message(self) -> str:
        return getattr(self.diagnosis, "message", None) or messages.PAGE_NOT_A_LEAF


@dataclass(frozen=True)
class PhotoStatus:
    """What became of one photo of a plant: used for the diagnosis, left out, or unreadable."""

    number: int
    filename: str
    kind: str  # "used", "unknown" or "problem": the CSS class and the icon
    words: str


@dataclass(frozen=True)
class PlantView:
    """One plant as the page shows it: the combined card and each photo's status beside it."""

    card: Card
    photos: list[PhotoStatus]


def problem_for(status: int, message: str) -> Problem:
    """The headline for a photo's failure status; the service's own message says the details."""
    if status == 413:
        return Problem(messages.PAGE_PHOTO_TOO_LARGE, message)
    if status == 415:
        return Problem(messages.PAGE_NOT_READABLE, message)
    if status == 503:
        return Problem(*messages.PAGE_BUSY)
    if status == 400:
        return Problem(messages.PAGE_NOT_A_PHOTO, message)
    return Problem(messages.PAGE_PHOTO_FAILED, message)


def capitalised(words: str) -> str:
    return words[:1].upper() + words[1:]


def label_words(label: str) -> str:
    """``"Tomato_Late blight"`` -> ``"Tomato: Late blight"``; ``"Tomato_healthy"`` -> ``"Tomato: Healthy"``."""
    plant, condition = split_label(label)
    return f"{plant}: {capitalised(condition)}"


@web.context_processor
def helpers() -> dict:
    return {"label_words": label_words, "capitalised": capitalised, "megabytes": megabytes}


def limits(settings: Settings) -> dict[str, int]:
    """What the page checks before sending: the service's own limits."""
    return {
        "max_photos": settings.max_images_per_request,
        "max_plant_photos": settings.max_photos_per_plant,
        "max_photo_bytes": settings.max_upload_bytes,
        "max_request_bytes": settings.max_request_bytes,
        "top_k": settings.default_top_k,
    }


def render_page(
    cards: list[Card] | None = None,
    error: Problem | None = None,
    status: int = 200,
    plant: PlantView | None = None,
    notice: str | None = None,
) -> Response:
    settings: Settings = current_app.config["SETTINGS"]
    html = render_template(
        "diagnose.html",
        notice=notice,
        feedback=feedback_view(settings),
        cards=cards or [],
        plant=plant,
        crops=diagnosis_service().crops,
        chosen_crop=chosen_crop(),
        one_plant=bool(form_value(ONE_PLANT_FIELD)),
        error=error,
        limits=limits(settings),
        formats=", ".join(leaf.ACCEPTED_FORMATS),
        disclaimer=conditions.disclaimer(),
        script_words=json.dumps(messages.PAGE_SCRIPT),
    )
    return Response(html, status, mimetype="text/html")


def form_value(name: str) -> str:
    """What the posted form said in ``name`` (to show the form as it was sent), or ""."""
    if request.method != "POST":
        return ""
    try:
        return request.form.get(name, "")
    except HTTPException:  # a body over the limit cannot be read: the form starts afresh
        return ""


def chosen_crop() -> str:
    """The crop the posted form chose, as the select spells it ("" for none or an unknown one)."""
    try:
        return diagnosis_service().resolve_crop(form_value(CROP_FIELD)) or ""
    except UnknownCrop:
        return ""


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
        return render_page(error=Problem(*messages.PAGE_NO_PHOTO), status=400)
    service = diagnosis_service()
    try:
        crop = service.resolve_crop(request.form.get(CROP_FIELD))
    except UnknownCrop:
        detail = messages.unknown_crop(request.form.get(CROP_FIELD, ""), service.crops)
        return render_page(error=Problem(messages.PAGE_UNKNOWN_CROP, detail), status=400)
    one_plant = bool(request.form.get(ONE_PLANT_FIELD))
    limit = settings.max_photos_per_plant if one_plant else settings.max_images_per_request
    if len(photos) > limit:
        what = "photos of one plant" if one_plant else "photos at a time"
        detail = f"You chose {len(photos)}; send at most {limit} {what}."
        return render_page(error=Problem(messages.PAGE_TOO_MANY, detail), status=400)
    try:
        if one_plant:
            plant = service.diagnose_plant([photo.read() for photo in photos], settings.default_top_k, crop=crop)
            plant = remember_plant(current_app, photos, plant)
            return render_plant(plant, [p.filename or f"photo {n}" for n, p in enumerate(photos, 1)])
        results = service.diagnose_many([photo.read() for photo in photos], settings.default_top_k, crop=crop)
        results = remember(current_app, photos, results)
    except (Overloaded, BatcherClosed):
        response = render_page(error=Problem(*messages.PAGE_BUSY), status=503)
        response.headers["Retry-After"] = str(settings.retry_after_s)
        return response
    cards = [card(n, p.filename or f"photo {n}", r) for n, (p, r) in enumerate(zip(photos, results, strict=True), 1)]
    return render_page(cards)


@dataclass(frozen=True)
class FeedbackView:
    """What the page needs to ask "Was this right?": shown only when the service keeps diagnoses."""

    kept: str  # what is kept and for how long, in plain words
    labels: list[str]  # the model's labels, for "which condition is it?"
    other: str = OTHER_LABEL


def feedback_view(settings: Settings) -> FeedbackView | None:
    if feedback_store(current_app) is None:
        return None
    return FeedbackView(messages.what_is_kept(settings.feedback_days), list(diagnosis_service().labels))


@web.post("/diagnose/feedback")
def feedback_form() -> Response:
    """The "Was this right?" form without JavaScript: save the answer, say so."""
    answer = {name: request.form.get(name) for name in ("id", "correct", "label")}
    if answer["correct"] == "true":
        answer["label"] = None  # the form sends its condition list with either button
    try:
        give_feedback(answer)
    except ApiError as exc:
        return render_page(error=Problem(messages.PAGE_NOT_SAVED, exc.message), status=exc.status)
    return render_page(notice=messages.FEEDBACK_THANKS)


@web.post("/diagnose/forget")
def forget_form() -> Response:
    """The "Delete this photo" button without JavaScript."""
    try:
        forget(request.form.get("id", ""))
    except ApiError as exc:
        return render_page(error=Problem(messages.PAGE_NOT_DELETED, exc.message), status=exc.status)
    return render_page(notice=messages.FEEDBACK_FORGOTTEN)


def render_plant(plant: PlantDiagnosis, filenames: list[str]) -> Response:
    """One card for the plant, and what became of each photo."""
    if isinstance(plant.diagnosis, ImageFailure):
        return render_page(
            error=problem_for(plant.diagnosis.status, plant.diagnosis.message), status=plant.diagnosis.status
        )
    return render_page(plant=plant_view(plant.diagnosis, plant.photos, filenames, range(1, len(filenames) + 1)))


def plant_view(
    combined: Diagnosis, photos: list[Diagnosis | ImageFailure], filenames: list[str], numbers: Any
) -> PlantView:
    statuses = [photo_status(n, name, r) for n, name, r in zip(numbers, filenames, photos, strict=True)]
    used = sum(status.kind == "used" for status in statuses)
    title = messages.page_plant_title(used, len(statuses))
    return PlantView(replace(card(0, "", combined), title=title), statuses)


def photo_status(number: int, filename: str, result: Diagnosis | ImageFailure) -> PhotoStatus:
    if isinstance(result, ImageFailure):
        return PhotoStatus(number, filename, "problem", problem_for(result.status, result.message).title)
    if not Card(number, filename, diagnosis=result).known:
        return PhotoStatus(number, filename, "unknown", messages.PAGE_PHOTO_LEFT_OUT)
    return PhotoStatus(number, filename, "used", messages.page_photo_used(label_words(result.label)))


def too_large_together(settings: Settings) -> Problem:
    return Problem(
        messages.PAGE_TOO_LARGE_TOGETHER,
        f"Send at most {megabytes(settings.max_request_bytes)} at a time, "
        f"and no photo over {megabytes(settings.max_upload_bytes)}.",
    )


def card(number: int, filename: str, result: Diagnosis | ImageFailure) -> Card:
    if isinstance(result, ImageFailure):
        return Card(number, filename, problem=problem_for(result.status, result.message))
    shown = Card(number, filename, diagnosis=result)
    return replace(shown, note=conditions.note_for(result.label)) if shown.known else shown


# --- the script's cards: the same macros, for an answer of the JSON API --------------------------------


@web.post("/diagnose/cards")
def cards_for_answer() -> Response:
    """Draw the result cards for an answer of the JSON API; the page's script posts it here.

    Why the server draws the script's cards too: one set of macros (templates/_results.html) then
    holds every card's markup and words, the condition notes come with them (no second fetch), and
    the page with and without JavaScript cannot drift apart. The script still calls the JSON API
    itself, as any client would; this route diagnoses nothing, it only renders what it is given.
    """
    settings: Settings = current_app.config["SETTINGS"]
    try:
        view = answer_view(request.get_json(silent=True), settings)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        return json_problem(400, messages.PAGE_CARDS_BODY)
    html = render_template("_cards.html", feedback=feedback_view(settings), **view)
    return Response(html, 200, mimetype="text/html")


def answer_view(body: Any, settings: Settings) -> dict[str, Any]:
    """``{"mode": "photos"|"plant", "numbers": [...], "filenames": [...], "answer": <the API's JSON>}`` -> cards."""
    numbers = [int(n) for n in body["numbers"]]
    filenames = [str(name) for name in body["filenames"]]
    answer = body["answer"]
    if len(numbers) != len(filenames) or len(numbers) > settings.max_images_per_request:
        raise ValueError("numbers and filenames must pair up, within the request limit")
    if body["mode"] == "plant":
        photos = [result_from_answer(item) for item in answer["photos"]]
        plant = plant_view(diagnosis_from_answer(answer), photos, filenames, numbers)
        cards = [photo_card(n, name, r) for n, name, r in zip(numbers, filenames, photos, strict=True)]
        said = messages.PAGE_NO_DIAGNOSIS if not plant.card.known else diagnosis_words(plant.card.diagnosis)
        return {"plant": plant, "cards": cards, "status": messages.page_plant_checked(len(cards), said)}
    if body["mode"] != "photos":
        raise ValueError("mode must be photos or plant")
    results = [result_from_answer(item) for item in answer["results"]]
    cards = [card(n, name, r) for n, name, r in zip(numbers, filenames, results, strict=True)]
    return {"plant": None, "cards": cards, "status": messages.page_checked([card_words(c) for c in cards])}


def result_from_answer(item: dict) -> Diagnosis | ImageFailure:
    """One entry of ``results`` (or of a plant's ``photos``) as the service gave it."""
    status = int(item.get("status", 200))
    if status != 200:
        return ImageFailure(status, str(item.get("message") or ""))
    return diagnosis_from_answer(item["diagnosis"])


def diagnosis_from_answer(body: dict) -> Diagnosis:
    """The API's diagnosis JSON back as the service's Diagnosis (what the cards show of it)."""
    verdict = body.get("in_domain") or {}
    known = verdict.get("known")
    label = str(body["label"])
    plant, condition = split_label(label)  # what a card needs, even from an answer that leaves them out
    return Diagnosis(
        label=label,
        confidence=float(body["confidence"]),
        top_k=[Prediction(str(guess["label"]), float(guess["confidence"])) for guess in body.get("top_k") or []],
        species=optional_text(body.get("species")) or plant,
        condition=optional_text(body.get("condition")) or condition,
        healthy=body.get("healthy") is True,
        model={},
        in_domain=Verdict(
            verdict.get("available") is True, known if isinstance(known, bool) else None, None, None, None
        ),
        message=optional_text(body.get("message")),
        id=optional_text(body.get("id")),
    )


def optional_text(value: Any) -> str | None:
    return None if value is None else str(value)


def photo_card(number: int, filename: str, result: Diagnosis | ImageFailure) -> Card:
    """One photo of a plant: its problem, its not-a-leaf message, or that it went into the diagnosis."""
    shown = card(number, filename, result)
    return replace(shown, used=True, note=None) if shown.diagnosis is not None and shown.known else shown


def percent(value: float) -> str:
    return "<1%" if value < 0.005 else f"{value * 100:.0f}%"


def diagnosis_words(diagnosis: Diagnosis) -> str:
    return messages.page_diagnosis_words(
        diagnosis.species or "", diagnosis.condition or "", bool(diagnosis.healthy), percent(diagnosis.confidence)
    )


def card_words(shown: Card) -> str:
    """The live region's words for one card."""
    if shown.problem is not None:
        return messages.page_photo_words(shown.number, shown.problem.title)
    if not shown.known:
        return messages.page_photo_words(shown.number, messages.PAGE_NOT_KNOWN)
    return messages.page_photo_words(shown.number, diagnosis_words(shown.diagnosis))


def json_problem(status: int, message: str) -> Response:
    return Response(json.dumps({"message": message}), status, mimetype="application/json")


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
