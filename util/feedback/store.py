"""FeedbackStore: keep diagnosed photos and growers' feedback without slowing or failing a diagnosis.

One writer thread per process owns every write, in order: a diagnosis is handed over (photo bytes
and answer) and the request goes on at once; the writer re-encodes the photo, stores it, then
inserts the row. A diagnosis whose photo does not fit in the bounded queue, or whose write fails,
is answered all the same, without an id; the failure is logged and counted in /metrics.
Feedback, reads and deletions go through the same thread (so they see every diagnosis handed over
before them) and their caller waits for the commit: feedback is acknowledged only once it is on disk.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import re
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from util import metrics
from util.config import Settings
from util.feedback.database import Database, Feedback, StoredDiagnosis
from util.feedback.photos import PhotoStore, open_photo_store, reencode

log = logging.getLogger(__name__)
T = TypeVar("T")

TOKEN_BYTES = 16  # secrets.token_urlsafe(16): 22 characters, 128 random bits
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
PURGE_EVERY_S = 3600.0  # how often the writer drops what is older than PLANTNET_FEEDBACK_DAYS
PURGE_BATCH = 500
PHOTO_SUFFIX = ".jpg"


KEEP_BATCH = 64  # diagnoses written in one transaction at most
STOP = object()  # queued by close(): the writer ends after what is before it


@dataclass(frozen=True)
class Keep:
    """A diagnosed photo and its answer, handed to the writer."""

    diagnosis_id: str
    created: datetime
    photo: bytes
    answer: dict[str, Any]

    def row(self, photo_key: str) -> StoredDiagnosis:
        model = self.answer.get("model") or {}
        return StoredDiagnosis(
            id=self.diagnosis_id,
            created_at=self.created,
            model_name=str(model.get("name", "")),
            model_version=str(model.get("version", "")),
            label=str(self.answer.get("label", "")),
            answer=self.answer,
            photo=photo_key,
            feedback=None,
        )


def lower_this_threads_priority(niceness: int = 10) -> None:
    """Let request and inference threads go first when the CPU is short: re-encoding photos can wait.

    Linux schedules each thread on its own, so this thread's nice value is its own; elsewhere (or
    without permission) it stays as it is.
    """
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)


class StorageUnavailable(Exception):
    """The database or the photo store failed, or did not answer in time."""


def now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def is_id(value: object) -> bool:
    """Whether ``value`` is spelled like an id this package gives (URL-safe base64); others are never kept."""
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None


def as_json(answer: Any) -> dict[str, Any]:
    """A diagnosis dataclass as plain JSON values (numpy scalars from the engine become Python's)."""
    return json.loads(json.dumps(asdict(answer), default=lambda value: value.item()))


class FeedbackStore:
    """The process's feedback storage: a database, a photo store and the one thread that writes to them."""

    def __init__(
        self,
        database: Database,
        photos: PhotoStore,
        days: int = Settings.feedback_days,
        queue_bytes: int = Settings.feedback_queue_bytes,
        max_pixels: int = Settings.max_pixels,
        timeout_s: float = Settings.request_timeout_s,
        clock: Callable[[], datetime] = now,
    ):
        self.database = database
        self.photos = photos
        self.days = days
        self.queue_bytes = queue_bytes
        self.max_pixels = max_pixels
        self.timeout_s = timeout_s
        self.clock = clock
        self._jobs: queue.Queue[Keep | Callable[[], None] | object] = queue.Queue()
        self._pending_bytes = 0
        self._pending_lock = threading.Lock()
        self._migrated = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="feedback-writer", daemon=True)
        self._thread.start()
        self.call(self._ensure_schema, wait=False)  # migrate at start, off the start-up path

    @classmethod
    def from_settings(cls, settings: Settings) -> FeedbackStore:
        return cls(
            Database(settings.database_url),
            open_photo_store(settings.photo_store),
            days=settings.feedback_days,
            queue_bytes=settings.feedback_queue_bytes,
            max_pixels=settings.max_pixels,
            timeout_s=settings.request_timeout_s,
        )

    def __repr__(self) -> str:
        return f"FeedbackStore({self.database!r}, {self.photos!r}, days={self.days})"

    # --- the request side: hand over, or wait for the writer -------------------------------------

    def keep(self, photo: bytes, answer: Any) -> str | None:
        """Hand a diagnosed photo and its answer (a dataclass) to the writer; its id, or None if not kept."""
        with self._pending_lock:
            if self._closed or self._pending_bytes + len(photo) > self.queue_bytes:
                metrics.FEEDBACK_DROPPED.inc()
                return None
            self._pending_bytes += len(photo)
        diagnosis_id = new_id()
        created = self.clock()
        self._jobs.put(Keep(diagnosis_id, created, photo, {**as_json(answer), "id": diagnosis_id}))
        return diagnosis_id

    def give_feedback(self, diagnosis_id: str, correct: bool, label: str | None, note: str | None) -> Feedback | None:
        """Record the grower's feedback; returns it once committed. None: no such diagnosis (or expired)."""
        feedback = Feedback(correct, label, note, self.clock())
        return feedback if self.call(lambda: self._set_feedback(diagnosis_id, feedback)) else None

    def get(self, diagnosis_id: str) -> StoredDiagnosis | None:
        """The kept diagnosis and its feedback; None if there is none (never kept, deleted or expired)."""
        return self.call(lambda: self._get(diagnosis_id))

    def delete(self, diagnosis_id: str) -> bool:
        """Remove a diagnosis and its photo (the photo first: a row is never gone while its photo stays)."""
        return self.call(lambda: self._delete(diagnosis_id))

    def purge(self) -> int:
        """Remove everything kept longer than ``days``; how many diagnoses went."""
        return self.call(self._purge)

    def flush(self) -> None:
        """Wait until everything handed over so far is written (or has failed)."""
        self.call(lambda: None)

    def close(self) -> None:
        """Write what is queued, then stop the writer; idempotent."""
        with self._pending_lock:
            if self._closed:
                return
            self._closed = True
        self._jobs.put(STOP)
        self._thread.join(timeout=max(self.timeout_s, 5.0))
        self.database.close()

    def call(self, work: Callable[[], T], wait: bool = True) -> T:
        """Run ``work`` on the writer thread; wait for its result unless ``wait`` is False."""
        future: Future = Future()

        def job() -> None:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(work())
                except Exception as exc:  # noqa: BLE001 (handed to the caller, who counts and logs it)
                    future.set_exception(exc)

        if self._closed:
            raise StorageUnavailable("the feedback store is closed")
        self._jobs.put(job)
        if not wait:
            return None  # type: ignore[return-value]
        try:
            return future.result(self.timeout_s)
        except TimeoutError:
            future.cancel()
            metrics.FEEDBACK_FAILURES.labels("timeout").inc()
            raise StorageUnavailable("the feedback store did not answer in time") from None
        except StorageUnavailable:
            raise
        except Exception as exc:
            metrics.FEEDBACK_FAILURES.labels("request").inc()
            log.exception("feedback storage failed")
            raise StorageUnavailable(str(exc)) from exc

    def since(self) -> datetime:
        """The oldest moment still kept."""
        return self.clock() - timedelta(days=self.days)

    # --- the writer thread -------------------------------------------------------------------------

    def _run(self) -> None:
        lower_this_threads_priority()
        next_purge = time.monotonic()
        while True:
            if time.monotonic() >= next_purge:  # checked on every job too: a busy queue must not starve it
                next_purge = time.monotonic() + PURGE_EVERY_S
                self._purge_quietly()
            try:
                job = self._jobs.get(timeout=max(0.0, next_purge - time.monotonic()))
            except queue.Empty:
                continue
            if isinstance(job, Keep):
                job = self._write_diagnoses(job)
                if job is None:
                    continue
            if job is STOP:
                return
            try:
                job()
            except Exception:  # a job's own failure is counted where it happens; the writer goes on
                log.exception("feedback writer job failed")

    def _write_diagnoses(self, first: Keep) -> Callable[[], None] | object | None:
        """Write ``first`` and the diagnoses queued right behind it in one transaction (one commit, one
        fsync for many under load); return the job queued after them that is not a diagnosis, if any."""
        batch, following = [first], None
        while len(batch) < KEEP_BATCH and following is None:
            try:
                queued = self._jobs.get_nowait()
            except queue.Empty:
                break
            if isinstance(queued, Keep):
                batch.append(queued)
            else:
                following = queued
        try:
            self._keep(batch)
        finally:
            with self._pending_lock:
                self._pending_bytes -= sum(len(keep.photo) for keep in batch)
        return following

    def _ensure_schema(self) -> None:
        if not self._migrated:
            try:
                self.database.migrate()
            except Exception:
                metrics.FEEDBACK_FAILURES.labels("migrate").inc()
                log.exception("cannot migrate the feedback database %r", self.database)
                raise
            self._migrated = True

    def _keep(self, batch: list[Keep]) -> None:
        """Re-encode and store each photo, then insert their rows together; a failure keeps nothing of it."""
        rows = []
        for keep in batch:
            key = keep.diagnosis_id + PHOTO_SUFFIX
            try:
                self.photos.put(key, reencode(keep.photo, self.max_pixels))
            except Exception:
                metrics.FEEDBACK_FAILURES.labels("keep").inc()
                log.exception("could not keep the photo of diagnosis %s", keep.diagnosis_id)
                continue
            rows.append(keep.row(key))
        if not rows:
            return
        try:
            self._ensure_schema()
            self.database.insert_many(rows)
        except Exception:
            metrics.FEEDBACK_FAILURES.labels("keep").inc(len(rows))
            log.exception("could not keep %d diagnoses", len(rows))
            for row in rows:
                self.photos.delete(row.photo)  # no row, no photo: nothing is kept that cannot be found and deleted
            return
        metrics.FEEDBACK_KEPT.inc(len(rows))

    def _set_feedback(self, diagnosis_id: str, feedback: Feedback) -> bool:
        self._ensure_schema()
        return self.database.set_feedback(diagnosis_id, feedback, self.since())

    def _get(self, diagnosis_id: str) -> StoredDiagnosis | None:
        self._ensure_schema()
        return self.database.get(diagnosis_id, self.since())

    def _delete(self, diagnosis_id: str) -> bool:
        self._ensure_schema()
        kept = self.database.get(diagnosis_id)
        if kept is None:
            return False
        if kept.photo:
            self.photos.delete(kept.photo)
        self.database.delete(diagnosis_id)
        return True

    def _purge(self) -> int:
        self._ensure_schema()
        removed = 0
        while batch := self.database.older_than(self.since(), PURGE_BATCH):
            for diagnosis_id, photo in batch:
                if photo:
                    self.photos.delete(photo)
                self.database.delete(diagnosis_id)
            removed += len(batch)
        if removed:
            log.info("purged %d diagnoses older than %d days", removed, self.days)
        return removed

    def _purge_quietly(self) -> None:
        try:
            self._purge()
        except Exception:
            metrics.FEEDBACK_FAILURES.labels("purge").inc()
            log.exception("could not purge old feedback")
