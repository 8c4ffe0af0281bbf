"""Connection floods against the waitress server (issue 27, item 3): per-address cap, minimum rate, admin port.

The first tests run util.server's own servers in-process around a plain WSGI app (a second or
two each); the last starts the production command (slow).
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import requests

from tests.slowclients import ATTACKER, SlowClients, upload
from tests.support import Server, free_port, model_env, sample_bytes
from util.server import AdminLoop, Runner, ServerOptions, admin_only, build_servers


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({"path": environ["PATH_INFO"]}).encode()]


@contextmanager
def running(options: ServerOptions) -> Iterator[int]:
    servers = build_servers(hello, options, max_body_bytes=10_000)
    runner = Runner(servers, drain_s=1, poll_s=0.05)
    loop = threading.Thread(target=runner.serve, daemon=True)
    loop.start()
    try:
        yield int(servers[0].effective_port)
    finally:
        runner.request_stop()
        loop.join(5)
        runner.drain()


def connect(port: int, source: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    sock.sendall(b"P")  # the start of a request
    return sock


def closed_by_server(sock: socket.socket, wait: float) -> bool:
    sock.settimeout(wait)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def get(port: int, path: str = "/") -> int:
    return requests.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code


def test_accepted_connections_send_without_delay():
    """TCP_NODELAY on every accepted socket, as waitress sets it: without it a kept-alive client waits for
    Nagle's algorithm against its own delayed ACK, ~40 ms an answer (bench.peers measured 57 ms for 17)."""
    servers = build_servers(hello, ServerOptions(host="127.0.0.1", port=0, threads=1), max_body_bytes=10_000)
    server = servers[0]
    try:
        client = socket.create_connection(("127.0.0.1", int(server.effective_port)), timeout=5)
        server.handle_accept()  # what the loop does when the listening socket is readable
        channels = [c for c in server._map.values() if c is not server and hasattr(c, "counted_address")]
        assert len(channels) == 1
        assert channels[0].socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        client.close()
    finally:
        for channel in list(server._map.values()):
            channel.close()


def test_connections_over_the_per_address_cap_are_closed_and_others_still_served():
    with running(ServerOptions(host="127.0.0.1", port=0, threads=2, connections_per_address=3)) as port:
        held = [connect(port, ATTACKER) for _ in range(5)]
        time.sleep(0.3)
        closed = [closed_by_server(sock, 0.3) for sock in held]
        assert closed.count(True) == 2 and closed[:3] == [False] * 3
        assert get(port) == 200  # another address: served at once
        for sock in held:
            sock.close()
        time.sleep(0.3)
        again = connect(port, ATTACKER)  # the slots came back
        assert not closed_by_server(again, 0.3)
        again.close()


def test_a_trickling_request_is_cut_off_after_the_grace_period():
    options = ServerOptions(host="127.0.0.1", port=0, threads=2, grace_s=1, min_rate=500, channel_timeout_s=30)
    with running(options) as port:
        trickle = connect(port, ATTACKER)
        began = time.monotonic()
        while not closed_by_server(trickle, 0.2):
            trickle.sendall(b"O")  # a byte every 0.2 s: 5 bytes/s, far under 500
            assert time.monotonic() - began < 5, "the trickling request was never cut off"
        assert time.monotonic() - began > 1  # not before its grace period
        # a request that arrives at once is unaffected, on a connection that stays open
        with requests.Session() as session:
            for _ in range(3):
                assert session.get(f"http://127.0.0.1:{port}/x", timeout=2).status_code == 200
                time.sleep(0.7)


def test_the_admin_port_serves_health_and_metrics_only():
    servers = build_servers(admin_only(hello), ServerOptions(host="127.0.0.1", port=0, threads=1), 1024)
    admin = AdminLoop(servers, poll_s=0.05).start()
    try:
        port = int(servers[0].effective_port)
        for path in ("/health", "/health/live", "/health/ready", "/metrics"):
            assert get(port, path) == 200, path
        refused = requests.post(f"http://127.0.0.1:{port}/Diagnosis/prediction", timeout=2)
        assert refused.status_code == 404 and "admin port" in refused.json()["message"]
        assert refused.headers["X-Content-Type-Options"] == "nosniff"
    finally:
        admin.close()


@pytest.mark.slow
def test_a_flood_from_one_address_leaves_uploads_and_probes_answered(tiny_model_dir, openvino_cache):
    admin_port = free_port()
    env = model_env(
        tiny_model_dir,
        openvino_cache,
        PLANTNET_ADMIN_PORT=str(admin_port),
        PLANTNET_SERVER_CONNECTION_LIMIT="100",
        PLANTNET_SERVER_CONNECTIONS_PER_ADDRESS="20",
    )
    server = Server(env, output=subprocess.DEVNULL)
    try:
        server.wait_healthy()
        leaf = sample_bytes("tomato_healthy.jpg")
        with SlowClients(server.url, 300, "headers", source=ATTACKER) as flood:  # 3x the connection limit
            time.sleep(1.5)
            assert flood.alive <= 20
            for _ in range(3):
                answer = upload(server.url, leaf, timeout=5)
                assert answer.status == 200 and answer.seconds < 1.0
                live = requests.get(f"{server.url}/health/live", timeout=1)
                admin = requests.get(f"http://127.0.0.1:{admin_port}/health/ready", timeout=1)
                assert live.status_code == 200 and admin.status_code == 200
        metrics = requests.get(f"http://127.0.0.1:{admin_port}/metrics", timeout=2)
        assert metrics.status_code == 200 and "plantnet_http_requests_total" in metrics.text
    finally:
        assert server.stop() == 0
