"""A small TCP proxy whose path can be cut at run time, to take a service away from a test's client
without touching the real service (the shared PostgreSQL, a private RabbitMQ node).

    with TcpProxy("127.0.0.1", 5432) as proxy:
        dsn = f"postgresql://postgres@127.0.0.1:{proxy.port}/test"
        ...
        proxy.refuse()     # the database went away: existing connections reset, new ones refused
        proxy.blackhole()  # a black-holed path: nothing moves either way, new connections get no answer
        proxy.forward()    # healed: new connections work, connections held in the black hole resume

Fidelity: the proxy is a user-space process, so its kernel still completes TCP handshakes and ACKs
what the client sends while black-holed. The client therefore sees a peer that is alive at the TCP
level but silent (like a hung server or a stateful middlebox dropping payload), not lost packets:
TCP keepalives and TCP_USER_TIMEOUT do not fire; only application-level timeouts (libpq's
connect_timeout, a statement/socket read timeout, AMQP heartbeats) detect it.
"""

from __future__ import annotations

import queue
import selectors
import socket
import struct
import threading
from collections.abc import Callable
from types import TracebackType
from typing import cast

FORWARD = "forward"
REFUSE = "refuse"
BLACKHOLE = "blackhole"
_BUFFER_LIMIT = 1 << 20  # per direction; beyond it the proxy stops reading that side (back-pressure)


def _reset(sock: socket.socket | None) -> None:
    """Close with an RST rather than a FIN (SO_LINGER 0), as a peer that vanished would."""
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class _Pair:
    """A client connection and its upstream connection (None until connected; parked in a black hole)."""

    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.upstream: socket.socket | None = None
        self.to_upstream = bytearray()
        self.to_client = bytearray()
        self.client_eof = False
        self.upstream_eof = False
        self.upstream_shut = False
        self.client_shut = False

    @property
    def finished(self) -> bool:
        return self.client_shut and self.upstream_shut


