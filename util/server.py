"""The production server: ``python -m util.server`` (the Procfile's ``web`` command).

waitress reads every request, headers and body, in its I/O loop before a worker thread sees
it, so clients that send a byte a second cost a socket and a few kilobytes each, never one of
the request threads: a normal upload is answered at once while hundreds of them trickle.

Start-up: logging is configured (one line per record), glibc malloc is tuned (util.budget),
the model is converted to OpenVINO once if needed, then loaded and warmed (``application.app``)
before the port is opened. A model that cannot load stops start-up with exit code 3 and one
``cannot start:`` line. SIGTERM or SIGINT: stop accepting, let the requests in flight finish
(up to ``PLANTNET_SERVER_DRAIN_S``), close idle connections, stop the batcher, exit 0.

Environment: ``HOST`` (default 127.0.0.1, or 0.0.0.0 when ``PORT`` is set), ``PORT`` (5000),
``PLANTNET_SERVER_THREADS`` (16), ``PLANTNET_SERVER_CONNECTION_LIMIT`` (1000),
``PLANTNET_SERVER_CHANNEL_TIMEOUT_S`` (30, how long a connection may stay silent),
``PLANTNET_SERVER_DRAIN_S`` (30), plus every ``PLANTNET_*`` setting of util.config.
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
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("plantnet.server")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
STARTUP_FAILED = 3
# Room for the multipart envelope around the largest request the app takes (one photo of
# PLANTNET_MAX_UPLOAD_BYTES, or PLANTNET_MAX_REQUEST_BYTES of photos): bodies up to this much
# larger still reach the app, which answers its own JSON 413; larger ones are refused unread.
MULTIPART_SLACK_BYTES = 64 * 1024


@dataclass(frozen=True)
class ServerOptions:
    """The server's own knobs, from the environment."""

    host: str
    port: int
    threads: int = 16
    connection_limit: int = 1000
    channel_timeout_s: int = 30
    drain_s: float = 30.0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ServerOptions:
        environ = os.environ if environ is None else environ
        default_host = "0.0.0.0" if environ.get("PORT") else "127.0.0.1"  # empty PORT = unset, as for the port
        return cls(
            host=environ.get("HOST") or default_host,
            port=_number(environ, "PORT", 5000),
            threads=_number(environ, "PLANTNET_SERVER_THREADS", cls.threads),
            connection_limit=_number(environ, "PLANTNET_SERVER_CONNECTION_LIMIT", cls.connection_limit),
            channel_timeout_s=_number(environ, "PLANTNET_SERVER_CHANNEL_TIMEOUT_S", cls.channel_timeout_s),
            drain_s=float(_number(environ, "PLANTNET_SERVER_DRAIN_S", cls.drain_s, float)),
        )


def _number(environ: dict[str, str], name: str, default: Any, kind: type = int) -> Any:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None
    if value < 1 and name != "PLANTNET_SERVER_DRAIN_S":
        raise ValueError(f"{name} must be at least 1")
    return value


class OneLineFormatter(logging.Formatter):
    """The app's log format, with any traceback folded onto the record's one line."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text.replace("\r", "").replace("\n", " | ") if "\n" in text else text


def configure_logging(level: str = "INFO") -> None:
    """One line per record on stderr, for the whole process (the app factory configures nothing)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # waitress warns "Task queue depth is N" on every request once all threads are busy: a
    # normal moment under load, not news.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)


def raise_open_file_limit(wanted: int) -> None:
    """Lift the soft descriptor limit toward ``wanted`` (one per connection), within the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def prepare_model(settings) -> None:
    """Convert the model to OpenVINO once before serving (as gunicorn.conf.py's on_starting does)."""
    if settings.backend == "tensorflow":
        return
    try:
        import openvino  # noqa: F401
    except ImportError:
        return
    from util.engine import openvino_ir
    from util.model import find_artifact

    openvino_ir(find_artifact(settings.model_dir), settings.openvino_cache)


def load_app():
    """The process's one app: ``application.app`` loads and warms the model on first access."""
    import application

    return application.app


def build_servers(app, options: ServerOptions, max_body_bytes: int) -> list:
    """Create (and bind) the waitress servers for ``options``; they share one socket map and thread pool."""
    from waitress.adjustments import Adjustments
    from waitress.server import TcpWSGIServer
    from waitress.task import ThreadedTaskDispatcher

    channel_class = _json_error_channel()

    class Server(TcpWSGIServer):
        pass

    Server.channel_class = channel_class
    adj = Adjustments(
        host=options.host,
        port=options.port,
        threads=options.threads,
        connection_limit=options.connection_limit,
        channel_timeout=options.channel_timeout_s,
        cleanup_interval=max(1, min(10, options.channel_timeout_s)),
        max_request_body_size=max_body_bytes,
        max_request_header_size=64 * 1024,
        inbuf_overflow=256 * 1024,  # a body past this waits in a temporary file, not in memory
        recv_bytes=65536,
        asyncore_use_poll=True,  # select() stops at 1024 descriptors
        backlog=2048,
        ident="",
        expose_tracebacks=False,
    )
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    socket_map: dict = {}
    return [Server(app, socket_map, dispatcher=dispatcher, adj=adj, sockinfo=info) for info in adj.listen]


def _json_error_channel():
    """A waitress channel whose own error answers (413, 400, 431, 500) are JSON like the app's."""
    from waitress.channel import HTTPChannel
    from waitress.task import ErrorTask

    class JsonErrorTask(ErrorTask):
        def execute(self) -> None:
            error = self.request.error
            if error.code == 413:
                message = "The upload is over the size limit; send a smaller photo."
            else:
                message = f"{error.reason}: {str(error.body).strip()}"
            body = json.dumps({"message": message}).encode()
            self.status = f"{error.code} {error.reason}"
            self.response_headers.append(("Content-Type", "application/json"))
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)

    class JsonErrorChannel(HTTPChannel):
        error_task_class = JsonErrorTask

    return JsonErrorChannel


class Runner:
    """Serve until a stop signal, then drain: the I/O loop keeps running so answers get written."""

    def __init__(self, servers: list, drain_s: float, poll_s: float = 0.2):
        self.servers = servers
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


def main() -> int:
    from util.budget import tune_malloc

    tune_malloc()  # before any request thread exists
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    level = os.environ.get("PLANTNET_LOG_LEVEL") or "INFO"
    try:
        configure_logging(level)
    except ValueError:
        configure_logging("INFO")
    try:
        from util.config import Settings
        from util.model import ModelLoadError

        settings = Settings.from_env()
        options = ServerOptions.from_env()
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
    runner = Runner(servers, options.drain_s)
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
    log.info("stopping: finishing requests in flight (up to %.0f s)", options.drain_s)
    finished = runner.drain()
    _close_service(app)
    if finished:
        log.info("stopped")
    else:
        log.warning("stopped with requests still unanswered after %.0f s", options.drain_s)
    return 0


def _close_service(app) -> None:
    """Stop the diagnosis service's batcher (it answers what is queued first)."""
    from util.service import EXTENSION

    service = app.extensions.get(EXTENSION)
    if service is not None:
        service.close()


if __name__ == "__main__":
    sys.exit(main())
