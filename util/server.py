"""The production server: ``python -m util.server`` (the Procfile's ``web`` command).

waitress reads every request, headers and body, in its I/O loop before a worker thread sees
it, so clients that send a byte a second cost a socket and a few kilobytes each, never one of
the request threads: a normal upload is answered at once while hundreds of them trickle.

Start-up: logging is configured (one line per record), glibc malloc is tuned (util.budget),
the model is converted to OpenVINO once if needed (a damaged cached IR is converted again), then
loaded (``application.app``) before the port is opened, and warmed in the inference thread. A model
that cannot load stops start-up with exit code 3 and one ``cannot start:`` line; so does a warm-up
that fails three times, and an inference thread that stops later ends the process (exit 3) so
that it is restarted. SIGTERM or SIGINT: stop accepting, let the requests in flight finish
(up to ``PLANTNET_SERVER_DRAIN_S``), close idle connections, stop the batcher, exit 0.

Environment: ``HOST`` (default 127.0.0.1, or 0.0.0.0 when ``PORT`` is set) and ``PORT`` (5000), the
names platforms set; every other knob, the server's included (``PLANTNET_SERVER_*``, ``PLANTNET_ADMIN_PORT``),
is a field of util.config.Settings.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from util import messages
from util.config import STARTUP_FAILED, Settings, configure_logging

log = logging.getLogger("plantnet.server")
# Room for the multipart envelope around the largest request the app takes (one photo of
# PLANTNET_MAX_UPLOAD_BYTES, or PLANTNET_MAX_REQUEST_BYTES of photos): bodies up to this much
# larger still reach the app, which answers its own JSON 413; larger ones are refused unread.
MULTIPART_SLACK_BYTES = 64 * 1024


@dataclass(frozen=True)
class ServerOptions:
    """The server's own knobs: HOST and PORT from the environment, the others from Settings."""

    host: str
    port: int
    threads: int = 16
    connection_limit: int = 1000
    channel_timeout_s: int = 30
    drain_s: float = 30.0
    admin_port: int = 0  # 0: no admin port; else health and metrics are served on it too
    connections_per_address: int = 100  # more from one client address are closed at accept
    min_rate: int = 500  # bytes a second a request must average once its grace period is over
    grace_s: int = 20  # how long a request may take to arrive before min_rate applies

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ServerOptions:
        environ = os.environ if environ is None else environ
        return cls.from_settings(Settings.from_env(environ), environ)

    @classmethod
    def from_settings(cls, settings: Settings, environ: dict[str, str] | None = None) -> ServerOptions:
        environ = os.environ if environ is None else environ
        default_host = "0.0.0.0" if environ.get("PORT") else "127.0.0.1"  # empty PORT = unset, as for the port
        return cls(
            host=environ.get("HOST") or default_host,
            port=_port(environ.get("PORT")),
            threads=settings.server_threads,
            connection_limit=settings.server_connection_limit,
            channel_timeout_s=settings.server_channel_timeout_s,
            drain_s=settings.server_drain_s,
            admin_port=settings.admin_port,
            connections_per_address=settings.server_connections_per_address,
            min_rate=settings.server_min_rate,
            grace_s=settings.server_grace_s,
        )


def _port(raw: str | None, default: int = 5000) -> int:
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"PORT={raw!r} is not a number") from None
    if value < 1:
        raise ValueError("PORT must be at least 1")
    return value


def raise_open_file_limit(wanted: int) -> None:
    """Lift the soft descriptor limit toward ``wanted`` (one per connection), within the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def prepare_model(settings) -> None:
    """Convert the model to OpenVINO once before serving, so the app's engine only loads the IR."""
    if settings.backend == "tensorflow":
        return
    try:
        import openvino  # noqa: F401
    except ImportError:
        return
    from util.engine import openvino_ir
    from util.model_dir import find_artifact

    openvino_ir(find_artifact(settings.model_dir), settings.openvino_cache)


def load_app():
    """The process's one app: ``application.app`` loads and warms the model on first access."""
    import application

    return application.app


