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
from dataclasses import dataclass, replace
from typing import Any, BinaryIO

import numpy as np
from threadpoolctl import threadpool_limits

from util import leaf, messages, metrics
from util.batcher import Batcher, wait
from util.budget import PixelBudget
from util.config import Settings
from util.domain import UNAVAILABLE, DomainCheck, Verdict
from util.engine import create_engine
from util.labels import (
    Prediction,
    crops,
    is_healthy,
    labels_by_crop,
    resolve_crop,
    restrict_to_crop,
    split_label,
    top_k,
)
from util.model_dir import domain_calibration, find_artifact, read_evaluation
from util.plant import combine

log = logging.getLogger(__name__)
EXTENSION = "diagnosis"  # the service's key in app.extensions
VERDICT = "in_domain"  # the batcher's rows carry the engine's outputs and the verdict under this name


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
    crop: str | None = None  # the crop hint the diagnosis was restricted to; None: every label
    id: str | None = None  # with PLANTNET_FEEDBACK on: the kept diagnosis' id (util/feedback)


@dataclass(frozen=True)
class Judged:
    """What the engine and the verdict said of one photo, before it is put into words."""

    probabilities: np.ndarray
    in_domain: Verdict


@dataclass(frozen=True)
class PlantDiagnosis:
    """Several photos of one plant: one combined answer, and each photo's own result in order.

    ``diagnosis`` is an ImageFailure when the whole request fails (strict and no photo accepted;
    no photo readable; the service too busy to answer them all)."""

    diagnosis: Diagnosis | ImageFailure
    photos: list[Diagnosis | ImageFailure]


@dataclass(frozen=True)
class ImageFailure:
    """Why one photo got no diagnosis: an HTTP status and a message the client can act on."""

    status: int
    message: str


class UploadTooLarge(leaf.ImageTooLarge):
    def __init__(self, limit: int):
        super().__init__(messages.upload_too_large(limit))


Upload = bytes | BinaryIO  # a photo's bytes, or a file holding them (read when its turn to decode comes)


def read_upload(upload: Upload, limit: int) -> bytes:
    """The photo's bytes, at most ``limit`` of them (UploadTooLarge past it)."""
    data = bytes(upload) if isinstance(upload, bytes | bytearray | memoryview) else upload.read(limit + 1)
    if len(data) > limit:
        raise UploadTooLarge(limit)
    return data


