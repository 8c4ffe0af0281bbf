"""The PlantNet API client: one connection pool, retries with backoff, typed results."""

from __future__ import annotations

import email.utils
import json
import math
import random
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import islice
from typing import Any

import httpx

from .sources import DEFAULT_MAX_DOWNLOAD_BYTES, Expander, Photo, SourceError

DEFAULT_URL = "http://127.0.0.1:5000"
PREDICTION_PATH = "/Diagnosis/prediction"
PREDICTIONS_PATH = "/Diagnosis/predictions"
PLANT_PATH = "/Diagnosis/plant"
MODEL_PATH = "/Diagnosis/model"
HEALTH_PATH = "/health"
FEEDBACK_PATH = "/Diagnosis/feedback"
KEPT_PATH = "/Diagnosis/diagnoses/{id}"
OTHER_LABEL = "other"  # feedback's label when the right answer is none of the model's labels
DEFAULT_BATCH_SIZE = 32  # the server's default limit of photos per request
# Two requests of 32 in flight: one being computed while the next uploads and decodes. It is also
# what the server's default queue holds (PLANTNET_MAX_QUEUE=64 photos); with four in flight, two
# requests were refused with 503 after the server had decoded them (measured against gunicorn).
DEFAULT_CONCURRENCY = 2
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024  # the server's default limit of one many-photo request
_PART_OVERHEAD = 256  # multipart headers and boundary of one photo, generously

# Failures where the request may not have reached the application: always safe to send again
# (a diagnosis has no side effects). A read timeout is not retried: the server is slow, not gone.
RETRYABLE_ERRORS: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)
RETRYABLE_STATUSES = frozenset({502, 503, 504})


class PlantNetError(Exception):
    """Base class of the client's errors."""


class ServiceUnavailable(PlantNetError):
    """The service could not be reached, even after every retry."""


class RequestRejected(PlantNetError):
    """The service answered a request with an error status; ``status`` and ``message`` say why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{message} (HTTP {status})")
        self.status = status
        self.message = message


@dataclass(frozen=True)
class InDomain:
    """The server's verdict on whether a photo is one the model knows (a leaf of a known species)."""

    known: bool | None = None
    score: float | None = None
    threshold: float | None = None
    available: bool = False

    @classmethod
    def from_json(cls, body: Any) -> InDomain | None:
        if not isinstance(body, Mapping):
            return None
        known = body.get("known")
        return cls(
            known=known if isinstance(known, bool) else None,
            score=_float(body.get("score")),
            threshold=_float(body.get("threshold")),
            available=bool(body.get("available", known is not None)),
        )


@dataclass(frozen=True)
class Result:
    """The diagnosis of one photo, or why there is none (``error_message`` set, ``ok`` false).

    ``source`` names the photo as the client found it: a path, a URL or ``s3://bucket/key``.
    ``top_k`` is a tuple of ``(label, confidence)`` pairs, best first. ``in_domain`` is ``None``
    when the server does not send the verdict. ``raw`` is the server's JSON for this photo.
    ``error_status`` is the HTTP status the server answered for this photo (``None`` when the
    failure happened before any answer: unreadable file, failed download, unreachable service).
    """

    source: str
    label: str | None = None
    confidence: float | None = None
    top_k: tuple[tuple[str, float], ...] = ()
    species: str | None = None
    condition: str | None = None
    healthy: bool | None = None
    in_domain: InDomain | None = None
    raw: Mapping[str, Any] | None = field(default=None, repr=False, compare=False, hash=False)
    error_status: int | None = None
    error_message: str | None = None
    id: str | None = None  # the diagnosis' id when the service keeps diagnoses: for ``Client.feedback``
    crop: str | None = None  # the crop hint the server diagnosed within (None: no hint)

    @property
    def ok(self) -> bool:
        return self.error_message is None and self.error_status is None

    @property
    def known(self) -> bool | None:
        """``False`` when the server judged the photo out of its domain, ``None`` when it did not say."""
        return self.in_domain.known if self.in_domain else None

    def raise_for_error(self) -> Result:
        if not self.ok:
            status = f" (HTTP {self.error_status})" if self.error_status is not None else ""
            raise PlantNetError(f"{self.source}: {self.error_message}{status}")
        return self

    @classmethod
    def from_diagnosis(cls, source: str, body: Mapping[str, Any]) -> Result:
        label = body.get("label")
        return cls(
            source=source,
            label=str(label) if label is not None else None,
            confidence=_float(body.get("confidence")),
            top_k=tuple(_top_k(body.get("top_k"))),
            species=_str(body.get("species")),
            condition=_str(body.get("condition")),
            healthy=body.get("healthy") if isinstance(body.get("healthy"), bool) else None,
            in_domain=InDomain.from_json(body.get("in_domain")),
            raw=body,
            id=_str(body.get("id")),
            crop=_str(body.get("crop")),
        )

    @classmethod
    def failure(
        cls, source: str, message: str, status: int | None = None, raw: Mapping[str, Any] | None = None
    ) -> Result:
        return cls(source=source, error_status=status, error_message=message or "failed", raw=raw)

    def to_record(self) -> dict[str, Any]:
        """A flat, JSON-ready dict (the shape the command line writes)."""
        return {
            "source": self.source,
            "ok": self.ok,
            "label": self.label,
            "confidence": self.confidence,
            "species": self.species,
            "condition": self.condition,
            "healthy": self.healthy,
            "known": self.known,
            "in_domain_score": self.in_domain.score if self.in_domain else None,
            "top_k": [{"label": label, "confidence": conf} for label, conf in self.top_k],
            "error_status": self.error_status,
            "error_message": self.error_message,
            "id": self.id,
            "crop": self.crop,
        }


