"""PlantNet API: upload leaf photos, get plant-disease diagnoses as JSON.

Serve it with ``python -m util.server`` (the Procfile's and the image's command: waitress, safe against
slow clients), or ``flask --app application run`` to try it. The JSON API lives in util/api, the page in
util/web, the diagnosis in util/service.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask

from util import api, feedback
from util.api import requestlog
from util.config import STARTUP_FAILED, Settings, configure_logging
from util.model_dir import ModelLoadError
from util.service import DiagnosisService
from util.web import web

log = logging.getLogger("plantnet")


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the app: settings from defaults, then PLANTNET_* variables, then ``config["SETTINGS"]``.

    ``config`` may also hold Flask keys (``TESTING``...), applied last.
    """
    config = dict(config or {})
    settings = Settings.from_env(**config.pop("SETTINGS", {}))
    app = Flask(__name__)
    app.config.update(
        SETTINGS=settings,
        MAX_CONTENT_LENGTH=settings.max_upload_bytes,  # /Diagnosis/predictions raises it for its own requests
        ERROR_404_HELP=False,
        RESTX_MASK_SWAGGER=False,
        PROPAGATE_EXCEPTIONS=False,
    )
    app.config.update(config)
    DiagnosisService(settings).init_app(app)
    feedback.init_app(app, settings)
    api.init_app(app)
    app.register_blueprint(web)
    requestlog.init_app(app)
    return app


_default_app: Flask | None = None


def __getattr__(name: str) -> Flask:
    """Build ``app`` / ``application`` on first use, so importing create_app loads no model.

    util.server and ``flask --app application run`` both look the name up.
    """
    global _default_app
    if name not in ("app", "application"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _default_app is None:
        try:
            configure_logging(Settings.from_env().log_level)
            _default_app = create_app()
        except (ModelLoadError, ValueError) as exc:
            log.error("cannot start: %s", exc)
            raise SystemExit(STARTUP_FAILED) from None
    return _default_app
