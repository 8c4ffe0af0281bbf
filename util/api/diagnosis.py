"""The Diagnosis namespace: one photo in, one diagnosis out; many photos in, one result each; several
photos of one plant in, one combined diagnosis out; and what the model is (GET /Diagnosis/model).

Every diagnosing route takes an optional ``crop`` hint; an answer names the hint it used in ``crop``,
and without a hint it has no ``crop`` key at all (answers exactly as before hints existed).
"""

from __future__ import annotations

from flask import current_app, g, request
from flask_restx import Namespace, Resource, fields, inputs, marshal, reqparse
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge

from util import leaf, messages
from util.api.errors import ApiError, error_model
from util.config import Settings
from util.feedback import remember, remember_plant
from util.labels import UnknownCrop
from util.service import Diagnosis, ImageFailure, diagnosis_service

ns = Namespace("Diagnosis", description="Leaf-disease diagnosis from a photo")
ns.add_model(error_model.name, error_model)

FORMATS = ", ".join(leaf.ACCEPTED_FORMATS)
ONE_PHOTO_HINT = "Upload a leaf photo as the multipart form field 'image' (curl -F image=@leaf.jpg ...)."
MANY_PHOTOS_HINT = (
    "Upload leaf photos in the repeated multipart form field 'images' (curl -F images=@a.jpg -F images=@b.jpg ...)."
)


def photo_parser(field: str, help: str, many: bool = False) -> reqparse.RequestParser:
    """A multipart parser for the photo field(s) and the optional top_k."""
    parser = reqparse.RequestParser()
    parser.add_argument(
        field, location="files", type=FileStorage, required=True, action="append" if many else "store", help=help
    )
    parser.add_argument(
        "top_k",
        location=("args", "form"),
        type=int,
        required=False,
        help=(
            "How many of the most likely labels to list in top_k: 1 to PLANTNET_MAX_TOP_K "
            f"({Settings.max_top_k} unless set); PLANTNET_DEFAULT_TOP_K ({Settings.default_top_k} unless set) if absent"
        ),
    )
    parser.add_argument(
        "strict",
        location=("args", "form"),
        type=inputs.boolean,
        required=False,
        default=False,
        help=(
            "true: a photo the model does not recognise as a leaf of a crop it knows is answered with 422 "
            "(per photo, in /predictions) instead of a 200 whose label is 'Unknown'"
        ),
    )
    parser.add_argument("crop", location=("args", "form"), type=str, required=False, help=messages.CROP_HINT_HELP)
    return parser


prediction_parser = photo_parser("image", f"A photo of one leaf ({FORMATS}) in the multipart field 'image'")
predictions_parser = photo_parser(
    "images",
    f"Photos of leaves ({FORMATS}), each in the repeated multipart field 'images': at most "
    f"PLANTNET_MAX_IMAGES_PER_REQUEST ({Settings.max_images_per_request} unless set) photos and "
    f"PLANTNET_MAX_REQUEST_BYTES ({Settings.max_request_bytes:,} unless set) bytes together",
    many=True,
)
plant_parser = photo_parser(
    "images",
    f"1 to PLANTNET_MAX_PHOTOS_PER_PLANT ({Settings.max_photos_per_plant} unless set) photos of ONE plant "
    f"({FORMATS}), each in the repeated multipart field 'images' (a close-up, the whole leaf, the underside...)",
    many=True,
)


class NullableString(fields.String):
    """A string that may be null, said the Swagger 2.0 way (``x-nullable``)."""

    def schema(self) -> dict:
        return {**super().schema(), "x-nullable": True}


class NullableFloat(fields.Float):
    """A number that may be null, said the Swagger 2.0 way (``x-nullable``)."""

    def schema(self) -> dict:
        return {**super().schema(), "x-nullable": True}


class NullableInteger(fields.Integer):
    """An integer that may be null, said the Swagger 2.0 way (``x-nullable``)."""

    def schema(self) -> dict:
        return {**super().schema(), "x-nullable": True}


