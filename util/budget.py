"""Bounded decode memory: a shared budget of decoded bytes in flight, and glibc malloc tuning.

A 36-megapixel PNG is 0.2 MB on the wire and about 150 MB once decoded; sixteen of them at once
would need gigabytes. Each request reserves the bytes its decode needs, computed from the image
header before any pixel is decoded; requests past the budget wait for it, and one that would
wait longer than its timeout gets ``DecodeBusy`` instead: a kind of ``batcher.Overloaded``, which
the API answers with 503 and Retry-After.

glibc keeps memory that request threads freed in per-thread arenas and a grown heap. Few arenas
(``M_ARENA_MAX``), big buffers always served by mmap (returned to the system when freed) and
``malloc_trim`` after large decodes bring the process back to its warm size after a burst.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from util import messages
from util.batcher import Overloaded

if TYPE_CHECKING:
    from util.config import Settings

log = logging.getLogger(__name__)

TRIM_ABOVE_BYTES = 32 * 1024 * 1024  # give memory back to the system after decodes at least this large

# mallopt parameters (glibc malloc.h)
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024
ARENA_MAX = 2


class DecodeBusy(Overloaded):
    """Too many large images are being decoded at once: try again in a moment."""


class PixelBudget:
    """A counting semaphore over bytes: ``reserve(n)`` waits until ``n`` bytes fit in the budget.

    A single reservation larger than the whole budget is clamped to it, so it runs alone
    instead of never. ``in_use`` and ``waiting`` are for gauges.
    """

    def __init__(self, capacity_bytes: int):
        if capacity_bytes < 1:
            raise ValueError("the decode budget must be at least one byte")
        self.capacity = int(capacity_bytes)
        self.in_use = 0
        self.waiting = 0
        self._cond = threading.Condition()

    @classmethod
    def for_settings(cls, settings: Settings) -> PixelBudget:
        """Size the budget from ``settings.decode_budget_mb`` (``PLANTNET_DECODE_BUDGET_MB``)."""
        return cls(int(settings.decode_budget_mb * 1024 * 1024))

    @contextmanager
    def reserve(self, nbytes: int, timeout: float | None) -> Iterator[int]:
        """Hold ``nbytes`` of the budget for the ``with`` block; raise ``DecodeBusy`` after ``timeout`` s."""
        nbytes = max(0, min(int(nbytes), self.capacity))
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self.waiting += 1
            try:
                while self.in_use + nbytes > self.capacity:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise DecodeBusy(messages.DECODE_BUSY)
                    self._cond.wait(remaining)
            finally:
                self.waiting -= 1
            self.in_use += nbytes
        try:
            yield nbytes
        finally:
            with self._cond:
                self.in_use -= nbytes
                self._cond.notify_all()

    def released(self, nbytes: int) -> None:
        """Called after a decode of ``nbytes`` has dropped its buffers: give big ones back to the system."""
        if nbytes >= TRIM_ABOVE_BYTES:
            trim_memory()


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        libc.mallopt  # noqa: B018 - glibc only: musl and macOS have no mallopt/malloc_trim
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


def tune_malloc(environ: dict[str, str] | None = None) -> dict[str, int]:
    """Cap glibc arenas and serve big buffers by mmap, unless the environment already says.

    Call it early in the server process, before the request threads start. ``MALLOC_ARENA_MAX``
    and ``MALLOC_MMAP_THRESHOLD_`` in the environment win (glibc read them at start-up).
    """
    environ = os.environ if environ is None else environ
    applied: dict[str, int] = {}
    if _LIBC is None:
        return applied
    if "MALLOC_ARENA_MAX" not in environ and _LIBC.mallopt(_M_ARENA_MAX, ARENA_MAX) == 1:
        applied["arena_max"] = ARENA_MAX
    if "MALLOC_MMAP_THRESHOLD_" not in environ and _LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1:
        applied["mmap_threshold"] = MMAP_THRESHOLD_BYTES
    return applied


class IdleTrim:
    """Give freed memory back once the last request of a burst ends, if the burst brought in many bytes.

    Upload bodies pass through many small buffers (waitress, the multipart parser, each photo's bytes)
    that glibc keeps after they are freed; a trim when nothing is in flight costs a few milliseconds
    and nobody waits for it.
    """

    def __init__(self, threshold_bytes: int = TRIM_ABOVE_BYTES):
        self.threshold = threshold_bytes
        self.active = 0
        self.since_trim = 0
        self._lock = threading.Lock()

    def started(self) -> None:
        with self._lock:
            self.active += 1

    def finished(self, bytes_in: int) -> bool:
        """Count a finished request; trim when it was the last in flight and enough came in. True if trimmed."""
        with self._lock:
            self.active -= 1
            self.since_trim += max(0, bytes_in)
            if self.active > 0 or self.since_trim < self.threshold:
                return False
            self.since_trim = 0
        trim_memory()
        return True


IDLE_TRIM = IdleTrim()


def trim_memory() -> None:
    """Return freed heap memory to the system (glibc ``malloc_trim(0)``); a no-op elsewhere."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