class DiagnosisService:
    """Load the model once, warm it up in the background and diagnose photos through the batcher."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.decode_budget = PixelBudget.for_settings(settings)  # bytes of images being decoded at once
        self.artifact = find_artifact(settings.model_dir)
        self.engine = create_engine(self.artifact, settings)
        self.input_size = self.engine.input_size
        self.labels = self.artifact.labels
        self.domain = DomainCheck.for_artifact(self.artifact, self.engine.precision)
        # The verdict's matrix products run between engine calls; numpy's BLAS threads would spin after
        # each one and take the cores from the engine (measured: 31 -> 80 ms a photo). One is enough.
        threadpool_limits(limits=1, user_api="blas")
        self.model_info = {"name": self.artifact.name, "version": self.artifact.version}
        self.ready = threading.Event()
        self.batcher = Batcher(
            self._infer,
            (self.input_size, self.input_size, 3),
            settings.max_batch_size,
            settings.max_wait_ms,
            metrics.observe_batch,
            before_first=self._warm_up,
            max_queue=settings.max_queue,
            observe_depth=metrics.observe_queue_depth,
            wait_only_for_announced=True,  # a lone photo is not kept waiting for company (measured: docs/benchmarks.md)
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

    def readiness(self) -> str:
        """ok, starting (warming up), failed (the inference thread stopped) or stalled (work waits, no progress)."""
        if not self.batcher.alive:
            return "failed"
        if not self.ready.is_set():
            return "starting"
        if self.batcher.stalled_for() > self.settings.inference_stall_s:
            return "stalled"
        return "ok"

    @property
    def alive(self) -> bool:
        """False once the inference thread has stopped for good: the process should be restarted."""
        return self.batcher.alive

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
            self._infer(np.zeros((batch_size, size, size, 3), np.float32))
        self.ready.set()
        log.info("warm-up done: ready")

    def preprocess(self, upload: Upload, deadline: float | None = None) -> np.ndarray:
        """Decode and preprocess one photo; raises leaf.ImageError for anything unreadable or too large.

        ``upload`` is bytes or a file (a multipart part spooled to disk): a file is read only now, so
        a request of many photos holds one photo's bytes at a time. Past ``deadline`` it raises
        leaf.DecodeTimeout (503).
        """
        if deadline is not None and time.monotonic() > deadline:
            raise leaf.DecodeTimeout()
        data = read_upload(upload, self.settings.max_upload_bytes)
        return leaf.load_pixels(
            data,
            self.input_size,
            max_pixels=self.settings.max_pixels,
            budget=self.decode_budget,
            timeout=self.settings.request_timeout_s,
            deadline=deadline,
            max_jpeg_scans=self.settings.max_jpeg_scans,
        )

    @property
    def crops(self) -> list[str]:
        """The plants the model knows, for messages: 'Apple', 'Bell pepper', ..."""
        return crops(self.labels)

    def resolve_crop(self, name: str | None) -> str | None:
        """The model's spelling of a crop hint (None: no hint); raises labels.UnknownCrop."""
        if name is None or not name.strip():
            return None
        return resolve_crop(name, self.labels)

    @property
    def unknown_message(self) -> str:
        return messages.not_a_leaf(self.crops)

    def diagnose(self, data: bytes, k: int, strict: bool = False, crop: str | None = None) -> Diagnosis | ImageFailure:
        return self.diagnose_many([data], k, strict, crop)[0]

    def diagnose_many(
        self, uploads: Sequence[bytes], k: int, strict: bool = False, crop: str | None = None
    ) -> list[Diagnosis | ImageFailure]:
        """Diagnose each photo; one result or one failure per photo, in order.

        With ``strict``, a photo the in-domain verdict rejects fails with 422 instead of an "Unknown" answer.
        With ``crop`` (a name from ``resolve_crop``), each diagnosis is made among that crop's labels only.
        Raises batcher.Overloaded (nothing was queued) or batcher.BatcherClosed for the whole call.
        A photo not answered within the request timeout is cancelled and fails with 503.
        """
        return [self._worded(judged, k, strict, crop) for judged in self._hinted(self.judge_many(uploads), crop)]

    def diagnose_plant(
        self, uploads: Sequence[bytes], k: int, strict: bool = False, crop: str | None = None
    ) -> PlantDiagnosis:
        """Diagnose several photos of one plant: one answer combined from the photos the verdict accepts.

        Each photo also gets its own result, as ``diagnose_many`` answers it. No accepted photo: the
        answer is "Unknown" (422 with ``strict``); a photo the service could not answer in time makes
        the whole answer 503 (combining the others would hide it); no readable photo at all: the
        photos' own status (400 when they differ), naming each photo's problem.
        """
        judged = self._hinted(self.judge_many(uploads), crop)
        photos = [self._worded(one, k, strict, crop) for one in judged]
        readable = [one for one in judged if isinstance(one, Judged)]
        failures = [one for one in judged if isinstance(one, ImageFailure)]
        if any(failure.status == 503 for failure in failures):
            return PlantDiagnosis(ImageFailure(503, messages.BUSY), photos)
        if not readable:
            statuses = {failure.status for failure in failures}
            details = "; ".join(f"photo {i + 1}: {failure.message.rstrip('.')}" for i, failure in enumerate(failures))
            status = statuses.pop() if len(statuses) == 1 else 400
            return PlantDiagnosis(ImageFailure(status, messages.NO_PHOTO_READ.format(details=details)), photos)
        accepted = [one for one in readable if one.in_domain.known is not False]
        if not accepted:
            if strict:
                return PlantDiagnosis(ImageFailure(422, self.plant_unknown_message), photos)
            nearest = combine([one.probabilities for one in readable])
            rejected = max(readable, key=lambda one: one.in_domain.score or 0.0).in_domain
            unknown = self.describe(nearest, k, rejected, crop)
            return PlantDiagnosis(replace(unknown, message=self.plant_unknown_message), photos)
        combined = combine([one.probabilities for one in accepted])
        return PlantDiagnosis(self.describe(combined, k, combined_verdict(accepted), crop), photos)

    @property
    def plant_unknown_message(self) -> str:
        return messages.ONE_PLANT_UNKNOWN.format(crops=", ".join(self.crops))

    def _worded(
        self, judged: Judged | ImageFailure, k: int, strict: bool, crop: str | None
    ) -> Diagnosis | ImageFailure:
        if isinstance(judged, ImageFailure):
            return judged
        if strict and judged.in_domain.known is False:
            return ImageFailure(422, self.unknown_message)
        return self.describe(judged.probabilities, k, judged.in_domain, crop)

    def _hinted(self, judged: list[Judged | ImageFailure], crop: str | None) -> list[Judged | ImageFailure]:
        """With a crop hint, each verdict judged by the hint's operating point (util.domain.HintPoint)."""
        if crop is None or self.domain.hint_point is None:
            return judged
        return [
            replace(one, in_domain=self.domain.with_hint(one.in_domain, one.probabilities, self._within(one, crop)))
            if isinstance(one, Judged)
            else one
            for one in judged
        ]

    def _within(self, judged: Judged, crop: str) -> np.ndarray:
        return restrict_to_crop(judged.probabilities, self.labels, crop)[0]

    def judge_many(self, uploads: Sequence[bytes]) -> list[Judged | ImageFailure]:
        """Each photo's probabilities and in-domain verdict, or why it has none; in order.

        Raises batcher.Overloaded or batcher.BatcherClosed for the whole call (see diagnose_many).
        """
        deadline = time.monotonic() + self.settings.request_timeout_s
        results: list[Judged | ImageFailure | None] = [None] * len(uploads)
        pixels: dict[int, np.ndarray] = {}
        with self.batcher.announced(len(uploads)):  # a batch being gathered waits for these
            for index, data in enumerate(uploads):
                try:
                    pixels[index] = self.preprocess(data, deadline)
                except leaf.ImageError as exc:
                    results[index] = ImageFailure(exc.status_code, str(exc))
            queued = self.batcher.submit_many(list(pixels.values())) if pixels else []
        futures = dict(zip(pixels, queued, strict=True))
        if dropped := wait(futures.values(), max(0.0, deadline - time.monotonic())):
            log.warning("%d of %d images not answered in time: dropped", dropped, len(futures))
        for index, future in futures.items():
            results[index] = self._judge(future)
        return results  # type: ignore[return-value]

    def _judge(self, future: Future) -> Judged | ImageFailure:
        if future.cancelled() or not future.done():
            return ImageFailure(503, messages.BUSY)
        row = future.result()  # an engine failure is a bug: it raises
        if not isinstance(row, Mapping):  # an engine that answers probabilities only
            return Judged(row, UNAVAILABLE)
        return Judged(row["probabilities"], row[VERDICT])

    def _infer(self, batch: np.ndarray) -> Any:
        """The engine's outputs for a batch, with each row's in-domain verdict under ``VERDICT``.

        Judged here, for the whole batch at once: the verdict reads a 2048 x 2048 matrix, once per
        batch instead of once per photo in each request thread (measured: docs/benchmarks.md).
        """
        outputs = self.engine.predict(batch)
        if not isinstance(outputs, Mapping):
            return outputs
        return {**outputs, VERDICT: self.domain.judge(outputs["logits"], outputs["features"])}

    def describe(
        self, probabilities: np.ndarray, k: int, in_domain: Verdict = UNAVAILABLE, crop: str | None = None
    ) -> Diagnosis:
        """Put one probability vector into words; with ``crop``, among that crop's labels only."""
        labels: Sequence[str] = self.labels
        if crop is not None:
            probabilities, labels = restrict_to_crop(probabilities, self.labels, crop)
        ranked = top_k(probabilities, labels, k)
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
                crop=crop,
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
            crop=crop,
        )

    def description(self) -> dict[str, Any]:
        """What the model is and what was measured on it: model.json and evaluation.json, as they are."""
        metadata = self.artifact.metadata
        calibration = metadata.get(domain_calibration(self.engine.precision)[1]) or metadata.get("in_domain") or {}
        evaluation = read_evaluation(self.artifact.directory)
        settings = self.settings
        return {
            **self.model_info,
            "input_size": self.input_size,
            "engine": self.engine.name,
            "precision": self.engine.precision,
            "labels": len(self.labels),
            "crops": [{"crop": crop, "labels": group} for crop, group in labels_by_crop(self.labels).items()],
            "in_domain": {
                "available": self.domain.available,
                "method": calibration.get("method") if self.domain.available else None,
                "threshold": self.domain.threshold,
                "target_acceptance": calibration.get("target_acceptance") if self.domain.available else None,
                "calibrated_on": calibration.get("calibrated_on") if self.domain.available else None,
            },
            "measured": measured_numbers(evaluation),
            "limits": {
                "max_upload_bytes": settings.max_upload_bytes,
                "max_pixels": settings.max_pixels,
                "max_images_per_request": settings.max_images_per_request,
                "max_request_bytes": settings.max_request_bytes,
                "max_photos_per_plant": settings.max_photos_per_plant,
                "default_top_k": settings.default_top_k,
                "max_top_k": settings.max_top_k,
                "request_timeout_s": settings.request_timeout_s,
            },
        }

    def close(self) -> None:
        """Answer the queued work and stop the inference thread; idempotent."""
        atexit.unregister(self.close)
        self.batcher.close()