class NullableBoolean(fields.Boolean):
    """A boolean that may be null, said the Swagger 2.0 way (``x-nullable``)."""

    def schema(self) -> dict:
        return {**super().schema(), "x-nullable": True}


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
in_domain_model = ns.model(
    "InDomain",
    {
        "available": fields.Boolean(required=True, description="Whether this model has an in-domain calibration"),
        "known": fields.Boolean(description="The photo looks like the leaves the model learned from"),
        "score": fields.Float(
            min=0, max=1, description="Share of held-out known leaves that looked less typical", example=0.41
        ),
        "threshold": fields.Float(min=0, max=1, description="known = score >= threshold", example=0.05),
        "method": fields.String(example="mahalanobis+energy"),
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
        "species": NullableString(required=True, description="null when in_domain.known is false", example="Tomato"),
        "condition": NullableString(
            required=True, description="null when in_domain.known is false", example="Late blight"
        ),
        "healthy": NullableBoolean(required=True, description="null when in_domain.known is false", example=False),
        "model": fields.Nested(model_info, required=True),
        "in_domain": fields.Nested(
            in_domain_model, skip_none=True, description="Is this a photo the model knows? (util/domain.py)"
        ),
        "message": NullableString(
            description="null, or when in_domain.known is false: why there is no diagnosis and how to take a photo "
            "the model can judge (then label is 'Unknown' and top_k only lists the nearest known labels)"
        ),
        "crop": fields.String(
            description="The crop hint the diagnosis was made with (labels and top_k are that crop's only); "
            "absent when no crop was sent",
            example="Tomato",
        ),
        "id": fields.String(
            description="This diagnosis' id, for POST /Diagnosis/feedback and GET/DELETE /Diagnosis/diagnoses/{id}; "
            "absent when the service keeps no diagnoses (PLANTNET_FEEDBACK off) or could not keep this one",
            example="q3Zr8bVn0xKc1fQm2yW4tA",
        ),
    },
)
photo_result_model = ns.model(
    "PhotoResult",
    {
        "index": fields.Integer(required=True, min=0, description="The photo's position in the upload, from 0"),
        "filename": fields.String(description="The photo's file name as uploaded", example="leaf.jpg"),
        "status": fields.Integer(
            required=True, description="200, or the status /Diagnosis/prediction answers for this photo", example=200
        ),
        "diagnosis": fields.Nested(
            diagnosis_model, allow_null=True, description="With status 200: what /Diagnosis/prediction answers"
        ),
        "message": fields.String(description="With any other status: what is wrong with this photo"),
    },
)
predictions_model = ns.model(
    "Predictions",
    {
        "results": fields.List(
            fields.Nested(photo_result_model, skip_none=True), required=True, description="One per photo, in order"
        ),
        "model": fields.Nested(model_info, required=True),
    },
)


