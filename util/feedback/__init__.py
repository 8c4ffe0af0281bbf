"""Growers confirm or correct a diagnosis; the deployment keeps the photo to train on (off by default).

With ``PLANTNET_FEEDBACK=on`` each diagnosed photo is kept (re-encoded without metadata, at most
1024 px: photos.py) with its answer in a database (SQLite file or PostgreSQL: database.py, schema
migrated with Alembic: migrations/), written by one background thread (store.py) and purged after
``PLANTNET_FEEDBACK_DAYS``. util/api/feedback.py is the HTTP side, training/feedback.py the export.
No Flask here: ``init_app`` only stores the store in ``app.extensions``.
"""

from __future__ import annotations

import atexit
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, TypeVar

from util.config import Settings
from util.feedback.database import Database, Feedback, StoredDiagnosis
from util.feedback.photos import LocalPhotoStore, PhotoStore, S3PhotoStore, open_photo_store, reencode
from util.feedback.store import FeedbackStore, StorageUnavailable, is_id

EXTENSION = "feedback"  # the store's key in app.extensions; absent when storage is off
OTHER_LABEL = "other"  # feedback's label when the right answer is none of the model's labels
log = logging.getLogger(__name__)
R = TypeVar("R")
P = TypeVar("P")

__all__ = [
    "EXTENSION",
    "OTHER_LABEL",
    "Database",
    "Feedback",
    "FeedbackStore",
    "LocalPhotoStore",
    "PhotoStore",
    "S3PhotoStore",
    "StorageUnavailable",
    "StoredDiagnosis",
    "feedback_store",
    "init_app",
    "is_id",
    "open_photo_store",
    "photo_bytes",
    "reencode",
    "remember",
    "remember_plant",
]


def init_app(app: Any, settings: Settings) -> FeedbackStore | None:
    """With PLANTNET_FEEDBACK on, start the store as ``app.extensions["feedback"]``; stop it at exit."""
    if not settings.feedback:
        return None
    store = FeedbackStore.from_settings(settings)
    app.extensions[EXTENSION] = store
    atexit.register(store.close)
    log.info("feedback storage on: %r", store)
    return store


def feedback_store(app: Any) -> FeedbackStore | None:
    return app.extensions.get(EXTENSION)


def photo_bytes(upload: Any) -> bytes:
    """The bytes of an upload: bytes, or a file (or werkzeug FileStorage) the diagnosis has already read."""
    if isinstance(upload, bytes | bytearray | memoryview):
        return bytes(upload)
    stream = getattr(upload, "stream", upload)
    stream.seek(0)
    return stream.read()


def remember(app: Any, uploads: Sequence[Any], results: Sequence[R]) -> list[R]:
    """Give each diagnosis an id and hand its photo to the store; the results unchanged when storage is off.

    A result without an ``id`` field (a failure) is passed through; so is a diagnosis the store
    could not take (its id stays None).
    """
    store = feedback_store(app)
    if store is None:
        return list(results)
    kept = []
    for photo, result in zip(uploads, results, strict=True):
        if hasattr(result, "id") and getattr(result, "label", None) is not None:
            result = replace(result, id=store.keep(photo_bytes(photo), result))
        kept.append(result)
    return kept


def remember_plant(app: Any, uploads: Sequence[Any], plant: P) -> P:
    """``remember`` for one plant: each photo's own diagnosis, and the combined one kept with its first photo."""
    store = feedback_store(app)
    if store is None:
        return plant
    photos = remember(app, uploads, plant.photos)
    combined = plant.diagnosis
    first = next((i for i, result in enumerate(photos) if getattr(result, "id", None)), None)
    if first is not None and hasattr(combined, "id"):
        combined = replace(combined, id=store.keep(photo_bytes(uploads[first]), combined))
    return replace(plant, diagnosis=combined, photos=photos)
