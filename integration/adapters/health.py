"""What an operator or an orchestrator can ask the running consumer: is it alive, is it ready, what has it done.

    GET /livez     200 while the consumer loop turns (it beats at least every few seconds), else 503
                   (a liveness probe restarts the process on it); /healthz is the same, its older name
    GET /readyz    200 when the mappings have loaded, the consumer is connected to the broker and
                   consuming every queue, and the audit store answers (the idle consumer asks it every
                   few seconds); else 503 with one line per unavailable dependency: what, since how
                   many seconds, and why
    GET /metrics   Prometheus text format (`integration.service.metrics`); the gauges read from the store
                   and the broker are refreshed by the consumer loop, never by a scrape

Served by the standard library's WSGI server (`INTEGRATION_HEALTH_LISTEN`, default 127.0.0.1:9464;
empty to switch it off), each connection on a daemon thread of its own that lasts `REQUEST_TIMEOUT`
seconds at most in all (a client trickling its request is cut off like a silent one), at most
`MAX_CONNECTIONS` at once (more are closed at once, said in one line a minute), so idle, half-sent or
trickling connections (a port scanner, a stuck scraper) cannot hold up the probes. Each process needs a
port of its own: an address that cannot be bound (another instance on the port) is a configuration
error, so that no replica runs unseen by its probes and by Prometheus. Every change of a dependency's
state is also one log line, so the same story is in the logs.
"""

from __future__ import annotations

import errno
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import structlog
from prometheus_client import make_wsgi_app

from integration.errors import ConfigurationError
from integration.log import one_line
from integration.service import metrics

log = structlog.get_logger("integration.health")
STALE_AFTER = 60.0  # seconds without a beat before /livez says the loop is stuck
REQUEST_TIMEOUT = 5.0  # seconds a connection may last in all (a slow client too) before the server closes it
MAX_CONNECTIONS = 256  # connections served at once; one more is closed unanswered (and said, once a minute)
MAX_PORT = 65_535
MAPPINGS = "mappings"  # the dependency `run` marks down until the mappings and schemas have loaded

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class Health:
    """The state of the consumer's dependencies, shared between the consumer loop and the HTTP thread."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._down: dict[str, tuple[float, str]] = {"broker": (clock(), "not connected yet")}
        self._beat = clock()
        metrics.READY.set(0)

    def down(self, dependency: str, reason: str) -> bool:
        """Mark a dependency unavailable; True when it was available until now (a change worth a log line)."""
        with self._lock:
            changed = dependency not in self._down
            self._down[dependency] = (self._down[dependency][0] if not changed else self._clock(), one_line(reason))
        metrics.DEPENDENCY_UP.labels(dependency).set(0)
        metrics.READY.set(0)
        return changed

    def up(self, dependency: str) -> float | None:
        """Mark a dependency available; the seconds it was away when this is a change, else None."""
        with self._lock:
            since = self._down.pop(dependency, None)
            ready = not self._down
        metrics.DEPENDENCY_UP.labels(dependency).set(1)
        metrics.READY.set(1 if ready else 0)
        return None if since is None else self._clock() - since[0]

    def available(self, dependency: str) -> bool:
        """Whether `dependency` is not marked down (the metrics refresher asks before querying the store)."""
        with self._lock:
            return dependency not in self._down

    def beat(self) -> None:
        with self._lock:
            self._beat = self._clock()
        metrics.LOOP_BEAT.set_to_current_time()

    @property
    def ready(self) -> bool:
        with self._lock:
            return not self._down

    def problems(self) -> list[str]:
        now = self._clock()
        with self._lock:
            return [f"{d} unavailable for {now - since:.0f} s: {why}" for d, (since, why) in sorted(self._down.items())]

    @property
    def alive(self) -> bool:
        with self._lock:
            return self._clock() - self._beat < STALE_AFTER


def application(health: Health) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """The WSGI application for /livez (and /healthz), /readyz and /metrics."""
    prometheus = make_wsgi_app()

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return prometheus(environ, start_response)  # type: ignore[no-any-return]
        if path in ("/livez", "/healthz"):
            ok, lines = health.alive, ["alive" if health.alive else "the consumer loop has not turned for a minute"]
        elif path == "/readyz":
            ok, lines = health.ready, health.problems() or ["ready"]
        else:
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"not found: /livez, /readyz or /metrics\n"]
        start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain; charset=utf-8")])
        return ["\n".join(lines).encode() + b"\n"]

    return app


class _Quiet(WSGIRequestHandler):
    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(REQUEST_TIMEOUT)  # before any read: a silent client times out

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the standard library's name
        """Probes every few seconds would flood the log; the state changes are logged instead."""


def _cut(request: Any) -> None:
    """End a connection past its deadline: the handler's next read or write fails, and its thread ends."""
    with suppress(OSError):
        request.shutdown(socket.SHUT_RDWR)