def build_servers(app, options: ServerOptions, max_body_bytes: int, dispatcher=None) -> list:
    """Create (and bind) the waitress servers for ``options``; they share one socket map and thread pool."""
    from waitress.adjustments import Adjustments
    from waitress.task import ThreadedTaskDispatcher

    adj = Adjustments(
        host=options.host,
        port=options.port,
        threads=options.threads,
        connection_limit=options.connection_limit,
        channel_timeout=options.channel_timeout_s,
        cleanup_interval=max(1, min(5, options.channel_timeout_s, options.grace_s)),
        max_request_body_size=max_body_bytes,
        max_request_header_size=64 * 1024,
        inbuf_overflow=256 * 1024,  # a body past this waits in a temporary file, not in memory
        recv_bytes=65536,
        asyncore_use_poll=True,  # select() stops at 1024 descriptors
        backlog=2048,
        ident="",
        expose_tracebacks=False,
    )
    if dispatcher is None:
        dispatcher = ThreadedTaskDispatcher()
        dispatcher.set_thread_count(adj.threads)
    server_class = _guarded_server(options)
    socket_map: dict = {}
    return [server_class(app, socket_map, dispatcher=dispatcher, adj=adj, sockinfo=info) for info in adj.listen]


def build_admin_servers(app, options: ServerOptions) -> list:
    """Servers on ``options.admin_port`` for health and metrics only, with their own socket map and 2 threads.

    A flood that fills the public port's connection limit or its request threads leaves these alone,
    so the kubelet's probes and Prometheus still get answers.
    """
    from waitress.task import ThreadedTaskDispatcher

    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(2)
    admin = ServerOptions(host=options.host, port=options.admin_port, threads=2, connection_limit=64)
    return build_servers(admin_only(app), admin, max_body_bytes=1024, dispatcher=dispatcher)


ADMIN_PATHS = frozenset({"/health", "/health/live", "/health/ready", "/metrics"})


def admin_only(app):
    """The app's health and metrics routes; a JSON 404 for anything else."""

    def admin_app(environ, start_response):
        if environ.get("PATH_INFO") in ADMIN_PATHS and environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
            return app(environ, start_response)
        body = json.dumps({"message": "The admin port serves /health, /health/live, /health/ready and /metrics."})
        start_response("404 Not Found", [("Content-Type", "application/json"), *SECURITY_HEADERS])
        return [body.encode()]

    return admin_app


# What the app adds to its own answers (util.api.security), for the answers waitress writes itself.
SECURITY_HEADERS = (("X-Content-Type-Options", "nosniff"), ("Content-Security-Policy", "frame-ancestors 'none'"))


def _guarded_server(options: ServerOptions):
    """A waitress server class that caps connections per client address and closes requests that trickle.

    Per address: the connection past ``connections_per_address`` from one address is closed as soon as
    it is accepted, so one client cannot fill the connection limit. Trickling: a request still
    arriving (headers or body) after ``grace_s`` at less than ``min_rate`` bytes a second on average
    is closed at the next clean-up (as Apache's mod_reqtimeout ``MinRate``); a request being answered
    is never cut off, and an idle keep-alive connection is left to ``channel_timeout_s``.
    """
    from collections import Counter

    from waitress.server import TcpWSGIServer

    channel_class = _json_error_channel()

    class GuardedServer(TcpWSGIServer):
        def __init__(self, *args, **kwargs):
            self.per_address: Counter[str] = Counter()
            self.refused_connections = 0
            self.cut_off_requests = 0
            super().__init__(*args, **kwargs)

        def handle_accept(self) -> None:
            try:
                accepted = self.accept()
                if accepted is None:
                    return
                conn, addr = accepted
                # waitress's own handle_accept sets TCP_NODELAY here: without it a kept-alive client waits
                # ~40 ms for each answer (Nagle's algorithm against the client's delayed ACK).
                self.set_socket_options(conn)
            except OSError:
                return
            address = str(addr[0]) if isinstance(addr, tuple) else str(addr)
            if self.per_address[address] >= options.connections_per_address:
                self.refused_connections += 1
                if self.refused_connections in (1, 10, 100) or self.refused_connections % 1000 == 0:
                    log.warning(
                        "%d connections closed at accept: over %d from one address (latest %s)",
                        self.refused_connections,
                        options.connections_per_address,
                        address,
                    )
                conn.close()
                return
            try:
                channel = channel_class(self, conn, addr, self.adj, map=self._map)
            except OSError:  # the client left before the channel was set up
                conn.close()
                return
            channel.counted_address = address
            self.per_address[address] += 1

        def forget(self, address: str) -> None:
            self.per_address[address] -= 1
            if self.per_address[address] <= 0:
                del self.per_address[address]

        def maintenance(self, now: float) -> None:
            super().maintenance(now)
            for channel in list(self.active_channels.values()):
                if channel.trickling(now, options.grace_s, options.min_rate):
                    channel.will_close = True
                    self.cut_off_requests += 1
                    if self.cut_off_requests in (1, 10, 100) or self.cut_off_requests % 1000 == 0:
                        log.warning(
                            "%d requests cut off: under %d bytes/s after %d s",
                            self.cut_off_requests,
                            options.min_rate,
                            options.grace_s,
                        )

    GuardedServer.channel_class = channel_class
    return GuardedServer


