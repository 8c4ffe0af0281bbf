"""The Diagnosis namespace: one photo in, one diagnosis out; or many photos in, one result each."""

from __future__ import annotations

from flask import current_app, g, request
from flask_restx import Namespace, Resource, fields, inputs, reqparse
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge

from util import leaf
from util.api.errors import ApiError, error_model
from util.config import Settings
from util.service import EXTENSION, Diagnosis, DiagnosisService, ImageFailure

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
    return parser


prediction_parser = photo_parser("image", f"A photo of one leaf ({FORMATS}) in the multipart field 'image'")
predictions_parser = photo_parser(
    "images",
    f"Photos of leaves ({FORMATS}), each in the repeated multipart field 'images': at most "
    f"PLANTNET_MAX_IMAGES_PER_REQUEST ({Settings.max_images_per_request} unless set) photos and "
    f"PLANTNET_MAX_REQUEST_BYTES ({Settings.max_request_bytes:,} unless set) bytes together",
    many=True,
)


class NullableString(fields.String):
    """A string that may be null, said the Swagger 2.0 way (``x-nullable``)."""

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


def diagnosis_service() -> DiagnosisService:
    """The process's one DiagnosisService (model, engine, batcher), created with the app."""
    return current_app.extensions[EXTENSION]


@ns.route("/prediction")
class OnePhoto(Resource):
    @ns.expect(prediction_parser)
    @ns.marshal_with(diagnosis_model, description="The diagnosis")
    @ns.response(400, "No image, an empty or damaged file, or a bad top_k", error_model)
    @ns.response(413, "The upload or the image's pixel count is over the limit", error_model)
    @ns.response(415, "The file is not an image in a supported format", error_model)
    @ns.response(422, "strict=true and the photo is not a leaf of a crop the model knows", error_model)
    @ns.response(503, "The model is still warming up or the service is overloaded", error_model)
    def post(self) -> Diagnosis:
        """Diagnose the leaf in an uploaded photo."""
        if len(request.files.getlist("image")) > 1:
            raise ApiError(400, "Send one image per request in the field 'image'.")
        args = parse(prediction_parser)
        result = diagnosis_service().diagnose(args["image"].read(), top_k(args), args["strict"])
        if isinstance(result, ImageFailure):
            raise ApiError(result.status, result.message)
        g.label = result.label
        return result


@ns.route("/predictions")
class ManyPhotos(Resource):
    @ns.expect(predictions_parser)
    @ns.marshal_with(predictions_model, description="One result per photo, in upload order")
    @ns.response(400, "No photo in 'images', too many photos, or a bad top_k", error_model)
    @ns.response(413, "The photos together are over PLANTNET_MAX_REQUEST_BYTES", error_model)
    @ns.response(503, "The service is overloaded (see Retry-After), warming up or restarting", error_model)
    def post(self) -> dict:
        """Diagnose the leaves in several uploaded photos, each on its own."""
        settings = current_app.config["SETTINGS"]
        request.max_content_length = settings.max_request_bytes
        try:
            args = parse(predictions_parser)
        except RequestEntityTooLarge:
            raise ApiError(
                413,
                f"The photos are over the {settings.max_request_bytes:,}-byte limit of one request "
                "together; send fewer or smaller photos.",
            ) from None
        photos: list[FileStorage] = args["images"]
        if len(photos) > settings.max_images_per_request:
            raise ApiError(
                400, f"Send at most {settings.max_images_per_request} photos per request, not {len(photos)}."
            )
        service = diagnosis_service()
        results = service.diagnose_many([photo.read() for photo in photos], top_k(args), args["strict"])
        pairs = enumerate(zip(photos, results, strict=True))
        return {"results": [photo_result(i, p.filename, r) for i, (p, r) in pairs], "model": service.model_info}


def photo_result(index: int, filename: str | None, result: Diagnosis | ImageFailure) -> dict:
    if isinstance(result, ImageFailure):
        return {"index": index, "filename": filename, "status": result.status, "message": result.message}
    return {"index": index, "filename": filename, "status": 200, "diagnosis": result}


def parse(parser: reqparse.RequestParser) -> dict:
    """Parse the request, or say which argument is wrong and how to send it right."""
    try:
        return parser.parse_args()
    except BadRequest as exc:
        errors = (getattr(exc, "data", None) or {}).get("errors", {})
        if "image" in errors:
            raise ApiError(400, ONE_PHOTO_HINT) from None
        if "images" in errors:
            raise ApiError(400, MANY_PHOTOS_HINT) from None
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
