"""The socket deadline: a call blocked on a silent peer is cut short; one that finishes in time is left alone."""

from __future__ import annotations

import socket
import time

from integration.adapters.sql.deadline import SocketDeadline


def _silent_pair() -> tuple[socket.socket, socket.socket, socket.socket]:
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    peer, _ = server.accept()
    return server, client, peer


def test_a_call_blocked_past_its_deadline_is_cut_short() -> None:
    server, client, peer = _silent_pair()
    deadline = SocketDeadline(0.5, poll=0.05)
    started = time.monotonic()
    with deadline.armed(client.fileno()):
        client.sendall(b"a query")
        assert client.recv(1024) == b""  # the peer never answers: the watchdog shut the socket down
    assert 0.4 < time.monotonic() - started < 3 and deadline.fired
    for s in (client, peer, server):
        s.close()


def test_a_call_answered_in_time_is_left_alone() -> None:
    server, client, peer = _silent_pair()
    deadline = SocketDeadline(0.5, poll=0.05)
    with deadline.armed(client.fileno()):
        peer.sendall(b"an answer")
        assert client.recv(1024) == b"an answer"
    time.sleep(0.8)  # past the deadline, but disarmed: the connection stays usable
    assert not deadline.fired
    peer.sendall(b"more")
    assert client.recv(1024) == b"more"
    for s in (client, peer, server):
        s.close()