plant_model = ns.inherit(
    "PlantDiagnosis",
    diagnosis_model,
    {
        "combined_from": fields.Integer(
            required=True, min=0, description="How many photos the verdict accepted and the diagnosis combines"
        ),
        "photos": fields.List(
            fields.Nested(photo_result_model, skip_none=True),
            required=True,
            description="Each photo's own result, in upload order (as /Diagnosis/predictions answers it)",
        ),
    },
)
crop_labels_model = ns.model(
    "CropLabels",
    {
        "crop": fields.String(required=True, description="A value the crop hint takes", example="Tomato"),
        "labels": fields.List(fields.String, required=True, example=["Tomato_Late blight", "Tomato_healthy"]),
    },
)
calibration_model = ns.model(
    "InDomainCalibration",
    {
        "available": fields.Boolean(required=True, description="Whether answers carry an in-domain verdict"),
        "method": NullableString(example="mahalanobis+energy"),
        "threshold": NullableFloat(description="known = score >= threshold", example=0.025),
        "target_acceptance": NullableFloat(
            description="Share of held-out known leaves the threshold keeps", example=0.975
        ),
        "calibrated_on": NullableString(example="validation split, 769 images"),
    },
)
rejected_model = ns.model(
    "RejectionRow",
    {
        "name": fields.String(required=True, example="near (held out)"),
        "images": NullableInteger(required=True, example=144),
        "rejected": NullableInteger(required=True, description="How many the verdict rejected", example=139),
    },
)
field_model = ns.model(
    "FieldNumbers",
    {
        "images": NullableInteger(description="Held-out field photos (PlantDoc report half)", example=198),
        "best_guess": NullableFloat(description="Top label correct, whatever the verdict", example=0.434),
        "best_guess_with_crop": NullableFloat(description="Top label among the true crop's", example=0.742),
        "accepted": NullableFloat(description="Share the in-domain verdict accepted", example=0.247),
        "right": NullableFloat(description="Accepted and correct", example=0.157),
        "harm": NullableFloat(description="Accepted and wrong", example=0.091),
        "accepted_with_crop": NullableFloat(description="Accepted, each sent with its true crop", example=0.4),
        "right_with_crop": NullableFloat(description="Accepted and correct, with the true crop", example=0.35),
        "harm_with_crop": NullableFloat(description="Accepted and wrong, with the true crop", example=0.05),
    },
)
measured_model = ns.model(
    "MeasuredNumbers",
    {
        "split": NullableString(example="validation"),
        "images": NullableInteger(description="Photos of the split", example=769),
        "top1": NullableFloat(example=0.9766),
        "top1_interval_95": fields.List(fields.Float, description="Empty when not measured", example=[0.963, 0.985]),
        "top3": NullableFloat(example=1.0),
        "field_proxy_images": NullableInteger(example=769),
        "field_proxy_top1": NullableFloat(
            description="Validation leaves pasted onto non-leaf photos (a proxy, not field photos)", example=0.8635
        ),
        "field": fields.Nested(field_model, description="Real field photos, measured by the finishing"),
        "rejected": fields.List(fields.Nested(rejected_model), description="The in-domain verdict per photo group"),
    },
)
limits_model = ns.model(
    "Limits",
    {
        "max_upload_bytes": fields.Integer(required=True, description="One photo (PLANTNET_MAX_UPLOAD_BYTES)"),
        "max_pixels": fields.Integer(required=True, description="One photo's pixels (PLANTNET_MAX_PIXELS)"),
        "max_images_per_request": fields.Integer(required=True, description="/Diagnosis/predictions"),
        "max_request_bytes": fields.Integer(required=True, description="Every photo of one request together"),
        "max_photos_per_plant": fields.Integer(required=True, description="/Diagnosis/plant"),
        "default_top_k": fields.Integer(required=True),
        "max_top_k": fields.Integer(required=True),
        "request_timeout_s": fields.Float(required=True),
    },
)
description_model = ns.model(
    "ModelDescription",
    {
        "name": fields.String(required=True, example="plantnet-inceptionv3"),
        "version": fields.String(required=True, example="2026-12-04"),
        "input_size": fields.Integer(required=True, description="Side of the square input, pixels", example=160),
        "engine": fields.String(required=True, example="openvino"),
        "precision": fields.String(required=True, example="bf16"),
        "labels": fields.Integer(required=True, description="How many labels the model answers", example=34),
        "crops": fields.List(fields.Nested(crop_labels_model), required=True, description="Labels grouped by crop"),
        "in_domain": fields.Nested(calibration_model, required=True),
        "measured": fields.Nested(
            measured_model,
            required=True,
            description="What the model card reports (evaluation.json beside the model); nulls when not measured",
        ),
        "limits": fields.Nested(limits_model, required=True),
    },
)


