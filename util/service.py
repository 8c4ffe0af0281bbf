"""The diagnosis service without HTTP: one model, one engine, one batcher per process.

List in, list out: ``diagnose_many`` takes the photos of one request and answers one
``Diagnosis`` or one ``ImageFailure`` per photo, in order; ``diagnose`` is the same call with
one photo. The photos are decoded in the caller's thread and handed to the batcher together,
so a request of many photos fills batches. The web API, the web page and bulk classification
all come through here, so a photo gets the same answer whichever way it arrives.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from util import leaf, metrics
from util.batcher import Batcher, wait
from util.budget import PixelBudget
from util.config import Settings
from util.domain import UNAVAILABLE, DomainCheck, Verdict
from util.engine import create_engine
from util.labels import Prediction, is_healthy, split_label, top_k
from util.model import find_artifact

log = logging.getLogger(__name__)
EXTENSION = "diagnosis"  # the service's key in app.extensions
BUSY = "The service is busy or restarting; try again in a moment."


UNKNOWN_LABEL = "Unknown"


@dataclass(frozen=True)
class Diagnosis:
    """One photo's answer. When ``in_domain.known`` is False nothing in it reads as a diagnosis:
    the label is "Unknown", species/condition/healthy are None, and ``message`` says why and what to do;
    ``top_k`` still lists the nearest known labels (clients of the original service read it)."""

    label: str
    confidence: float
    top_k: list[Prediction]
    species: str | None
    condition: str | None
    healthy: bool | None
    model: dict[str, str]
    in_domain: Verdict = UNAVAILABLE
    message: str | None = None


@dataclass(frozen=True)
class ImageFailure:
    """Why one photo got no diagnosis: an HTTP status and a message the client can act on."""

    status: int
    message: str


class UploadTooLarge(leaf.ImageTooLarge):
    def __init__(self, limit: int):
        super().__init__(f"The upload is over the {limit:,}-byte limit; send a smaller photo.")


class DiagnosisService:
    """Load the model once, warm it up in the background and diagnose photos through the batcher."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.decode_budget = PixelBudget.from_env()  # bytes of images being decoded at once
        self.artifact = find_artifact(settings.model_dir)
        self.engine = create_engine(self.artifact, settings)
        self.input_size = self.engine.input_size
        self.labels = self.artifact.labels
        self.domain = DomainCheck.for_artifact(self.artifact, self.engine.precision)
        # The verdict's small matrix products run in request threads; numpy's BLAS threads would spin
        # after each one and take the cores from the engine (measured: 31 -> 80 ms a photo). One is enough.
        threadpool_limits(limits=1, user_api="blas")
        self.model_info = {"name": self.artifact.name, "version": self.artifact.version}
        self.ready = threading.Event()
        self.batcher = Batcher(
            self.engine.predict,
            (self.input_size, self.input_size, 3),
            settings.max_batch_size,
            settings.max_wait_ms,
            metrics.observe_batch,
            before_first=self._warm_up,
            max_queue=settings.max_queue,
            observe_depth=metrics.observe_queue_depth,
        )
        log.info(
            "model %s %s (%s, %d labels, %d px) on %s/%s",
            self.artifact.name,
            self.artifact.version,
            self.artifact.kind,
            len(self.labels),
            self.input_size,
            self.engine.name,
            self.engine.precision,
        )

    def init_app(self, app: Any) -> DiagnosisService:
        """Attach to a Flask app as ``app.extensions["diagnosis"]``; close the batcher when the process exits."""
        app.extensions[EXTENSION] = self
        atexit.register(self.close)
        return self

    def _warm_up(self) -> None:
        """Run every batch size once before /health says ok.

        The engine prepares (and keeps) memory per batch shape; doing all of them now makes the
        first requests fast and the worker's memory flat from then on.
        """
        size = self.input_size
        for batch_size in range(1, self.settings.max_batch_size + 1):
            self.engine.predict(np.zeros((batch_size, size, size, 3), np.float32))
        self.ready.set()
        log.info("warm-up done: ready")

    def preprocess(self, data: bytes) -> np.ndarray:
        """Decode and preprocess one photo; raises leaf.ImageError for anything unreadable or too large."""
        if len(data) > self.settings.max_upload_bytes:
            raise UploadTooLarge(self.settings.max_upload_bytes)
        return leaf.load_pixels(
            data,
            self.input_size,
            max_pixels=self.settings.max_pixels,
            budget=self.decode_budget,
            timeout=self.settings.request_timeout_s,
        )

    @property
    def crops(self) -> list[str]:
        """The plants the model knows, for messages: 'Apple', 'Bell pepper', ..."""
        return sorted({split_label(label)[0] for label in self.labels})

    @property
    def unknown_message(self) -> str:
        return (
            "This photo does not look like a leaf of a crop this model knows ("
            + ", ".join(self.crops)
            + "). For a diagnosis, photograph one leaf so that it fills the frame, on a plain background, in daylight."
        )

    def diagnose(self, data: bytes, k: int, strict: bool = False) -> Diagnosis | ImageFailure:
        return self.diagnose_many([data], k, strict)[0]

    def diagnose_many(self, uploads: Sequence[bytes], k: int, strict: bool = False) -> list[Diagnosis | ImageFailure]:
        """Diagnose each photo; one result or one failure per photo, in order.

        With ``strict``, a photo the in-domain verdict rejects fails with 422 instead of an "Unknown" answer.
        Raises batcher.Overloaded (nothing was queued) or batcher.BatcherClosed for the whole call.
        A photo not answered within the request timeout is cancelled and fails with 503.
        """
        deadline = time.monotonic() + self.settings.request_timeout_s
        results: list[Diagnosis | ImageFailure | None] = [None] * len(uploads)
        pixels: dict[int, np.ndarray] = {}
        for index, data in enumerate(uploads):
            try:
                pixels[index] = self.preprocess(data)
            except leaf.ImageError as exc:
                results[index] = ImageFailure(exc.status_code, str(exc))
        queued = self.batcher.submit_many(list(pixels.values())) if pixels else []
        futures = dict(zip(pixels, queued, strict=True))
        if dropped := wait(futures.values(), max(0.0, deadline - time.monotonic())):
            log.warning("%d of %d images not answered in time: dropped", dropped, len(futures))
        for index, future in futures.items():
            answer = self._answer(future, k)
            if strict and isinstance(answer, Diagnosis) and answer.in_domain.known is False:
                answer = ImageFailure(422, self.unknown_message)
            results[index] = answer
        return results  # type: ignore[return-value]

    def _answer(self, future: Future, k: int) -> Diagnosis | ImageFailure:
        if future.cancelled() or not future.done():
            return ImageFailure(503, BUSY)
        row = future.result()  # an engine failure is a bug: it raises
        if not isinstance(row, Mapping):  # an engine that answers probabilities only
            return self.describe(row, k)
        verdict = self.domain.judge(row["logits"][None], row["features"][None])[0]
        return self.describe(row["probabilities"], k, verdict)

    def describe(self, probabilities: np.ndarray, k: int, in_domain: Verdict = UNAVAILABLE) -> Diagnosis:
        ranked = top_k(probabilities, self.labels, k)
        if in_domain.known is False:
            return Diagnosis(
                label=UNKNOWN_LABEL,
                confidence=0.0,
                top_k=ranked,
                species=None,
                condition=None,
                healthy=None,
                model=self.model_info,
                in_domain=in_domain,
                message=self.unknown_message,
            )
        best = ranked[0]
        species, condition = split_label(best.label)
        return Diagnosis(
            label=best.label,
            confidence=best.confidence,
            top_k=ranked,
            species=species,
            condition=condition,
            healthy=is_healthy(best.label),
            model=self.model_info,
            in_domain=in_domain,
        )

    def close(self) -> None:
        """Answer the queued work and stop the inference thread; idempotent."""
        atexit.unregister(self.close)
        self.batcher.close()
