"""Settings: defaults in code, overrides from ``PLANTNET_*`` environment variables, then the caller's."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

ENV_PREFIX = "PLANTNET_"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
TEST_TIME_VIEWS = (1, 2, 4)  # the photo; and its mirror image; and both upside down (util.engine.VIEWS)


@dataclass(frozen=True)
class Settings:
    """Every knob of the service; README's configuration table lists the same names."""

    model_dir: Path = PROJECT_ROOT / "plantnet"
    backend: str = "auto"  # auto (fastest available), openvino, tensorflow
    precision: str = "auto"  # OpenVINO: auto (shipped int8 IR, else bf16 if the CPU has it, else f32), bf16, f32, int8
    cache_dir: Path | None = None  # converted OpenVINO models; default <model_dir>/.cache
    inference_threads: int = 0  # 0: let the engine use every core
    test_time_views: int = 1  # 1; 2: also the mirror image; 4: also upside down. Averaged; that many times the work
    max_batch_size: int = 16
    max_wait_ms: float = 4.0
    max_queue: int = 64  # images waiting for the engine; beyond it new work is refused with 503
    max_upload_bytes: int = 20 * 1024 * 1024  # one photo
    max_images_per_request: int = 32  # POST /Diagnosis/predictions
    max_request_bytes: int = 64 * 1024 * 1024  # every photo of one POST /Diagnosis/predictions together
    max_pixels: int = 40_000_000
    default_top_k: int = 3
    max_top_k: int = 10
    request_timeout_s: float = 30.0
    retry_after_s: int = 1  # the Retry-After an overloaded service answers
    log_level: str = "INFO"

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
            "max_pixels",
            "default_top_k",
            "max_top_k",
            "retry_after_s",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"PLANTNET_{name.upper()} must be at least 1")
        if self.test_time_views not in TEST_TIME_VIEWS:
            raise ValueError(f"PLANTNET_TEST_TIME_VIEWS must be one of {', '.join(map(str, TEST_TIME_VIEWS))}")
        if self.max_images_per_request > self.max_queue:
            raise ValueError("PLANTNET_MAX_IMAGES_PER_REQUEST must not exceed PLANTNET_MAX_QUEUE")
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


def configure_logging(level: str = "INFO") -> None:
    """Log to stderr with timestamps; call once where the process starts (gunicorn.conf.py, entry points)."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