@ns.route("/prediction")
class OnePhoto(Resource):
    @ns.expect(prediction_parser)
    @ns.response(200, "The diagnosis", diagnosis_model)
    @ns.response(400, "No image, an empty or damaged file, a bad top_k, or a crop the model does not know", error_model)
    @ns.response(413, "The upload or the image's pixel count is over the limit", error_model)
    @ns.response(415, "The file is not an image in a supported format", error_model)
    @ns.response(422, "strict=true and the photo is not a leaf of a crop the model knows", error_model)
    @ns.response(503, "The model is still warming up or the service is overloaded", error_model)
    def post(self) -> dict:
        """Diagnose the leaf in an uploaded photo."""
        if len(request.files.getlist("image")) > 1:
            raise ApiError(400, "Send one image per request in the field 'image'.")
        args = parse(prediction_parser)
        k, crop = top_k(args), crop_hint(args)
        result = diagnosis_service().diagnose(args["image"].stream, k, args["strict"], crop)
        if isinstance(result, ImageFailure):
            raise ApiError(result.status, result.message)
        g.label = result.label
        result = remember(current_app, [args["image"]], [result])[0]
        return answer(result, diagnosis_model)


@ns.route("/predictions")
class ManyPhotos(Resource):
    @ns.expect(predictions_parser)
    @ns.response(200, "One result per photo, in upload order", predictions_model)
    @ns.response(400, "No photo in 'images', too many photos, a bad top_k, or an unknown crop", error_model)
    @ns.response(413, "The photos together are over PLANTNET_MAX_REQUEST_BYTES", error_model)
    @ns.response(503, "The service is overloaded (see Retry-After), warming up or restarting", error_model)
    def post(self) -> dict:
        """Diagnose the leaves in several uploaded photos, each on its own."""
        settings = current_app.config["SETTINGS"]
        args = parse_within(predictions_parser, settings.max_request_bytes)
        photos: list[FileStorage] = args["images"]
        if len(photos) > settings.max_images_per_request:
            raise ApiError(
                400, f"Send at most {settings.max_images_per_request} photos per request, not {len(photos)}."
            )
        service = diagnosis_service()
        k, crop = top_k(args), crop_hint(args)
        results = service.diagnose_many([photo.stream for photo in photos], k, args["strict"], crop)
        results = remember(current_app, photos, results)
        pairs = enumerate(zip(photos, results, strict=True))
        body = {"results": [photo_result(i, p.filename, r) for i, (p, r) in pairs], "model": service.model_info}
        return answer(body, predictions_model)


@ns.route("/plant")
class OnePlant(Resource):
    @ns.expect(plant_parser)
    @ns.response(200, "One diagnosis combined from the accepted photos, and each photo's own result", plant_model)
    @ns.response(
        400,
        "No photo, more than PLANTNET_MAX_PHOTOS_PER_PLANT, a bad top_k, an unknown crop, or none readable",
        error_model,
    )
    @ns.response(413, "The photos together are over PLANTNET_MAX_REQUEST_BYTES", error_model)
    @ns.response(415, "None of the files is an image in a supported format", error_model)
    @ns.response(422, "strict=true and no photo is a leaf of a crop the model knows", error_model)
    @ns.response(503, "The service is overloaded (see Retry-After), warming up or restarting", error_model)
    def post(self) -> dict:
        """Diagnose one plant from several photos of it (1 to PLANTNET_MAX_PHOTOS_PER_PLANT)."""
        settings: Settings = current_app.config["SETTINGS"]
        limit = settings.max_photos_per_plant
        args = parse_within(plant_parser, settings.max_request_bytes, photos_hint=messages.no_plant_photo(limit))
        photos: list[FileStorage] = args["images"]
        if len(photos) > limit:
            raise ApiError(400, messages.too_many_plant_photos(len(photos), limit))
        k, crop = top_k(args), crop_hint(args)
        plant = diagnosis_service().diagnose_plant([photo.stream for photo in photos], k, args["strict"], crop)
        if isinstance(plant.diagnosis, ImageFailure):
            raise ApiError(plant.diagnosis.status, plant.diagnosis.message)
        g.label = plant.diagnosis.label
        plant = remember_plant(current_app, photos, plant)
        results = [photo_result(i, p.filename, r) for i, (p, r) in enumerate(zip(photos, plant.photos, strict=True))]
        accepted = sum(isinstance(r, Diagnosis) and r.in_domain.known is not False for r in plant.photos)
        body = answer(vars(plant.diagnosis) | {"combined_from": accepted, "photos": results}, plant_model)
        tail = {key: body.pop(key) for key in ("combined_from", "photos")}
        return body | tail  # the diagnosis first, then how it was combined and each photo's own result