class TcpProxy:
    """Listens on `listen_host` (127.0.0.1) at a free port (`.port`, fixed for the proxy's life) and relays
    each connection to (target_host, target_port) on a single background thread.

    Mode changes (`forward`, `refuse`, `blackhole`) are synchronous: when the call returns the mode is in
    force for existing and new connections.
    """

    def __init__(self, target_host: str, target_port: int, listen_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.host = listen_host
        self.port = 0
        self.mode = FORWARD
        self.accepted = 0  # connections accepted so far, in any mode
        self._selector = selectors.DefaultSelector()
        self._interest: dict[socket.socket, int] = {}
        self._pairs: set[_Pair] = set()
        self._listener: socket.socket | None = None
        self._commands: queue.Queue[tuple[Callable[[], None], threading.Event]] = queue.Queue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.errors: list[BaseException] = []  # unexpected errors of the relay thread, for a test to assert on

    # -- public ---------------------------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def start(self) -> TcpProxy:
        self._open_listener()
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._run, name=f"TcpProxy:{self.port}", daemon=True)
        self._thread.start()
        return self

    def forward(self) -> None:
        """Relay normally. New connections work again; connections parked or held in a black hole resume."""
        self._call(self._do_forward)

    def refuse(self) -> None:
        """The service went away: reset (RST) every existing connection and refuse new ones (ECONNREFUSED)."""
        self._call(self._do_refuse)

    def blackhole(self) -> None:
        """Keep connections open but move no bytes either way; accept new connections and never answer."""
        self._call(self._do_blackhole)

    def connection_count(self) -> int:
        """Client connections the proxy holds now (relayed or parked)."""
        result: list[int] = []
        self._call(lambda: result.append(len(self._pairs)))
        return result[0]

    def close(self) -> None:
        """Stop relaying, close every connection and the listener; idempotent."""
        if self._thread is None:
            return
        self._stopping = True
        self._wake()
        self._thread.join(timeout=10)
        self._thread = None
        for pair in list(self._pairs):
            self._drop(pair, rst=False)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TcpProxy({self.host}:{self.port} -> {self.target[0]}:{self.target[1]}, {self.mode})"

    # -- commands, run on the relay thread --------------------------------------------------------------------

    def _call(self, command: Callable[[], None]) -> None:
        if self._thread is None or not self._thread.is_alive():
            raise RuntimeError(f"{self!r} is not running")
        done = threading.Event()
        self._commands.put((command, done))
        self._wake()
        if not done.wait(timeout=10):
            raise RuntimeError(f"{self!r}: the relay thread did not carry out the command within 10 s")

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass

    def _open_listener(self) -> None:
        if self._listener is not None:
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))  # port 0 the first time; the same port when re-opened
        listener.listen(128)
        listener.setblocking(False)
        self.port = listener.getsockname()[1]
        self._listener = listener
        if self._thread is not None:
            self._set_interest(listener, selectors.EVENT_READ)

    def _do_forward(self) -> None:
        self._open_listener()
        self.mode = FORWARD
        for pair in list(self._pairs):
            if pair.upstream is None:
                self._connect_upstream(pair)

    def _do_refuse(self) -> None:
        self.mode = REFUSE
        for pair in list(self._pairs):
            self._drop(pair, rst=True)
        if self._listener is not None:
            self._set_interest(self._listener, 0)
            self._listener.close()  # the port stops listening: connects get RST, i.e. "connection refused"
            self._listener = None

    def _do_blackhole(self) -> None:
        self._open_listener()
        self.mode = BLACKHOLE

    # -- the relay loop ---------------------------------------------------------------------------------------

    def _run(self) -> None:
        if self._listener is not None:
            self._set_interest(self._listener, selectors.EVENT_READ)
        while not self._stopping:
            for pair in list(self._pairs):
                self._update_interest(pair)
            for key, mask in self._selector.select(timeout=1.0):
                sock = key.fileobj
                try:
                    if sock is self._wake_r:
                        self._wake_r.recv(4096)
                    elif sock is self._listener:
                        self._accept()
                    else:
                        self._pump(cast(_Pair, key.data), cast(socket.socket, sock), mask)
                except Exception as exc:  # a relay thread must not die on one connection
                    self.errors.append(exc)
                    if isinstance(key.data, _Pair):
                        self._drop(key.data, rst=True)
            while not self._commands.empty():
                command, done = self._commands.get_nowait()
                try:
                    command()
                except Exception as exc:
                    self.errors.append(exc)
                finally:
                    done.set()

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        self.accepted += 1
        client.setblocking(False)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pair = _Pair(client)
        self._pairs.add(pair)
        if self.mode == FORWARD:
            self._connect_upstream(pair)
        # BLACKHOLE: parked, no upstream, nothing read or written until forward()

    def _connect_upstream(self, pair: _Pair) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            self._drop(pair, rst=True)  # the target itself refuses: pass that on
            return
        upstream.setblocking(False)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pair.upstream = upstream

    def _set_interest(self, sock: socket.socket, events: int, data: object = None) -> None:
        current = self._interest.get(sock, 0)
        if events == current:
            return
        if current == 0:
            self._selector.register(sock, events, data)
        elif events == 0:
            self._selector.unregister(sock)
        else:
            self._selector.modify(sock, events, data)
        if events:
            self._interest[sock] = events
        else:
            self._interest.pop(sock, None)

    def _update_interest(self, pair: _Pair) -> None:
        client_events = upstream_events = 0
        if self.mode == FORWARD and pair.upstream is not None:
            if not pair.client_eof and len(pair.to_upstream) < _BUFFER_LIMIT:
                client_events |= selectors.EVENT_READ
            if pair.to_client and not pair.client_shut:
                client_events |= selectors.EVENT_WRITE
            if not pair.upstream_eof and len(pair.to_client) < _BUFFER_LIMIT:
                upstream_events |= selectors.EVENT_READ
            if pair.to_upstream and not pair.upstream_shut:
                upstream_events |= selectors.EVENT_WRITE
        self._set_interest(pair.client, client_events, pair)
        if pair.upstream is not None:
            self._set_interest(pair.upstream, upstream_events, pair)

    def _pump(self, pair: _Pair, sock: socket.socket, mask: int) -> None:
        if pair not in self._pairs or pair.upstream is None:
            return
        from_client = sock is pair.client
        inbox, outbox = (pair.to_upstream, pair.to_client) if from_client else (pair.to_client, pair.to_upstream)
        try:
            if mask & selectors.EVENT_READ:
                data = sock.recv(65536)
                if data:
                    inbox.extend(data)
                elif from_client:
                    pair.client_eof = True
                else:
                    pair.upstream_eof = True
            if mask & selectors.EVENT_WRITE and outbox:
                sent = sock.send(outbox)
                del outbox[:sent]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._drop(pair, rst=True)  # one side reset or failed: the other side sees a reset too
            return
        # half-close: once one side has finished sending and everything it sent is delivered, pass the EOF on
        if pair.client_eof and not pair.to_upstream and not pair.upstream_shut:
            self._shutdown(pair.upstream)
            pair.upstream_shut = True
        if pair.upstream_eof and not pair.to_client and not pair.client_shut:
            self._shutdown(pair.client)
            pair.client_shut = True
        if pair.finished:
            self._drop(pair, rst=False)

    @staticmethod
    def _shutdown(sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _drop(self, pair: _Pair, rst: bool) -> None:
        self._pairs.discard(pair)
        for sock in (pair.client, pair.upstream):
            if sock is not None and sock in self._interest:
                try:
                    self._set_interest(sock, 0)
                except (KeyError, ValueError, OSError):
                    self._interest.pop(sock, None)
        if rst:
            _reset(pair.client)
        else:
            pair.client.close()
        if pair.upstream is not None:
            pair.upstream.close()  # a FIN towards the service, so its session ends cleanly
