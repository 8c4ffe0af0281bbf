"""Operations: liveness, readiness and metrics, for load balancers, orchestrators and Prometheus."""

from __future__ import annotations

from flask import Response
from flask_restx import Namespace, Resource, fields

from util import metrics
from util.api.diagnosis import model_info
from util.service import diagnosis_service

ns = Namespace("Operations", path="/", description="Liveness, readiness and metrics")

health_model = ns.model(
    "Health",
    {
        "status": fields.String(
            required=True,
            enum=["ok", "starting", "stalled", "failed"],
            description="stalled: work waits and the engine made no progress; failed: the engine stopped",
        ),
        "model": fields.Nested(model_info),
        "backend": fields.String(example="openvino"),
        "precision": fields.String(example="bf16"),
        "input_size": fields.Integer(example=128),
        "labels": fields.Integer(example=34),
    },
)
liveness_model = ns.model("Liveness", {"status": fields.String(required=True, enum=["alive", "dead"])})


@ns.route("/health", "/health/ready")
class Ready(Resource):
    @ns.response(200, "The model is loaded and warmed up: send traffic", health_model)
    @ns.response(503, "Warming up, stalled or its engine stopped: send no traffic", health_model)
    def get(self):
        """Report whether the service is ready to diagnose (readiness)."""
        service = diagnosis_service()
        status = service.readiness()
        ready = status == "ok"
        body = {
            "status": status,
            "model": service.model_info,
            "backend": service.engine.name,
            "precision": service.engine.precision,
            "input_size": service.input_size,
            "labels": len(service.labels),
        }
        return body, 200 if ready else 503


@ns.route("/health/live")
class Live(Resource):
    @ns.response(200, "The process answers and its inference thread runs", liveness_model)
    @ns.response(503, "The inference thread has stopped: restart the process", liveness_model)
    def get(self):
        """Report that the process answers (liveness), without waiting on the model."""
        if not diagnosis_service().alive:
            return {"status": "dead"}, 503
        return {"status": "alive"}, 200


@ns.route("/metrics")
class Metrics(Resource):
    @ns.doc(False)
    def get(self):
        """Expose Prometheus metrics."""
        body, content_type = metrics.exposition()
        return Response(body, content_type=content_type)
