"""gunicorn settings for PlantNet API, sized for a small CPU box (measured: see README, Benchmarks).

The Procfile serves with ``python -m util.server`` (waitress), which is safe against slow
clients without a proxy; gunicorn's gthread worker gives each slow client a thread, so run
``gunicorn application:app`` only behind a buffering proxy (nginx).

One worker holds one model and one dynamic batcher; its threads decode uploads in parallel
while a single inference thread batches them. More workers would each load their own
model and split the batches. preload_app stays off: TensorFlow and OpenVINO are not
fork-safe, so every worker loads its model after the fork.
"""

import os

# Platforms that route traffic to the app (Heroku and the like) set PORT: listen on every interface
# there; on a workstation stay on loopback unless HOST says otherwise.
_default_host = "0.0.0.0" if "PORT" in os.environ else "127.0.0.1"
bind = f"{os.environ.get('HOST', _default_host)}:{os.environ.get('PORT', '5000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "16"))
preload_app = False
timeout = 120  # the first start converts the model to OpenVINO before the worker answers
graceful_timeout = 30  # SIGTERM: in-flight requests get this long to finish
keepalive = 5
max_requests = 0
accesslog = None  # the app writes one structured line per request
loglevel = os.environ.get("PLANTNET_LOG_LEVEL", "info").lower()


def on_starting(server):
    """Configure logging and convert the model to OpenVINO once in the master, before any worker forks."""
    from util.config import Settings, configure_logging
    from util.engine import openvino_ir
    from util.model import ModelLoadError, find_artifact

    configure_logging(loglevel)  # the app's own loggers (request lines, start-up); workers inherit it
    settings = Settings.from_env()
    if settings.backend == "tensorflow":
        return
    try:
        import openvino  # noqa: F401
    except ImportError:
        return
    try:
        openvino_ir(find_artifact(settings.model_dir), settings.openvino_cache)
    except ModelLoadError as exc:
        server.log.error("cannot start: %s", exc)
        raise SystemExit(3) from None


def post_fork(server, worker):
    """Few malloc arenas, big buffers by mmap: memory comes back after bursts of big photos (util.budget)."""
    from util.budget import tune_malloc

    tune_malloc()
