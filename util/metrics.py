"""Prometheus metrics of the service (prometheus-client), exposed at GET /metrics."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24)

REQUESTS = Counter("plantnet_http_requests_total", "HTTP requests answered", ["route", "method", "status"])
REQUEST_SECONDS = Histogram(
    "plantnet_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["route"],
    buckets=LATENCY_BUCKETS,
)
INFERENCE_SECONDS = Histogram(
    "plantnet_inference_seconds", "Time of one engine call on one batch", buckets=LATENCY_BUCKETS
)
BATCH_SIZE = Histogram("plantnet_batch_size", "Images per engine call", buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64))
# One process serves (util.server): its registry is the whole story, no multiprocess collection.
QUEUE_DEPTH = Gauge("plantnet_queue_depth", "Images waiting for the engine")
INFLIGHT = Gauge("plantnet_inflight_requests", "HTTP requests being answered")
# Feedback storage (util/feedback): a failure never fails a diagnosis, so it is counted here instead.
FEEDBACK_KEPT = Counter("plantnet_feedback_kept_total", "Diagnosed photos kept with their answer")
FEEDBACK_DROPPED = Counter(
    "plantnet_feedback_dropped_total", "Diagnosed photos not kept: the writer's queue was full (bytes waiting)"
)
FEEDBACK_FAILURES = Counter(
    "plantnet_feedback_failures_total", "Feedback storage operations that failed", ["operation"]
)


# Label values come from fixed sets: waitress passes any token as the method, and every new label
# value is a new time series kept for the life of the process (300 made-up methods: /metrics 6 -> 966 KB).
METHODS = frozenset({"GET", "POST", "HEAD"})
OTHER_METHOD = "OTHER"


def method_label(method: str) -> str:
    return method if method in METHODS else OTHER_METHOD


def status_label(status: int) -> str:
    return str(status) if 100 <= status <= 599 else "other"


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    """Count one answer; ``route`` must be the matched rule or "unmatched" (never the raw path)."""
    REQUESTS.labels(route, method_label(method), status_label(status)).inc()
    REQUEST_SECONDS.labels(route).observe(seconds)


def observe_batch(size: int, seconds: float) -> None:
    BATCH_SIZE.observe(size)
    INFERENCE_SECONDS.observe(seconds)


def observe_queue_depth(depth: int) -> None:
    QUEUE_DEPTH.set(depth)


def exposition() -> tuple[bytes, str]:
    """Render every metric of this process."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
