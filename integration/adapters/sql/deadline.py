"""A deadline on calls that wait on a socket: a watchdog that abandons the connection when one outlives it.

A database that is black-holed (packets dropped) is noticed by TCP keepalives and a TCP user
timeout, but a peer that accepts bytes and never answers (a hung server, a middlebox) is not:
the client would wait as long as the stall lasts. The watchdog shuts the socket down when a call
armed on it passes its deadline; the blocked call then fails at once with the driver's connection
error, which the store reports as an outage (Transient), and the connection is opened afresh on
the next use.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class SocketDeadline:
    """One watchdog thread for one connection at a time; `armed(fd)` around each blocking call."""

    def __init__(self, seconds: float, poll: float = 0.25) -> None:
        self.seconds = seconds
        self._poll = poll
        self._lock = threading.Lock()
        self._armed: tuple[float, int] | None = None
        self._fired = False
        self._thread: threading.Thread | None = None

    @contextmanager
    def armed(self, fileno: int) -> Iterator[None]:
        """Within the block, a socket `fileno` still in use after `seconds` is shut down."""
        self._start()
        with self._lock:
            self._armed, self._fired = (time.monotonic() + self.seconds, fileno), False
        try:
            yield
        finally:
            with self._lock:
                self._armed = None

    def disarm(self) -> None:
        """Lift the deadline for the rest of the armed block (a long read that is meant to take its time)."""
        with self._lock:
            self._armed = None

    @property
    def fired(self) -> bool:
        """Whether the last armed block was cut short by the deadline."""
        with self._lock:
            return self._fired

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="socket-deadline", daemon=True)
            self._thread.start()

    def _watch(self) -> None:
        while True:
            time.sleep(self._poll)
            with self._lock:
                if self._armed is None or time.monotonic() < self._armed[0]:
                    continue
                fileno, self._armed, self._fired = self._armed[1], None, True
            _shut_down(fileno)


def _shut_down(fileno: int) -> None:
    """Shut the socket down without closing the descriptor the driver still owns."""
    try:
        duplicate = socket.socket(fileno=os.dup(fileno))
    except OSError:
        return  # already closed
    try:
        duplicate.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # not connected any more
    finally:
        duplicate.close()
