"""The production server's own parts: its settings, its one-line logs, its JSON refusals."""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading

import pytest

from util.config import OneLineFormatter
from util.server import Runner, ServerOptions, build_servers


def test_options_default_to_loopback_and_open_up_where_a_platform_sets_port():
    assert ServerOptions.from_env({}) == ServerOptions(host="127.0.0.1", port=5000)
    assert ServerOptions.from_env({"PORT": "8080"}).host == "0.0.0.0"
    assert ServerOptions.from_env({"PORT": "8080", "HOST": "127.0.0.1"}).host == "127.0.0.1"
    assert ServerOptions.from_env({"PORT": ""}) == ServerOptions.from_env({})  # empty is unset
    tuned = ServerOptions.from_env(
        {
            "PLANTNET_SERVER_THREADS": "4",
            "PLANTNET_SERVER_CONNECTION_LIMIT": "50",
            "PLANTNET_SERVER_CHANNEL_TIMEOUT_S": "5",
            "PLANTNET_SERVER_DRAIN_S": "0",
            "PLANTNET_ADMIN_PORT": "9000",
            "PLANTNET_SERVER_CONNECTIONS_PER_ADDRESS": "8",
            "PLANTNET_SERVER_MIN_RATE": "100",
            "PLANTNET_SERVER_GRACE_S": "5",
        }
    )
    assert (tuned.threads, tuned.connection_limit, tuned.channel_timeout_s, tuned.drain_s) == (4, 50, 5, 0.0)
    assert (tuned.admin_port, tuned.connections_per_address, tuned.min_rate, tuned.grace_s) == (9000, 8, 100, 5)
    assert ServerOptions.from_env({}).admin_port == 0  # no admin port unless asked


@pytest.mark.parametrize(("name", "value"), [("PORT", "http"), ("PLANTNET_SERVER_THREADS", "0")])
def test_bad_options_are_named(name, value):
    with pytest.raises(ValueError, match=name):
        ServerOptions.from_env({name: value})


def test_a_record_with_a_traceback_stays_on_one_line():
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord("plantnet", logging.ERROR, __file__, 1, "failed %s", ("x",), sys.exc_info())
    text = OneLineFormatter("%(levelname)s %(name)s %(message)s").format(record)
    assert "\n" not in text and text.startswith("ERROR plantnet failed x") and "RuntimeError: boom" in text


def test_the_servers_own_refusals_are_json():
    def app(environ, start_response):  # never reached: the request is refused before the app
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    servers = build_servers(app, ServerOptions(host="127.0.0.1", port=0, threads=1), max_body_bytes=1000)
    runner = Runner(servers, drain_s=1)
    loop = threading.Thread(target=runner.serve, daemon=True)
    loop.start()
    try:
        port = servers[0].effective_port
        with socket.create_connection(("127.0.0.1", int(port)), timeout=5) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
            response = b""
            while chunk := sock.recv(4096):
                response += chunk
    finally:
        runner.request_stop()
        loop.join(5)
        runner.drain()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert b"Content-Type: application/json" in head
    assert "limit" in json.loads(body)["message"]
    assert b"waitress" not in response.lower()
