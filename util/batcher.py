"""Dynamic batching: requests that arrive together share one inference call.

Request threads decode and preprocess their own images, then ``submit_many`` the arrays and wait.
One inference thread takes the first waiting array, gathers more until the batch is full or
``max_wait_ms`` has passed since that first one arrived, runs the engine once and hands each
image its own row. A single thread owns the engine, so engines need not be thread-safe.

With ``wait_only_for_announced``, the inference thread waits for more work only while callers have
announced photos they are still decoding (``announced``): a lone request is run at once instead
of waiting ``max_wait_ms`` for company that is not coming.

Work whose caller gave up is dropped, not computed: a caller that times out cancels its futures
(``predict`` and ``wait`` do it), and the inference thread skips cancelled futures. At most
``max_queue`` images wait at once; beyond that ``submit_many`` raises ``Overloaded`` at once,
so an overloaded service answers quickly instead of queueing work it will time out on.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np

log = logging.getLogger(__name__)
BatchObserver = Callable[[int, float], None]  # (batch size, inference seconds)
DepthObserver = Callable[[int], None]  # images waiting for the engine
# What an engine returns for a batch of N: an N x K array, or a mapping of names to arrays of N rows.
# Each caller gets its own row: an array, or a mapping of the same names to rows.
EngineOutput = np.ndarray | Mapping[str, np.ndarray]
# How often the gathering inference thread looks again whether announced work is still coming.
ANNOUNCED_POLL_S = 0.0005


class BatcherClosed(RuntimeError):
    """The batcher is shutting down and takes no new work."""


class Overloaded(RuntimeError):
    """More images wait for the engine than the queue holds: try again in a moment."""


class Batcher:
    def __init__(
        self,
        predict: Callable[[np.ndarray], EngineOutput],
        input_shape: tuple[int, ...],
        max_batch_size: int = 16,
        max_wait_ms: float = 4.0,
        observe: BatchObserver | None = None,
        before_first: Callable[[], None] | None = None,
        max_queue: int | None = None,
        observe_depth: DepthObserver | None = None,
        warm_up_attempts: int = 3,
        retry_pause_s: float = 2.0,
        wait_only_for_announced: bool = False,
    ):
        """``before_first`` runs on the inference thread before any request (warm-up); requests queue meanwhile.

        A warm-up that raises is logged and tried again, ``warm_up_attempts`` times in all; then (or
        when the loop itself fails) the thread stops, ``failure`` says why, queued work fails with
        BatcherClosed and new work is refused at once: health reports it instead of requests timing out.
        """
        self._predict = predict
        self._before_first = before_first
        self.warm_up_attempts = max(1, warm_up_attempts)
        self.retry_pause_s = retry_pause_s
        self.failure: BaseException | None = None
        self.warmed = threading.Event()  # set once the warm-up has run (or there is none)
        self.last_progress = time.monotonic()  # the last time work was taken or a batch finished
        self._inferring_since: float | None = None
        self._buffer: np.ndarray | None = None  # batches are assembled here (see _assembled)
        self.input_shape = tuple(input_shape)
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.wait_only_for_announced = wait_only_for_announced
        self._announced = 0  # photos callers are decoding and will submit (see ``announced``)
        self._announcing = threading.Lock()
        self.max_queue = max_queue
        self._observe = observe
        self._observe_depth = observe_depth
        self._queue: queue.Queue[tuple[np.ndarray, Future] | None] = queue.Queue()
        self._submitting = threading.Lock()  # makes "is there room?" and "queue them" one step
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Images waiting for the engine (not yet in a batch)."""
        return self._queue.qsize()

    @property
    def alive(self) -> bool:
        """The inference thread runs (or stopped because close() asked it to)."""
        return self.failure is None and (self._thread.is_alive() or self._closed.is_set())

    def stalled_for(self) -> float:
        """Seconds the thread has made no progress while work waits or a batch runs; 0 when it keeps up."""
        now = time.monotonic()
        if self._inferring_since is not None:
            return now - self._inferring_since
        if self.depth > 0:
            return now - self.last_progress
        return 0.0

    def submit(self, pixels: np.ndarray) -> Future:
        """Queue one preprocessed image; the future resolves to its row of the engine's output."""
        return self.submit_many([pixels])[0]

    def submit_many(self, images: Sequence[np.ndarray]) -> list[Future]:
        """Queue images together (all or none), so one request's photos can share batches."""
        for pixels in images:
            if pixels.shape != self.input_shape:
                raise ValueError(f"expected an array of shape {self.input_shape}, got {pixels.shape}")
        with self._submitting:
            if self._closed.is_set():
                raise BatcherClosed("the service is shutting down")
            if not self.alive:
                raise BatcherClosed(f"the inference thread has stopped: {self.failure}")
            if self.max_queue is not None and self.depth + len(images) > self.max_queue:
                raise Overloaded(f"{self.depth} images wait for the engine; the queue holds {self.max_queue}")
            futures: list[Future] = []
            for pixels in images:
                future: Future = Future()
                self._queue.put((pixels, future))
                futures.append(future)
        self._report_depth()
        return futures

    @contextlib.contextmanager
    def announced(self, count: int) -> Iterator[None]:
        """Say that ``count`` photos are being prepared for ``submit_many`` until the block ends.

        With ``wait_only_for_announced``, a gathering batch waits (up to ``max_wait_ms``) only while
        some are; submit them inside the block.
        """
        with self._announcing:
            self._announced += count
        try:
            yield
        finally:
            with self._announcing:
                self._announced -= count

    def _more_coming(self) -> bool:
        return not self.wait_only_for_announced or self._announced > 0

    def predict(self, pixels: np.ndarray, timeout: float | None = None) -> Any:
        """Submit one image and wait for its row; on timeout its work is cancelled, then TimeoutError."""
        future = self.submit(pixels)
        if wait([future], timeout):
            raise TimeoutError(f"no answer within {timeout} s; the image was dropped")
        return future.result()

    def close(self, timeout: float = 30.0) -> None:
        """Answer everything already queued, then stop the inference thread."""
        with self._submitting:
            self._closed.set()
            self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            if not self._warm_up():
                return
            self._serve()
        except Exception as exc:  # a bug in the loop: say so, fail what waits, let health report it
            log.exception("the inference thread failed")
            self._fail(exc)

    def _warm_up(self) -> bool:
        """Run ``before_first``, retrying; False (and the thread stops) when every attempt failed."""
        for attempt in range(1, self.warm_up_attempts + 1):
            try:
                if self._before_first is not None:
                    self._before_first()
                self.warmed.set()
                self.last_progress = time.monotonic()
                return True
            except Exception as exc:  # noqa: BLE001 - any failure of the engine's first calls: retried, then reported
                log.error("warm-up failed (attempt %d of %d): %s", attempt, self.warm_up_attempts, exc)
                if attempt == self.warm_up_attempts:
                    self._fail(exc)
                    return False
                if self._closed.wait(self.retry_pause_s * attempt):
                    self._fail(exc)
                    return False
        return False

    def _fail(self, exc: BaseException) -> None:
        """Stop for good: remember why, and fail every queued future instead of letting it time out."""
        with self._submitting:
            self.failure = exc
        self.warmed.set()
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None and item[1].set_running_or_notify_cancel():
                item[1].set_exception(BatcherClosed(f"the inference thread has stopped: {exc}"))
        self._report_depth()

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            self.last_progress = time.monotonic()
            if first is None:
                return
            batch = [first] if not first[1].cancelled() else []
            deadline = time.monotonic() + self.max_wait
            stop = self._gather(batch, deadline)
            self._report_depth()
            self._infer(batch)
            if stop:
                return

    def _gather(self, batch: list, deadline: float) -> bool:
        """Add waiting live requests until the batch is full or the deadline passes; True on close."""
        poll = ANNOUNCED_POLL_S if self.wait_only_for_announced else self.max_wait
        while len(batch) < self.max_batch_size:
            remaining = deadline - time.monotonic() if self._more_coming() else 0.0
            try:
                item = self._queue.get(timeout=min(remaining, poll)) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                if remaining > 0:
                    continue  # time is left: look again whether work is still coming
                return False
            if item is None:
                self._drain(batch)
                return True
            if not item[1].cancelled():
                batch.append(item)
        return False

    def _drain(self, batch: list) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                batch.append(item)

    def _infer(self, batch: list[tuple[np.ndarray, Future]]) -> None:
        for start in range(0, len(batch), self.max_batch_size):
            # set_running_or_notify_cancel: False for a future cancelled since it was gathered; from
            # here on the caller can no longer cancel it.
            chunk = [(x, f) for x, f in batch[start : start + self.max_batch_size] if f.set_running_or_notify_cancel()]
            if not chunk:
                continue
            began = time.perf_counter()
            self._inferring_since = time.monotonic()
            try:
                batch = self._assembled([x for x, _ in chunk])
                rows = split_rows(detached(self._predict(batch), batch), len(chunk))
            except Exception as exc:
                log.exception("inference failed for a batch of %d", len(chunk))
                for _, future in chunk:
                    future.set_exception(exc)
                continue
            finally:
                self._inferring_since = None
                self.last_progress = time.monotonic()
            if self._observe is not None:
                self._observe(len(chunk), time.perf_counter() - began)
            for (_, future), row in zip(chunk, rows, strict=True):
                future.set_result(row)

    def _assembled(self, images: list[np.ndarray]) -> np.ndarray:
        """The images as one batch, copied into a buffer this thread reuses.

        A fresh array of a full batch (5 MB at 16 x 160 px) is past glibc's mmap threshold: each one
        was mapped, zeroed and unmapped again (measured: docs/benchmarks.md).
        """
        dtype = np.result_type(*images)
        if self._buffer is None or self._buffer.dtype != dtype or len(self._buffer) < len(images):
            self._buffer = np.empty((max(self.max_batch_size, len(images)), *self.input_shape), dtype)
        return np.stack(images, out=self._buffer[: len(images)])

    def _report_depth(self) -> None:
        if self._observe_depth is not None:
            self._observe_depth(self.depth)