def combined_verdict(accepted: Sequence[Judged]) -> Verdict:
    """The verdict of a plant: known when any photo is; its score the most typical accepted photo's."""
    verdicts = [one.in_domain for one in accepted if one.in_domain.available]
    if not verdicts:
        return UNAVAILABLE
    return max(verdicts, key=lambda verdict: verdict.score or 0.0)


FIELD_MEASURES = (
    "best_guess",
    "best_guess_with_crop",
    "accepted",
    "right",
    "harm",
    "accepted_with_crop",
    "right_with_crop",
    "harm_with_crop",
)


def _share(measure: Any) -> float | None:
    """evaluation.json keeps a share with its count and interval; the API gives the share."""
    return measure.get("share") if isinstance(measure, Mapping) else None


def measured_numbers(evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """The card's headline numbers, as evaluation.json holds them (training/finish.py writes it)."""
    proxy = evaluation.get("field_proxy") or {}
    field = evaluation.get("field") or {}
    return {
        "split": evaluation.get("split"),
        "images": evaluation.get("images"),
        "top1": evaluation.get("top1"),
        "top1_interval_95": evaluation.get("top1_interval_95") or [],
        "top3": evaluation.get("top3"),
        "field_proxy_images": proxy.get("images"),
        "field_proxy_top1": proxy.get("top1"),
        "field": {  # real field photos the model never trained on (null where a model has none measured)
            "images": field.get("images"),
            **{name: _share(field.get(name)) for name in FIELD_MEASURES},
        },
        "rejected": [  # one row per photo group the card measured the in-domain verdict on
            {"name": row.get("name"), "images": row.get("images"), "rejected": row.get("rejected")}
            for row in evaluation.get("in_domain") or []
            if isinstance(row, Mapping)
        ],
    }


def diagnosis_service() -> DiagnosisService:
    """The current app's one DiagnosisService (model, engine, batcher), created with the app.

    The API and the page both reach the service through this accessor; Flask is imported here only,
    so bulk classification uses the service without it.
    """
    from flask import current_app

    return current_app.extensions[EXTENSION]