@dataclass(frozen=True)
class PlantResult:
    """One plant from several photos: the combined diagnosis, and each photo's own result in order.

    ``diagnosis.source`` lists the photos; ``combined_from`` is how many the server's verdict accepted
    and combined (``None`` when the request failed: then ``photos`` is empty and ``diagnosis`` says why).
    """

    diagnosis: Result
    photos: tuple[Result, ...] = ()
    combined_from: int | None = None

    @property
    def ok(self) -> bool:
        return self.diagnosis.ok


class Client:
    """A PlantNet API client holding a connection pool; use it as a context manager.

    ``url`` is the service's base URL (any path prefix is kept). ``timeout`` is seconds per
    request (or an ``httpx.Timeout``). ``retries`` is how many times a request is sent again after
    a connection error or a 502/503/504; the wait doubles from ``backoff`` seconds (with jitter, at
    most ``max_backoff``) unless the answer carries ``Retry-After``, which is honoured up to
    ``max_retry_after`` seconds. ``max_request_bytes`` keeps each many-photo request under the
    server's total limit (a request is split when its photos together are larger; a 413 splits it
    too). ``max_download_bytes`` bounds every photo read (downloaded from http(s) URLs, read from a
    file or an S3 object); ``endpoint_url`` / ``s3_client`` configure ``s3://`` sources. A download
    refuses redirects from HTTPS to HTTP and to private, loopback or link-local addresses unless
    ``allow_unsafe_redirects``. ``api_key`` is sent as ``Authorization: Bearer <key>`` (services that
    set PLANTNET_API_KEYS_FILE need one).
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        timeout: float | httpx.Timeout = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_retry_after: float = 120.0,
        headers: Mapping[str, str] | None = None,
        max_connections: int = 16,
        max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        endpoint_url: str | None = None,
        s3_client: Any = None,
        verify: bool | str = True,
        api_key: str | None = None,
        allow_unsafe_redirects: bool = False,
    ) -> None:
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.url = url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self.max_request_bytes = max_request_bytes
        self.retry_statuses = RETRYABLE_STATUSES
        if not isinstance(timeout, httpx.Timeout):
            timeout = httpx.Timeout(timeout, connect=min(10.0, timeout))
        self._http = httpx.Client(
            base_url=self.url,
            timeout=timeout,
            headers={
                "Accept": "application/json",
                **({"Authorization": f"Bearer {api_key}"} if api_key else {}),
                **(headers or {}),
            },
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            verify=verify,
        )
        self._downloads = httpx.Client(
            follow_redirects=True, timeout=timeout, verify=verify, limits=httpx.Limits(max_connections=max_connections)
        )
        self.expander = Expander(
            self._downloads,
            max_download_bytes=max_download_bytes,
            s3_client=s3_client,
            endpoint_url=endpoint_url,
            allow_unsafe_redirects=allow_unsafe_redirects,
        )
        self._many_unsupported = False
        self._sleep = time.sleep

    # -- life cycle ---------------------------------------------------------------------------
    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()
        self._downloads.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # -- public API ---------------------------------------------------------------------------
    def health(self) -> bool:
        """True when the service answers its health check with 200 (one attempt, no retries)."""
        try:
            return self._http.get(HEALTH_PATH).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_until_ready(self, timeout: float = 60.0, interval: float = 0.5) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if self.health():
                return True
            if time.monotonic() >= deadline:
                return False
            self._sleep(interval)

    def photos(self, sources: Any) -> Iterator[Photo]:
        """The photos that ``sources`` name, listed lazily (nothing is read yet)."""
        return self.expander.expand(sources)

    def diagnose(self, source: Any, top_k: int | None = None, crop: str | None = None) -> Result:
        """Diagnose one photo: a path, an http(s) URL, ``s3://bucket/key``, bytes or a binary file.

        ``crop`` ("Tomato") tells the server which crop the photo shows: it diagnoses among that
        crop's labels only (``model_info()`` lists them); a crop it does not know fails with 400.
        """
        found = list(islice(self.photos(source), 2))
        if not found:
            raise ValueError(f"no photo found in {source!r}")
        if len(found) > 1:
            raise ValueError(f"{source!r} names several photos; use diagnose_many()")
        photo = found[0]
        try:
            data = photo.read()
        except SourceError as error:
            return Result.failure(photo.source, str(error))
        try:
            response = self._send(
                PREDICTION_PATH, files=[("image", (photo.name, data, photo.content_type))], form=_form(top_k, crop)
            )
        except ServiceUnavailable as error:
            return Result.failure(photo.source, str(error))
        body = _json(response)
        if response.status_code == 200 and isinstance(body, Mapping):
            return Result.from_diagnosis(photo.source, body)
        return Result.failure(photo.source, _message(response, body), response.status_code, _mapping(body))

    def diagnose_plant(
        self, sources: Any, top_k: int | None = None, crop: str | None = None, strict: bool = False
    ) -> PlantResult:
        """Diagnose one plant from several photos of it (1 to the server's PLANTNET_MAX_PHOTOS_PER_PLANT, 5).

        The server combines the photos its verdict accepts into one diagnosis (``PlantResult.diagnosis``)
        and answers each photo's own result too (``PlantResult.photos``, in order). A photo this client
        cannot read fails the call with ValueError before anything is sent; a refused request (no photo,
        too many, unknown crop, none readable, ``strict`` and none accepted) gives a failed diagnosis.
        """
        photos = list(self.photos(sources))
        if not photos:
            raise ValueError(f"no photo found in {sources!r}")
        try:
            files = [("images", (photo.name, photo.read(), photo.content_type)) for photo in photos]
        except SourceError as error:
            raise ValueError(str(error)) from error
        source = ", ".join(photo.source for photo in photos)
        try:
            response = self._send(PLANT_PATH, files=files, form=_form(top_k, crop, strict))
        except ServiceUnavailable as error:
            return PlantResult(Result.failure(source, str(error)))
        body = _json(response)
        if response.status_code != 200 or not isinstance(body, Mapping):
            return PlantResult(Result.failure(source, _message(response, body), response.status_code, _mapping(body)))
        items = body.get("photos") if isinstance(body.get("photos"), list) else []
        results = tuple(
            _item_result(photo.source, item) if isinstance(item, Mapping) else Result.failure(photo.source, "no result")
            for photo, item in zip(photos, items, strict=False)
        )
        used = body.get("combined_from")
        return PlantResult(Result.from_diagnosis(source, body), results, used if isinstance(used, int) else None)

    def model_info(self) -> dict[str, Any]:
        """What the service's model is: name, version, engine, labels by crop, in-domain verdict, limits.

        Raises RequestRejected (a server without GET /Diagnosis/model answers 404) or ServiceUnavailable.
        """
        return self._answer(self._send(MODEL_PATH, method="GET"))

    def feedback(
        self, diagnosis_id: str, correct: bool, label: str | None = None, note: str | None = None
    ) -> dict[str, Any]:
        """Tell the service whether a diagnosis was right; if not, ``label`` says what it is.

        ``label`` is one of the model's labels or ``"other"``; ``note`` a short remark. Returns the
        saved feedback once the service has committed it; raises RequestRejected (400 bad field, 404
        unknown id or a service that keeps no diagnoses) or ServiceUnavailable. Sending it again
        replaces it, so the retries are safe.
        """
        body: dict[str, Any] = {"id": diagnosis_id, "correct": bool(correct)}
        if label is not None:
            body["label"] = label
        if note is not None:
            body["note"] = note
        return self._answer(self._send(FEEDBACK_PATH, json_body=body))

    def kept(self, diagnosis_id: str) -> dict[str, Any]:
        """What the service keeps of a diagnosis: its answer, its feedback, when it expires."""
        return self._answer(self._send(KEPT_PATH.format(id=diagnosis_id), method="GET"))

    def forget(self, diagnosis_id: str) -> None:
        """Delete a kept diagnosis, its feedback and its photo from the service."""
        self._answer(self._send(KEPT_PATH.format(id=diagnosis_id), method="DELETE"))

    @staticmethod
    def _answer(response: httpx.Response) -> dict[str, Any]:
        if response.status_code == 204:
            return {}
        body = _json(response)
        if response.status_code != 200 or not isinstance(body, Mapping):
            raise RequestRejected(response.status_code, _message(response, body))
        return dict(body)

    def diagnose_many(
        self,
        sources: Any,
        top_k: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        concurrency: int = DEFAULT_CONCURRENCY,
        ordered: bool = False,
        crop: str | None = None,
    ) -> Iterator[Result]:
        """Diagnose every photo the sources name; yields one :class:`Result` per photo.

        Photos go up ``batch_size`` to a request, ``concurrency`` requests at a time; results come
        as each request finishes (in the sources' order within a request, and across requests
        too when ``ordered``). A photo that cannot be read, or that the server refuses, yields a
        failed result; the others go on. ``crop`` is a hint for every photo (see :meth:`diagnose`).
        """
        if batch_size < 1 or concurrency < 1:
            raise ValueError("batch_size and concurrency must be >= 1")
        batches = _chunks(self.photos(sources), batch_size)
        pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="plantnet")
        pending: deque[Future[list[Result]]] = deque()
        try:
            for batch in batches:
                pending.append(pool.submit(self._diagnose_batch, batch, _form(top_k, crop)))
                while len(pending) >= concurrency:
                    yield from self._collect(pending, ordered)
            while pending:
                yield from self._collect(pending, ordered)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    # -- internals ----------------------------------------------------------------------------
    @staticmethod
    def _collect(pending: deque[Future[list[Result]]], ordered: bool) -> Iterator[Result]:
        if ordered:
            yield from pending.popleft().result()
            return
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        for future in [f for f in pending if f in done]:
            pending.remove(future)
            yield from future.result()

    def _diagnose_batch(self, batch: list[Photo], form: dict[str, str]) -> list[Result]:
        results: dict[int, Result] = {}
        uploads: list[tuple[int, Photo, bytes]] = []
        for index, photo in enumerate(batch):
            try:
                uploads.append((index, photo, photo.read()))
            except SourceError as error:
                results[index] = Result.failure(photo.source, str(error))
        for group in _by_size(uploads, self.max_request_bytes):
            results.update(self._upload(group, form))
        return [results[index] for index in range(len(batch))]

    def _upload(self, uploads: list[tuple[int, Photo, bytes]], form: dict[str, str]) -> dict[int, Result]:
        if self._many_unsupported:
            return self._upload_one_by_one(uploads, form)
        files = [("images", (photo.name, data, photo.content_type)) for _, photo, data in uploads]
        try:
            response = self._send(PREDICTIONS_PATH, files=files, form=form)
        except ServiceUnavailable as error:
            return {index: Result.failure(photo.source, str(error)) for index, photo, _ in uploads}
        status = response.status_code
        body = _json(response)
        if status in (404, 405) and not self._many_unsupported:
            # A server older than the many-photo endpoint: one request per photo still works.
            self._many_unsupported = True
            return self._upload_one_by_one(uploads, form)
        if status == 413 and len(uploads) > 1:
            half = len(uploads) // 2  # too large in total: send each half on its own
            return {**self._upload(uploads[:half], form), **self._upload(uploads[half:], form)}
        items = body.get("results") if status == 200 and isinstance(body, Mapping) else None
        if not isinstance(items, list):
            message = _message(response, body) if status != 200 else "the server's answer has no results list"
            return {index: Result.failure(photo.source, message, status, _mapping(body)) for index, photo, _ in uploads}
        by_position: dict[int, Any] = {}
        for position, item in enumerate(items):
            if isinstance(item, Mapping):
                index = item.get("index")
                by_position[index if isinstance(index, int) else position] = item
        results = {}
        for position, (index, photo, _) in enumerate(uploads):
            item = by_position.get(position)
            results[index] = (
                _item_result(photo.source, item)
                if item is not None
                else Result.failure(photo.source, "the server gave no result for this photo")
            )
        return results

    def _upload_one_by_one(self, uploads: list[tuple[int, Photo, bytes]], form: dict[str, str]) -> dict[int, Result]:
        results = {}
        for index, photo, data in uploads:
            try:
                response = self._send(
                    PREDICTION_PATH, files=[("image", (photo.name, data, photo.content_type))], form=form
                )
            except ServiceUnavailable as error:
                results[index] = Result.failure(photo.source, str(error))
                continue
            body = _json(response)
            if response.status_code == 200 and isinstance(body, Mapping):
                results[index] = Result.from_diagnosis(photo.source, body)
            else:
                results[index] = Result.failure(
                    photo.source, _message(response, body), response.status_code, _mapping(body)
                )
        return results

    def _send(
        self,
        path: str,
        *,
        files: list[Any] | None = None,
        form: Mapping[str, str] | None = None,
        json_body: Mapping[str, Any] | None = None,
        method: str = "POST",
    ) -> httpx.Response:
        """Send with retries on connection errors and retryable statuses; the last answer otherwise."""
        data = dict(form) if form else None
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, files=files, data=data, json=json_body)
            except RETRYABLE_ERRORS as error:
                if attempt >= self.retries:
                    raise ServiceUnavailable(
                        f"cannot reach {self.url} after {attempt + 1} attempt(s): {error or type(error).__name__}"
                    ) from error
                delay = self._backoff_delay(attempt)
            except httpx.HTTPError as error:
                raise ServiceUnavailable(f"request to {self.url} failed: {error or type(error).__name__}") from error
            else:
                if response.status_code not in self.retry_statuses or attempt >= self.retries:
                    return response
                retry_after = parse_retry_after(response.headers.get("retry-after"))
                delay = self._backoff_delay(attempt) if retry_after is None else min(retry_after, self.max_retry_after)
                response.close()
            attempt += 1
            self._sleep(delay)

    def _backoff_delay(self, attempt: int) -> float:
        ceiling = min(self.max_backoff, self.backoff * (2**attempt))
        return ceiling * (0.5 + random.random() / 2)  # "equal jitter": between half and all of it


def _form(top_k: int | None = None, crop: str | None = None, strict: bool = False) -> dict[str, str]:
    """The form fields of a diagnosis request; only those the caller set (the server's defaults otherwise)."""
    form = {"top_k": str(top_k)} if top_k is not None else {}
    if crop is not None:
        form["crop"] = crop
    if strict:
        form["strict"] = "true"
    return form


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)  # noqa: UP017 - Python 3.10 too
        seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()  # noqa: UP017
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


def _item_result(source: str, item: Mapping[str, Any]) -> Result:
    status = item.get("status")
    status = status if isinstance(status, int) else None
    diagnosis = item.get("diagnosis")
    if isinstance(diagnosis, Mapping) and (status is None or 200 <= status < 300):
        return Result.from_diagnosis(source, diagnosis)
    message = item.get("message") or (f"HTTP {status}" if status else "the server gave no diagnosis")
    return Result.failure(source, str(message), status, item)


def _by_size(uploads: list[tuple[int, Photo, bytes]], limit: int) -> Iterator[list[tuple[int, Photo, bytes]]]:
    """Consecutive groups whose photos together stay under ``limit`` bytes (a lone larger photo goes alone)."""
    group: list[tuple[int, Photo, bytes]] = []
    size = 0
    for upload in uploads:
        cost = len(upload[2]) + len(upload[1].name) + _PART_OVERHEAD
        if group and size + cost > limit:
            yield group
            group, size = [], 0
        group.append(upload)
        size += cost
    if group:
        yield group


def _chunks(photos: Iterable[Photo], size: int) -> Iterator[list[Photo]]:
    iterator = iter(photos)
    while batch := list(islice(iterator, size)):
        yield batch


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        return None


def _message(response: httpx.Response, body: Any) -> str:
    if isinstance(body, Mapping) and body.get("message"):
        return str(body["message"])
    text = response.text.strip()
    return text[:200] if text else f"HTTP {response.status_code} {response.reason_phrase}".strip()


def _mapping(body: Any) -> Mapping[str, Any] | None:
    return body if isinstance(body, Mapping) else None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _str(value: Any) -> str | None:
    return str(value) if value is not None else None


def _top_k(items: Any) -> Iterator[tuple[str, float]]:
    if not isinstance(items, list):
        return
    for item in items:
        if isinstance(item, Mapping):
            label, confidence = item.get("label"), _float(item.get("confidence"))
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            label, confidence = item[0], _float(item[1])
        else:
            continue
        if label is not None and confidence is not None:
            yield str(label), confidence