@ns.route("/model")
class TheModel(Resource):
    @ns.marshal_with(description_model, description="The model this service runs and what was measured on it")
    def get(self) -> dict:
        """Describe the model: labels by crop, engine, in-domain verdict, measured numbers, request limits."""
        return diagnosis_service().description()


def photo_result(index: int, filename: str | None, result: Diagnosis | ImageFailure) -> dict:
    if isinstance(result, ImageFailure):
        return {"index": index, "filename": filename, "status": result.status, "message": result.message}
    return {"index": index, "filename": filename, "status": 200, "diagnosis": result}


def answer(body: object, model: dict) -> dict:
    """Marshal ``body`` with its documented model; a diagnosis made without a crop hint has no ``crop`` key."""
    return without_unset_hint(marshal(body, model))


UNSET_OMITTED = ("crop", "id")  # absent rather than null: answers read as before hints and feedback existed


def without_unset_hint(body: object) -> object:
    if isinstance(body, dict):
        return {
            key: without_unset_hint(value)
            for key, value in body.items()
            if not (key in UNSET_OMITTED and value is None)
        }
    if isinstance(body, list):
        return [without_unset_hint(item) for item in body]
    return body


def crop_hint(args: dict) -> str | None:
    """The model's spelling of the crop hint, or None; 400 naming the known crops when it knows no such crop."""
    service = diagnosis_service()
    try:
        return service.resolve_crop(args.get("crop"))
    except UnknownCrop:
        raise ApiError(400, messages.unknown_crop(args["crop"], service.crops)) from None


def parse_within(parser: reqparse.RequestParser, max_bytes: int, photos_hint: str = MANY_PHOTOS_HINT) -> dict:
    """``parse`` for a many-photo request: its whole body is capped at ``max_bytes`` (413 past it)."""
    request.max_content_length = max_bytes
    try:
        return parse(parser, photos_hint)
    except RequestEntityTooLarge:
        raise ApiError(413, messages.request_too_large(max_bytes)) from None


def parse(parser: reqparse.RequestParser, photos_hint: str = MANY_PHOTOS_HINT) -> dict:
    """Parse the request, or say which argument is wrong and how to send it right."""
    try:
        return parser.parse_args()
    except BadRequest as exc:
        errors = (getattr(exc, "data", None) or {}).get("errors", {})
        if "image" in errors:
            raise ApiError(400, ONE_PHOTO_HINT) from None
        if "images" in errors:
            raise ApiError(400, photos_hint) from None
        if "top_k" in errors:
            raise top_k_error() from None
        if "strict" in errors:
            raise ApiError(400, "strict must be true or false.") from None
        raise ApiError(400, exc.description or "The request is not a valid multipart upload.") from None


def top_k(args: dict) -> int:
    """The top_k asked for, or the default; 400 outside 1..PLANTNET_MAX_TOP_K."""
    settings: Settings = current_app.config["SETTINGS"]
    k = settings.default_top_k if args["top_k"] is None else args["top_k"]
    if not 1 <= k <= settings.max_top_k:
        raise top_k_error()
    return k


def top_k_error() -> ApiError:
    return ApiError(400, f"top_k must be an integer from 1 to {current_app.config['SETTINGS'].max_top_k}.")