def detached(output: EngineOutput, batch: np.ndarray) -> EngineOutput:
    """``output`` with copies of any array that is a view of ``batch`` (whose buffer the next batch reuses)."""
    if isinstance(output, Mapping):
        return {name: detached(values, batch) for name, values in output.items()}
    if isinstance(output, np.ndarray) and np.may_share_memory(output, batch):
        return output.copy()
    return output


def split_rows(output: EngineOutput, count: int) -> list[Any]:
    """Split an engine's batch output into ``count`` rows: arrays, or mappings of name to row."""
    if isinstance(output, Mapping):
        for name, values in output.items():
            if len(values) != count:
                raise ValueError(f"the engine returned {len(values)} rows of {name!r} for {count} images")
        return [{name: values[i] for name, values in output.items()} for i in range(count)]
    if len(output) != count:
        raise ValueError(f"the engine returned {len(output)} rows for {count} images")
    return list(output)


def wait(futures: Iterable[Future], timeout: float | None) -> int:
    """Wait up to ``timeout`` seconds for every future; cancel the unfinished ones and return their count.

    A cancelled image is skipped by the inference thread: its caller has gone, so it is not computed.
    """
    futures = list(futures)
    try:
        _, unfinished = concurrent.futures.wait(futures, timeout)
    except BaseException:  # the waiting thread is interrupted: nobody will read these answers
        for future in futures:
            future.cancel()
        raise
    for future in unfinished:
        future.cancel()
    return len(unfinished)
