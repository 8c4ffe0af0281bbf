"""Attackers and heavy users, built in code: slow connections, big legal photos, process memory.

Shared by tests/test_slow_clients.py, tests/test_big_photos.py, bench/slowloris.py and
bench/bigphotos.py. Everything talks to 127.0.0.1 only and is bounded in count and time.
"""

from __future__ import annotations

import http.client
import io
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

from tests.support import PREDICT, multipart_body

MAX_SLOW_CONNECTIONS = 2000
BOUNDARY = "XyZ"
LOOPBACK = ("127.0.0.1", "localhost")
# Slow clients connect from another loopback address than the normal uploads, as attackers and users
# do: the server caps connections per client address (PLANTNET_SERVER_CONNECTIONS_PER_ADDRESS).
ATTACKER = "127.0.0.2"


def loopback(url: str) -> tuple[str, int]:
    """(host, port) of ``url``, refusing anything but this machine."""
    parts = urlsplit(url)
    if parts.hostname not in LOOPBACK:
        raise ValueError(f"only 127.0.0.1 may be targeted, not {parts.hostname}")
    return "127.0.0.1", parts.port or 80


class SlowClients:
    """``count`` connections from ``source`` that send a request one byte per ``interval`` seconds, while open.

    ``mode="body"`` sends full headers announcing a 1 MB multipart upload, then trickles the body;
    ``mode="headers"`` trickles the request line and headers themselves (classic slowloris).
    Use as a context manager; ``alive`` counts connections the server has not closed.
    """

    def __init__(self, url: str, count: int, mode: str = "body", interval: float = 1.0, source: str = ATTACKER):
        if not 0 <= count <= MAX_SLOW_CONNECTIONS:
            raise ValueError(f"between 0 and {MAX_SLOW_CONNECTIONS} slow connections")
        if mode not in ("body", "headers"):
            raise ValueError("mode is 'body' or 'headers'")
        self.address = loopback(url)
        self.count, self.mode, self.interval, self.source = count, mode, interval, source
        self.sockets: list[socket.socket] = []
        self.bytes_sent = 0
        self.refused = 0  # connections the server (or its full backlog) did not take
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, name="slow-clients", daemon=True)

    def _opening(self) -> bytes:
        if self.mode == "headers":
            return b"P"
        head = (
            f"POST {PREDICT} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: 1000000\r\n\r\n"
        )
        part = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"'
        return (head + part).encode()

    def _next_byte(self, index: int) -> bytes:
        if self.mode == "headers":  # "OST /Diagnosis/prediction HTTP/1.1\r\nX-a: b\r\nX-a: b..." never ending
            text = f"OST {PREDICT} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            if index < len(text):
                return text[index].encode()
            return b"X-a: b\r\n"[(index - len(text)) % 8 : (index - len(text)) % 8 + 1]
        return b"x"

    def __enter__(self) -> SlowClients:
        for _ in range(self.count):
            try:
                sock = socket.create_connection(self.address, timeout=5, source_address=(self.source, 0))
                sock.sendall(self._opening())
            except OSError:
                self.refused += 1
                continue
            sock.setblocking(False)
            self.sockets.append(sock)
        self._thread.start()
        return self

    def _trickle(self) -> None:
        index = 0
        while not self._stop.wait(self.interval):
            byte = self._next_byte(index)
            index += 1
            for sock in self.sockets:
                if sock.fileno() == -1:
                    continue
                try:
                    self.bytes_sent += sock.send(byte)
                except OSError:  # closed by the server (or its send buffer is full): leave it closed
                    sock.close()

    @property
    def alive(self) -> int:
        """Connections still open from the server's side (a peek that finds EOF means closed)."""
        count = 0
        for sock in self.sockets:
            if sock.fileno() == -1:
                continue
            try:
                if sock.recv(1, socket.MSG_PEEK) == b"":
                    continue
            except BlockingIOError:
                pass
            except OSError:
                continue
            count += 1
        return count

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in self.sockets:
            sock.close()


@dataclass
class Answer:
    status: int
    seconds: float
    body: bytes


def upload(url: str, data: bytes, filename: str = "leaf.jpg", timeout: float = 30) -> Answer:
    """POST one photo on a fresh connection (as a new client would); status 0 when nothing came back."""
    host, port = loopback(url)
    body = multipart_body([("image", filename, data)], BOUNDARY)
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}", "Content-Length": str(len(body))}
    began = time.perf_counter()
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("POST", PREDICT, body, headers)
        response = connection.getresponse()
        return Answer(response.status, time.perf_counter() - began, response.read())
    except (OSError, http.client.HTTPException):
        return Answer(0, time.perf_counter() - began, b"")
    finally:
        connection.close()


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS (resident now) and VmHWM (peak resident) of a process and its children, in MB (the largest)."""
    pids = [pid]
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            if f"PPid:\t{pid}\n" in status.read_text():
                pids.append(int(status.parent.name))
        except (OSError, ValueError):
            continue
    found = {"rss": 0.0, "hwm": 0.0}
    for one in pids:
        try:
            lines = Path(f"/proc/{one}/status").read_text().splitlines()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in lines if ":" in line)
        for key, name in (("rss", "VmRSS"), ("hwm", "VmHWM")):
            if name in fields:
                found[key] = max(found[key], int(fields[name].split()[0]) / 1024)
    return found


def big_photo(fmt: str, megapixels: float = 33.0, seed: int = 0) -> bytes:
    """A 4:3 photo of ``megapixels`` encoded as ``fmt`` in memory: smooth, so 0.1-1 MB on the wire.

    Low-frequency colour noise scaled up (in flat blocks for PNG): it compresses far better than
    a real photo and decodes exactly like a full-size one (the decoder cannot know).
    """
    height = int((megapixels * 1e6 * 3 / 4) ** 0.5)
    width = int(height * 4 / 3)
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(30, 220, (12, 16, 3), dtype=np.uint8), "RGB")
    image = small.resize((width, height), Image.Resampling.NEAREST if fmt == "PNG" else Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    options = {"PNG": {"compress_level": 1}, "WEBP": {"quality": 60, "method": 0}, "JPEG": {"quality": 80}}
    image.save(buffer, fmt, **options.get(fmt, {}))
    return buffer.getvalue()
