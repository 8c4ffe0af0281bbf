"""Prometheus metrics of the service (prometheus-client), exposed at GET /metrics."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

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
# Gauges: "livesum" adds up the live gunicorn workers when PROMETHEUS_MULTIPROC_DIR is set.
QUEUE_DEPTH = Gauge("plantnet_queue_depth", "Images waiting for the engine", multiprocess_mode="livesum")
INFLIGHT = Gauge("plantnet_inflight_requests", "HTTP requests being answered", multiprocess_mode="livesum")


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    REQUESTS.labels(route, method, str(status)).inc()
    REQUEST_SECONDS.labels(route).observe(seconds)


def observe_batch(size: int, seconds: float) -> None:
    BATCH_SIZE.observe(size)
    INFERENCE_SECONDS.observe(seconds)


def observe_queue_depth(depth: int) -> None:
    QUEUE_DEPTH.set(depth)


def exposition() -> tuple[bytes, str]:
    """Render every metric; with PROMETHEUS_MULTIPROC_DIR set, the sum over all gunicorn workers."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
