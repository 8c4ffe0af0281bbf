"""Settings: defaults in code, overrides from ``PLANTNET_*`` environment variables, then the caller's; and the
process's logging, configured once where a process starts (util.server, util.bulk, training's commands)."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

ENV_PREFIX = "PLANTNET_"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
TEST_TIME_VIEWS = (1, 2, 4)  # the photo; and its mirror image; and both upside down (util.engine.VIEWS)


@dataclass(frozen=True)
class Settings:
    """Every knob of the service and its server: ``PLANTNET_<FIELD NAME>`` sets each one."""

    model_dir: Path = PROJECT_ROOT / "plantnet"  # the model directory: model.keras + labels.txt + model.json
    backend: str = "auto"  # auto (fastest available), openvino, tensorflow
    precision: str = "auto"  # OpenVINO: auto (shipped int8 IR, else bf16 if the CPU has it, else f32), bf16, f32, int8
    cache_dir: Path | None = None  # converted OpenVINO models; default <model_dir>/.cache
    inference_threads: int = 0  # 0: let the engine use every core
    test_time_views: int = 1  # 1; 2: also the mirror image; 4: also upside down. Averaged; that many times the work
    max_batch_size: int = 16  # most photos in one inference call
    max_wait_ms: float = 4.0  # longest a photo waits for others to share its batch
    max_queue: int = 64  # images waiting for the engine; beyond it new work is refused with 503
    max_upload_bytes: int = 20 * 1024 * 1024  # one photo
    max_images_per_request: int = 32  # POST /Diagnosis/predictions
    max_request_bytes: int = 64 * 1024 * 1024  # every photo of one POST /Diagnosis/predictions together
    max_photos_per_plant: int = 5  # POST /Diagnosis/plant: photos of one plant combined into one diagnosis
    max_pixels: int = 40_000_000  # larger images get 413, before decoding
    max_jpeg_scans: int = 100  # a JPEG with more scans is refused before decoding (each scan is a pass over it)
    default_top_k: int = 3  # labels listed in top_k when a request does not say
    max_top_k: int = 10  # the most top_k a request may ask for
    request_timeout_s: float = 30.0  # longest a request waits for the model before a 503
    retry_after_s: int = 1  # the Retry-After an overloaded service answers
    api_keys_file: str = ""  # a file of API keys (one a line, or sha256:<hex>); set: the JSON API needs one
    page: bool = True  # off: no /diagnose page (every diagnosis then goes through the keyed JSON API)
    inference_stall_s: float = 20.0  # work waiting and no batch finished for this long: not ready
    log_level: str = "INFO"  # DEBUG, INFO, WARNING, ERROR
    decode_budget_mb: float = 512.0  # images being decoded at once, in megabytes of pixels (util.budget)
    # The server (util/server.py; HOST and PORT keep the names platforms set).
    server_threads: int = 16  # request threads: they read, decode and answer; one inference thread batches
    server_connection_limit: int = 1000  # open connections held at once, slow ones included
    server_channel_timeout_s: int = 30  # how long a connection may stay silent
    server_drain_s: float = 30.0  # on SIGTERM, how long requests in flight get to finish
    admin_port: int = 0  # 0: none; else /health, /health/live, /health/ready and /metrics are served there too
    server_connections_per_address: int = 100  # more from one client address are closed at accept
    server_min_rate: int = 500  # bytes a second a request must average once its grace period is over
    server_grace_s: int = 20  # how long a request may take to arrive before server_min_rate applies
    # Feedback (util/feedback, docs/feedback.md): off unless the operator turns it on.
    feedback: bool = False  # on: keep each diagnosed photo, its answer and the grower's feedback
    database_url: str = "sqlite:///feedback-data/plantnet.sqlite3"  # SQLAlchemy URL; postgresql+psycopg://... too
    photo_store: str = "feedback-data/photos"  # a local folder, or s3://bucket/prefix (boto3's usual credentials)
    feedback_days: int = 180  # kept this long, then purged by the service
    feedback_queue_bytes: int = 64 * 1024 * 1024  # photos waiting for the writer; beyond it they are not kept

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from defaults, then ``PLANTNET_<NAME>`` variables, then ``overrides``."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in fields(cls):
            raw = environ.get(ENV_PREFIX + field.name.upper())
            if raw is not None and raw != "":
                values[field.name] = _parse(field.name, raw, getattr(cls, field.name, None))
        settings = replace(cls(), **values)
        return replace(settings, **overrides).checked()

    def checked(self) -> Settings:
        if self.backend not in ("auto", "openvino", "tensorflow"):
            raise ValueError(f"PLANTNET_BACKEND must be auto, openvino or tensorflow, not {self.backend!r}")
        if self.precision not in ("auto", "bf16", "f32", "int8"):
            raise ValueError(f"PLANTNET_PRECISION must be auto, bf16, f32 or int8, not {self.precision!r}")
        for name in (
            "max_batch_size",
            "max_queue",
            "max_upload_bytes",
            "max_images_per_request",
            "max_request_bytes",
            "max_photos_per_plant",
            "max_pixels",
            "max_jpeg_scans",
            "default_top_k",
            "max_top_k",
            "retry_after_s",
            "feedback_days",
            "feedback_queue_bytes",
            "server_threads",
            "server_connection_limit",
            "server_channel_timeout_s",
            "server_connections_per_address",
            "server_min_rate",
            "server_grace_s",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"PLANTNET_{name.upper()} must be at least 1")
        if self.server_drain_s < 0 or self.admin_port < 0:
            raise ValueError("PLANTNET_SERVER_DRAIN_S and PLANTNET_ADMIN_PORT must not be negative")
        if self.decode_budget_mb <= 0:
            raise ValueError("PLANTNET_DECODE_BUDGET_MB must be positive")
        if self.test_time_views not in TEST_TIME_VIEWS:
            raise ValueError(f"PLANTNET_TEST_TIME_VIEWS must be one of {', '.join(map(str, TEST_TIME_VIEWS))}")
        if self.max_images_per_request > self.max_queue:
            raise ValueError("PLANTNET_MAX_IMAGES_PER_REQUEST must not exceed PLANTNET_MAX_QUEUE")
        if self.max_photos_per_plant > self.max_queue:
            raise ValueError("PLANTNET_MAX_PHOTOS_PER_PLANT must not exceed PLANTNET_MAX_QUEUE")
        if not 1 <= self.default_top_k <= self.max_top_k:
            raise ValueError("PLANTNET_DEFAULT_TOP_K must lie between 1 and PLANTNET_MAX_TOP_K")
        return replace(self, model_dir=Path(self.model_dir))

    @property
    def openvino_cache(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else Path(self.model_dir) / ".cache"


def _parse(name: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            return raw.lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if name in ("model_dir", "cache_dir"):
            return Path(raw)
        return raw
    except ValueError as exc:
        raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid value") from exc


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
STARTUP_FAILED = 3  # a process that cannot start (bad settings, a model that does not load, a port taken) ends so


class OneLineFormatter(logging.Formatter):
    """The log format, with any traceback folded onto the record's one line."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text.replace("\r", "").replace("\n", " | ") if "\n" in text else text


def configure_logging(level: str = "INFO") -> None:
    """One line per record on stderr, for the whole process; an unknown level name means INFO.

    Call it once where a process starts: the app factory configures nothing (tests build many apps).
    """
    level = level.upper() if level.upper() in logging.getLevelNamesMapping() else "INFO"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # waitress warns "Task queue depth is N" on every request once all threads are busy: a
    # normal moment under load, not news.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
