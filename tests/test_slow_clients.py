"""Slow clients cannot starve the production server: normal uploads are answered at once meanwhile.

Each test runs the Procfile's web command on the tiny model, on 127.0.0.1, for a few seconds.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time

import pytest

from tests.slowclients import SlowClients, memory_mb, upload
from tests.support import PREDICT, TINY_LABELS, Server, model_env, sample_bytes

pytestmark = pytest.mark.slow

LEAF = sample_bytes("tomato_healthy.jpg")
CHANNEL_TIMEOUT_S = 3
UPLOAD_LIMIT = 1024 * 1024  # one photo; the many-photo endpoint takes twice that


@pytest.fixture(scope="module")
def server(tiny_model_dir, openvino_cache):
    env = model_env(
        tiny_model_dir,
        openvino_cache,
        PLANTNET_SERVER_CHANNEL_TIMEOUT_S=str(CHANNEL_TIMEOUT_S),
        PLANTNET_MAX_UPLOAD_BYTES=str(UPLOAD_LIMIT),
        PLANTNET_MAX_REQUEST_BYTES=str(2 * UPLOAD_LIMIT),
    )
    server = Server(env, output=subprocess.DEVNULL)
    try:
        server.wait_healthy()
        assert upload(server.url, LEAF).status == 200
        yield server
    finally:
        assert server.stop() == 0


def assert_answers_correctly(url: str) -> None:
    answer = upload(url, LEAF, timeout=10)
    assert answer.status == 200, answer.body
    assert json.loads(answer.body)["label"] in TINY_LABELS


@pytest.mark.parametrize("mode", ["body", "headers"])
def test_uploads_are_answered_within_a_second_while_100_clients_trickle(server, mode):
    before = memory_mb(server.process.pid)["rss"]
    with SlowClients(server.url, 100, mode) as slow:
        time.sleep(1.0)
        answers = []
        for _ in range(5):
            answers.append(upload(server.url, LEAF, timeout=10))
            time.sleep(1.0)
        assert slow.alive == 100  # still held by the I/O loop, costing no request thread
        during = memory_mb(server.process.pid)["rss"]
    assert [a.status for a in answers] == [200] * 5
    assert max(a.seconds for a in answers) < 1.0, [round(a.seconds, 3) for a in answers]
    assert during - before < 50, f"RSS grew from {before:.0f} to {during:.0f} MB"
    assert_answers_correctly(server.url)


def test_a_silent_connection_is_closed_after_the_channel_timeout(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=CHANNEL_TIMEOUT_S + 15) as sock:
        sock.sendall(f"POST {PREDICT} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
        began = time.monotonic()
        assert sock.recv(1024) == b""  # closed by the server, not by our timeout
        assert time.monotonic() - began < CHANNEL_TIMEOUT_S + 12
    assert_answers_correctly(server.url)


def test_a_body_over_the_limit_is_refused_as_json_before_it_is_read(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            f"POST {PREDICT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=XyZ\r\n"
            f"Content-Length: {50 * UPLOAD_LIMIT}\r\n\r\n".encode()
        )
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), response
    assert b"application/json" in head
    assert "limit" in json.loads(body)["message"]


def test_sigterm_with_slow_clients_connected_answers_in_flight_work_and_exits_0(tiny_model_dir, openvino_cache):
    server = Server(
        model_env(tiny_model_dir, openvino_cache, PLANTNET_MAX_WAIT_MS="1500", PLANTNET_MAX_BATCH_SIZE="64"),
        output=subprocess.DEVNULL,
    )
    try:
        server.wait_healthy()
        with SlowClients(server.url, 50, "body"):
            answers = []
            client = threading.Thread(target=lambda: answers.append(upload(server.url, LEAF, timeout=20)))
            client.start()
            time.sleep(0.7)  # the upload now waits in the batcher for company
            began = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            client.join(20)
            assert server.process.wait(20) == 0
        assert [a.status for a in answers] == [200]
        assert time.monotonic() - began < 10  # the trickling connections did not hold the shutdown up
    finally:
        server.stop()
