"""Feedback on diagnoses, in the Diagnosis namespace: growers confirm or correct what the model said.

With PLANTNET_FEEDBACK on (util/feedback), every diagnosis carries an ``id``; ``POST /Diagnosis/feedback``
records whether it was right (and what it really is), ``GET /Diagnosis/diagnoses/<id>`` shows what is
kept, ``DELETE`` removes it and its photo. With storage off, each answers 404 saying so.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import current_app, request
from flask_restx import Resource, fields, inputs, marshal

from util import messages
from util.api.diagnosis import NullableString, answer, diagnosis_model, diagnosis_service, ns
from util.api.errors import ApiError, error_model
from util.feedback import OTHER_LABEL, FeedbackStore, StorageUnavailable, StoredDiagnosis, feedback_store, is_id
from util.feedback.schema import NOTE_LENGTH

feedback_input = ns.model(
    "FeedbackInput",
    {
        "id": fields.String(required=True, description="The diagnosis' id, from its answer", example="q3Zr8..."),
        "correct": fields.Boolean(required=True, description="true: the diagnosis was right; false: it was wrong"),
        "label": fields.String(
            description=f"With correct=false: the right label (GET /Diagnosis/model lists them), or '{OTHER_LABEL}'",
            example="Tomato_Early blight",
        ),
        "note": fields.String(description=f"A short note, at most {NOTE_LENGTH} characters", max_length=NOTE_LENGTH),
    },
)
feedback_model = ns.model(
    "Feedback",
    {
        "correct": fields.Boolean(required=True),
        "label": NullableString(description="The right label the grower gave, if any", example="Tomato_Early blight"),
        "note": NullableString(description="The grower's note, if any"),
        "at": fields.DateTime(required=True, description="When the feedback was saved (UTC)"),
    },
)
feedback_answer = ns.model(
    "FeedbackSaved", {"id": fields.String(required=True), "feedback": fields.Nested(feedback_model, required=True)}
)
kept_model = ns.model(
    "KeptDiagnosis",
    {
        "id": fields.String(required=True),
        "created_at": fields.DateTime(required=True, description="When the photo was diagnosed (UTC)"),
        "expires_at": fields.DateTime(required=True, description="When it is deleted (PLANTNET_FEEDBACK_DAYS)"),
        "photo_kept": fields.Boolean(required=True, description="The photo is kept (re-encoded, no metadata)"),
        "diagnosis": fields.Nested(diagnosis_model, required=True, description="The answer as it was given"),
        "feedback": fields.Nested(feedback_model, allow_null=True, description="null until feedback is given"),
    },
)


def store() -> FeedbackStore:
    """The feedback store, or 404 saying that this service keeps nothing."""
    kept = feedback_store(current_app)
    if kept is None:
        raise ApiError(404, messages.FEEDBACK_OFF)
    return kept


def not_kept() -> ApiError:
    return ApiError(404, messages.DIAGNOSIS_NOT_KEPT.format(days=current_app.config["SETTINGS"].feedback_days))


def unavailable() -> ApiError:
    return ApiError(
        503, messages.STORAGE_UNAVAILABLE, {"Retry-After": str(current_app.config["SETTINGS"].retry_after_s)}
    )


def feedback_fields(body: Any, labels: list[str]) -> tuple[str, bool, str | None, str | None]:
    """(id, correct, label, note) from a JSON object or a form; 400 naming the field that is wrong."""
    if not hasattr(body, "get"):
        raise ApiError(400, messages.FEEDBACK_BODY)
    diagnosis_id, correct, label, note = (body.get(name) for name in ("id", "correct", "label", "note"))
    if not is_id(diagnosis_id):
        raise ApiError(400, messages.FEEDBACK_ID)
    if isinstance(correct, str):  # a form sends text
        try:
            correct = inputs.boolean(correct)
        except ValueError:
            raise ApiError(400, messages.FEEDBACK_CORRECT) from None
    if not isinstance(correct, bool):
        raise ApiError(400, messages.FEEDBACK_CORRECT)
    if label == "":
        label = None
    if label is not None and correct:
        raise ApiError(400, messages.FEEDBACK_LABEL_WHEN_RIGHT)
    if label is not None and label not in (*labels, OTHER_LABEL):
        raise ApiError(400, messages.feedback_label(labels, OTHER_LABEL))
    if note is not None and (not isinstance(note, str) or len(note) > NOTE_LENGTH or "\x00" in note):
        raise ApiError(400, messages.FEEDBACK_NOTE.format(limit=NOTE_LENGTH))
    return diagnosis_id, correct, label, (note.strip() or None) if note else None


def give_feedback(body: Any) -> dict:
    """Validate and save feedback (acknowledged after commit); what the API and the page both call."""
    kept = store()
    diagnosis_id, correct, label, note = feedback_fields(body, list(diagnosis_service().labels))
    try:
        saved = kept.give_feedback(diagnosis_id, correct, label, note)
    except StorageUnavailable:
        raise unavailable() from None
    if saved is None:
        raise not_kept()
    return {"id": diagnosis_id, "feedback": vars(saved)}


def forget(diagnosis_id: str) -> None:
    """Delete a kept diagnosis and its photo; 404 if there is none."""
    kept = store()
    if not is_id(diagnosis_id):
        raise not_kept()
    try:
        deleted = kept.delete(diagnosis_id)
    except StorageUnavailable:
        raise unavailable() from None
    if not deleted:
        raise not_kept()


def kept_body(kept: StoredDiagnosis, days: int) -> dict:
    feedback = kept.feedback
    return {
        "id": kept.id,
        "created_at": kept.created_at,
        "expires_at": kept.created_at + timedelta(days=days),
        "photo_kept": kept.photo is not None,
        "diagnosis": kept.answer,
        "feedback": None if feedback is None else vars(feedback),
    }


@ns.route("/feedback")
class GiveFeedback(Resource):
    @ns.expect(feedback_input, validate=False)
    @ns.response(200, "Saved (committed before this answer)", feedback_answer)
    @ns.response(400, "A missing or wrong field", error_model)
    @ns.response(404, "No such diagnosis is kept, or this service keeps none (PLANTNET_FEEDBACK off)", error_model)
    @ns.response(503, "Feedback storage is not answering; nothing was saved", error_model)
    def post(self) -> dict:
        """Say whether a diagnosis was right, and if not, what it is."""
        body = request.get_json(silent=True) if request.is_json else request.form
        return marshal(give_feedback(body), feedback_answer)


@ns.route("/diagnoses/<string:diagnosis_id>")
@ns.param("diagnosis_id", "The diagnosis' id, from its answer")
class KeptDiagnosis(Resource):
    @ns.response(200, "The kept diagnosis and its feedback", kept_model)
    @ns.response(404, "No such diagnosis is kept, or this service keeps none", error_model)
    @ns.response(503, "Feedback storage is not answering", error_model)
    def get(self, diagnosis_id: str) -> dict:
        """Show a kept diagnosis and the feedback on it."""
        kept_store = store()
        if not is_id(diagnosis_id):
            raise not_kept()
        try:
            kept = kept_store.get(diagnosis_id)
        except StorageUnavailable:
            raise unavailable() from None
        if kept is None:
            raise not_kept()
        return answer(kept_body(kept, kept_store.days), kept_model)  # no 'crop' key when none was sent

    @ns.response(204, "Deleted: the diagnosis, its feedback and its photo")
    @ns.response(404, "No such diagnosis is kept, or this service keeps none", error_model)
    @ns.response(503, "Feedback storage is not answering; nothing was deleted", error_model)
    def delete(self, diagnosis_id: str):
        """Delete a kept diagnosis, its feedback and its photo."""
        forget(diagnosis_id)
        return "", 204