def _json_error_channel():
    """A waitress channel whose own error answers (413, 400, 431, 500) are JSON like the app's.

    It also measures how fast the request it is reading arrives (see ``_guarded_server``).
    """
    from waitress.channel import HTTPChannel
    from waitress.task import ErrorTask

    class JsonErrorTask(ErrorTask):
        def execute(self) -> None:
            error = self.request.error
            if error.code == 413:
                message = messages.UPLOAD_TOO_LARGE_UNREAD
            else:
                message = f"{error.reason}: {str(error.body).strip()}"
            body = json.dumps({"message": message}).encode()
            self.status = f"{error.code} {error.reason}"
            self.response_headers.append(("Content-Type", "application/json"))
            self.response_headers.extend(SECURITY_HEADERS)
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)

    class JsonErrorChannel(HTTPChannel):
        error_task_class = JsonErrorTask
        counted_address: str | None = None
        arriving_since: float | None = None  # when the first byte of the request being read came
        arriving_bytes = 0

        def received(self, data: bytes) -> bool:
            if self.arriving_since is None:
                self.arriving_since, self.arriving_bytes = time.time(), 0
            self.arriving_bytes += len(data)
            accepted = super().received(data)
            if self.request is None:  # every request in ``data`` is complete: nothing is arriving
                self.arriving_since = None
            return accepted

        def trickling(self, now: float, grace_s: float, min_rate: float) -> bool:
            """A request has been arriving for longer than ``grace_s`` at under ``min_rate`` bytes a second."""
            if self.arriving_since is None or self.requests or self.will_close:
                return False
            elapsed = now - self.arriving_since
            return elapsed > grace_s and self.arriving_bytes < min_rate * elapsed

        def del_channel(self, map=None) -> None:
            super().del_channel(map)
            if self.counted_address is not None:
                self.server.forget(self.counted_address)
                self.counted_address = None

    return JsonErrorChannel


class Runner:
    """Serve until a stop signal, then drain: the I/O loop keeps running so answers get written."""

    def __init__(
        self, servers: list, drain_s: float, poll_s: float = 0.2, watch: Callable[[], str | None] | None = None
    ):
        """``watch`` is asked once a poll; a message from it stops the server (``failure`` keeps it)."""
        self.servers = servers
        self.watch = watch
        self.failure: str | None = None
        self.map = servers[0]._map
        self.dispatcher = servers[0].task_dispatcher
        self.adj = servers[0].adj
        self.drain_s = drain_s
        self.poll_s = poll_s
        self.stopping = threading.Event()

    def request_stop(self, signum: int | None = None, frame: Any = None) -> None:
        self.stopping.set()

    def serve(self) -> None:
        from waitress import wasyncore

        while not self.stopping.is_set():
            wasyncore.loop(timeout=self.poll_s, map=self.map, use_poll=True, count=1)
            if self.watch is not None and (problem := self.watch()):
                self.failure = problem
                return

    def drain(self) -> bool:
        """Stop accepting, finish what is in flight (True if all of it finished in time), close the rest."""
        from waitress import wasyncore

        for server in self.servers:
            wasyncore.dispatcher.close(server)  # the listening socket only; the wake-up trigger stays
        deadline = time.monotonic() + self.drain_s
        while True:
            busy = self._close_idle_channels()
            if not busy or time.monotonic() >= deadline:
                break
            wasyncore.loop(timeout=0.05, map=self.map, use_poll=True, count=1)
        self.dispatcher.shutdown(cancel_pending=True, timeout=max(0.1, deadline - time.monotonic()))
        for server in self.servers:
            server.trigger.close()
        wasyncore.close_all(self.map)
        return not busy

    def _close_idle_channels(self) -> int:
        """Close connections with no request being served and nothing left to send; count the others."""
        busy = 0
        for server in self.servers:
            for channel in list(server.active_channels.values()):
                if channel.requests or channel.total_outbufs_len:
                    busy += 1
                else:
                    channel.handle_close()
        return busy


