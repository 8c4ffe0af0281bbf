"""Dynamic batching: requests that arrive together share one inference call.

Request threads decode and preprocess their own image, then ``submit`` the array and wait.
One inference thread takes the first waiting array, gathers more until the batch is full or
``max_wait_ms`` has passed since that first one arrived, runs the engine once and hands each
request its own row. A single thread owns the engine, so engines need not be thread-safe.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

log = logging.getLogger(__name__)
BatchObserver = Callable[[int, float], None]  # (batch size, inference seconds)


class BatcherClosed(RuntimeError):
    """The batcher is shutting down and takes no new work."""


class Batcher:
    def __init__(
        self,
        predict: Callable[[np.ndarray], np.ndarray],
        input_shape: tuple[int, ...],
        max_batch_size: int = 16,
        max_wait_ms: float = 4.0,
        observe: BatchObserver | None = None,
        before_first: Callable[[], None] | None = None,
    ):
        """``before_first`` runs on the inference thread before any request (warm-up); requests queue meanwhile."""
        self._predict = predict
        self._before_first = before_first
        self.input_shape = tuple(input_shape)
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self._observe = observe
        self._queue: queue.Queue[tuple[np.ndarray, Future] | None] = queue.Queue()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)
        self._thread.start()

    def submit(self, pixels: np.ndarray) -> Future:
        """Queue one preprocessed image; the future resolves to its probability vector."""
        if pixels.shape != self.input_shape:
            raise ValueError(f"expected an array of shape {self.input_shape}, got {pixels.shape}")
        if self._closed.is_set():
            raise BatcherClosed("the service is shutting down")
        future: Future = Future()
        self._queue.put((pixels, future))
        return future

    def predict(self, pixels: np.ndarray, timeout: float | None = None) -> np.ndarray:
        return self.submit(pixels).result(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Answer everything already queued, then stop the inference thread."""
        self._closed.set()
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        if self._before_first is not None:
            self._before_first()
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + self.max_wait
            stop = self._gather(batch, deadline)
            self._infer(batch)
            if stop:
                return

    def _gather(self, batch: list, deadline: float) -> bool:
        """Add waiting requests until the batch is full or the deadline passes; True on close."""
        while len(batch) < self.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                return False
            if item is None:
                self._drain(batch)
                return True
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
            chunk = [(x, f) for x, f in batch[start : start + self.max_batch_size] if f.set_running_or_notify_cancel()]
            if not chunk:
                continue
            began = time.perf_counter()
            try:
                probabilities = self._predict(np.stack([x for x, _ in chunk]))
            except Exception as exc:
                log.exception("inference failed for a batch of %d", len(chunk))
                for _, future in chunk:
                    future.set_exception(exc)
                continue
            if self._observe is not None:
                self._observe(len(chunk), time.perf_counter() - began)
            for (_, future), row in zip(chunk, probabilities, strict=True):
                future.set_result(row)
