"""Operations: liveness, readiness and metrics, for load balancers, orchestrators and Prometheus."""

from __future__ import annotations

from flask import Response
from flask_restx import Namespace, Resource, fields

from util import metrics
from util.api.diagnosis import diagnosis_service, model_info

ns = Namespace("Operations", path="/", description="Liveness, readiness and metrics")

health_model = ns.model(
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
liveness_model = ns.model("Liveness", {"status": fields.String(required=True, enum=["alive"])})


@ns.route("/health", "/health/ready")
class Ready(Resource):
    @ns.response(200, "The model is loaded and warmed up: send traffic", health_model)
    @ns.response(503, "The model is still loading or warming up: send no traffic yet", health_model)
    def get(self):
        """Report whether the service is ready to diagnose (readiness)."""
        service = diagnosis_service()
        ready = service.ready.is_set()
        body = {
            "status": "ok" if ready else "starting",
            "model": service.model_info,
            "backend": service.engine.name,
            "precision": service.engine.precision,
            "input_size": service.input_size,
            "labels": len(service.labels),
        }
        return body, 200 if ready else 503


@ns.route("/health/live")
class Live(Resource):
    @ns.response(200, "The process answers", liveness_model)
    def get(self):
        """Report that the process answers (liveness), without waiting on the model."""
        return {"status": "alive"}, 200


@ns.route("/metrics")
class Metrics(Resource):
    @ns.doc(False)
    def get(self):
        """Expose Prometheus metrics."""
        body, content_type = metrics.exposition()
        return Response(body, content_type=content_type)
