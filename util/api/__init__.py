"""The web API (flask-restx): one namespace per module, one error handler for all of them."""

from __future__ import annotations

from flask import Flask

from util.api import conditions, diagnosis, errors, feedback, ops, security  # noqa: F401 (feedback: routes on diagnosis.ns)
from util.leaf import ACCEPTED_FORMATS

__version__ = "1.0.0"

api = errors.Api(
    version=__version__,
    title="PlantNet API",
    description=(
        f"Diagnose plant-leaf diseases from a photo. POST a leaf photo ({', '.join(ACCEPTED_FORMATS)}) "
        "to /Diagnosis/prediction as the multipart field `image` and get the most likely disease, its "
        "confidence and the runners-up; or POST several in the repeated field `images` to "
        "/Diagnosis/predictions and get one result per photo; or POST up to five photos of one plant to "
        "/Diagnosis/plant and get one diagnosis combined from them. Say which crop the photos show with "
        "`crop` (GET /Diagnosis/model lists the crops, and what the model is). "
        "For people rather than programs: [the diagnosis page](/diagnose)."
    ),
    doc="/",
)
api.add_namespace(diagnosis.ns)
api.add_namespace(ops.ns)
api.add_namespace(conditions.ns)


def init_app(app: Flask) -> None:
    api.init_app(app)
    errors.init_app(app)
    security.init_app(app)