class _Server(ThreadingMixIn, WSGIServer):
    """A WSGI server with one daemon thread per connection, at most MAX_CONNECTIONS of them at once."""

    daemon_threads = True  # a connection never keeps the process from ending
    block_on_close = False  # nor does server_close wait for a slow client

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._said_full = -60.0

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):  # full: refuse this one rather than queue behind the rest
            self.shutdown_request(request)
            now = time.monotonic()
            if now - self._said_full >= 60:
                self._said_full = now
                log.warning(
                    "health endpoint full: connections refused", most=MAX_CONNECTIONS, seconds_each=REQUEST_TIMEOUT
                )
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started: give the slot back
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        # The whole connection has REQUEST_TIMEOUT: a client trickling a header line every few seconds is cut off
        # as one that says nothing (the socket timeout alone bounds each read, not the request).
        deadline = threading.Timer(REQUEST_TIMEOUT, _cut, (request,))
        deadline.daemon = True
        deadline.start()
        try:
            super().process_request_thread(request, client_address)
        finally:
            deadline.cancel()
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went silent (the timeout) or away is no error of ours; anything else is logged in one line."""
        failure = sys.exc_info()[1]
        if isinstance(failure, (TimeoutError, ConnectionError)):
            return
        log.warning("health request failed", error=one_line(repr(failure)))


HEALTH_LISTEN = "INTEGRATION_HEALTH_LISTEN"


def health_address(listen: str, setting: str = HEALTH_LISTEN) -> tuple[str, int]:
    """`host:port` as (host, port), an empty host 127.0.0.1, the port 0-65535 (0: a free one). ConfigurationError
    naming `setting` (the environment variable: a lone `run` and the supervisor of `run --processes` say the
    same) otherwise."""
    host, colon, port = listen.rpartition(":")
    bracketed = host.startswith("[") or host.endswith("]")  # an IPv6 address: [::1]:9464
    if (
        not colon
        or not port.isascii()
        or not port.isdigit()
        or int(port) > MAX_PORT
        or (bracketed and not (len(host) > 2 and host.startswith("[") and host.endswith("]")))
    ):
        raise ConfigurationError(
            f"{setting}={listen!r} is not host:port with a port 0-{MAX_PORT} (e.g. 127.0.0.1:9464 or [::1]:9464; "
            "0: a free port; empty: off)"
        )
    return (host[1:-1] if bracketed else host) or "127.0.0.1", int(port)


def serve(health: Health, listen: str, setting: str = HEALTH_LISTEN) -> WSGIServer | None:
    """Serve the endpoints on `listen` ("host:port"; port 0 picks a free one) in a daemon thread.

    Returns the server (its `server_port` is the port bound), or None when switched off (`listen` empty).
    ConfigurationError, naming `setting` (INTEGRATION_HEALTH_LISTEN, or the MLLP listener's), when `listen`
    is no host:port or cannot be bound (the port in use: most often another instance on one host, each of
    which needs a port of its own)."""
    if not listen:
        return None
    host, number = health_address(listen, setting)
    try:
        server = make_server(host, number, application(health), server_class=_Server, handler_class=_Quiet)
    except OSError as exc:
        why = getattr(exc, "strerror", None) or exc
        if exc.errno != errno.EADDRINUSE:  # a typo, a name that does not resolve, a port below 1024
            reason = "not an address of this host, or not one this user may bind"
            raise ConfigurationError(f"{setting}={listen} cannot be bound ({why}): {reason}") from None
        raise ConfigurationError(
            f"{setting}={listen} cannot be bound ({why}): another process, perhaps "
            "another instance, serves there; give each instance a port of its own, or set it empty to switch off "
            "/livez, /readyz and /metrics"
        ) from None
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    log.info("health endpoint", url=f"http://{host or '127.0.0.1'}:{server.server_port}/readyz")
    return server