class AdminLoop:
    """The admin servers' own I/O loop, in a thread: nothing on the public port can delay it."""

    def __init__(self, servers: list, poll_s: float = 0.2):
        self.servers = servers
        self.map = servers[0]._map
        self.poll_s = poll_s
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="admin-io", daemon=True)

    def start(self) -> AdminLoop:
        self.thread.start()
        return self

    def _run(self) -> None:
        from waitress import wasyncore

        while not self.stopping.is_set():
            wasyncore.loop(timeout=self.poll_s, map=self.map, use_poll=True, count=1)

    def close(self) -> None:
        from waitress import wasyncore

        self.stopping.set()
        self.thread.join(5)
        self.servers[0].task_dispatcher.shutdown(cancel_pending=True, timeout=1)
        for server in self.servers:
            server.trigger.close()
        wasyncore.close_all(self.map)


def main() -> int:
    from util.budget import tune_malloc

    tune_malloc()  # before any request thread exists
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    configure_logging()  # before the settings are read: a bad one is logged on one line too
    try:
        from util.model_dir import ModelLoadError

        settings = Settings.from_env()
        configure_logging(settings.log_level)
        options = ServerOptions.from_settings(settings)
        prepare_model(settings)
    except (ModelLoadError, ValueError) as exc:
        log.error("cannot start: %s", exc)
        return STARTUP_FAILED
    try:
        app = load_app()  # application.app logs "cannot start: ..." and exits 3 itself on a broken model
    except (ModelLoadError, ValueError) as exc:
        log.error("cannot start: %s", exc)
        return STARTUP_FAILED
    raise_open_file_limit(options.connection_limit + 256)
    try:
        largest = max(settings.max_upload_bytes, getattr(settings, "max_request_bytes", 0))
        servers = build_servers(app, options, largest + MULTIPART_SLACK_BYTES)
    except OSError as exc:
        log.error("cannot start: cannot listen on %s:%s: %s", options.host, options.port, exc.strerror or exc)
        _close_service(app)
        return STARTUP_FAILED
    admin = None
    if options.admin_port:
        try:
            admin = AdminLoop(build_admin_servers(app, options)).start()
        except OSError as exc:
            log.error("cannot start: cannot listen on %s:%s: %s", options.host, options.admin_port, exc.strerror or exc)
            _close_service(app)
            return STARTUP_FAILED
        log.info("health and metrics also on http://%s:%s", options.host, options.admin_port)
    runner = Runner(servers, options.drain_s, watch=lambda: _engine_failure(app))
    signal.signal(signal.SIGTERM, runner.request_stop)
    signal.signal(signal.SIGINT, runner.request_stop)
    for server in servers:
        log.info(
            "listening on http://%s:%s (%d threads, up to %d connections)",
            server.effective_host,
            server.effective_port,
            options.threads,
            options.connection_limit,
        )
    runner.serve()
    if runner.failure:
        log.error("cannot start: %s" if "warm-up" in runner.failure else "stopping: %s", runner.failure)
    log.info("stopping: finishing requests in flight (up to %.0f s)", options.drain_s)
    finished = runner.drain()
    if admin is not None:
        admin.close()
    _close_service(app)
    if runner.failure:
        return STARTUP_FAILED
    if finished:
        log.info("stopped")
    else:
        log.warning("stopped with requests still unanswered after %.0f s", options.drain_s)
    return 0


def _engine_failure(app) -> str | None:
    """Why the inference thread stopped for good (the process should end so it is restarted), or None."""
    from util.service import EXTENSION

    service = app.extensions.get(EXTENSION)
    if service is None or service.alive:
        return None
    failure = service.batcher.failure
    if not service.ready.is_set():
        return f"warm-up failed: {failure}"
    return f"the inference thread stopped: {failure}"


def _close_service(app) -> None:
    """Stop the diagnosis service's batcher (it answers what is queued first)."""
    from util.service import EXTENSION

    service = app.extensions.get(EXTENSION)
    if service is not None:
        service.close()


if __name__ == "__main__":
    sys.exit(main())
