"""A test client speaking MLLP over a socket, a listener run on a thread of its own, and ADT fixtures."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from integration.adapters.mllp import MllpListener
from integration.adapters.sql.stores import open_audit_store
from integration.bootstrap import build_pipeline, mllp_listener
from integration.config import Settings
from integration.formats.er7 import parse_er7
from integration.service.hl7_intake import Validate

START, END = b"\x0b", b"\x1c\x0d"

ADT_A03 = (
    "MSH|^~\\&|EPJ|RH-HJERTE|REHAB|KOMMUNE|20261130101500+0100||ADT^A03^ADT_A03|{control}|P|2.5|||{accept}|{app}\r"
    "EVN|A03|20261130101500+0100\r"
    "PID|1||0101701234^^^CPR^NNDN||Jensen^Anne||19700101|F\r"
    "PV1|1|I|{unit}^^^RH||||||||||||||||V123|||||||||||||||||||||||||20261120080000+0100|20261130100000+0100\r"
)


def adt(control: str = "C1", unit: str = "1301011", accept: str = "", app: str = "", version: str = "2.5") -> bytes:
    text = ADT_A03.format(control=control, unit=unit, accept=accept, app=app)
    return text.replace("|P|2.5|", f"|P|{version}|").encode()


def er7_only(max_bytes: int = 1 << 20) -> Validate:
    """Content read by the ER7 reader alone (the discharge flow's hl7-adt kind is another branch's work)."""
    return lambda raw, _now: None if parse_er7(raw, max_bytes) else None


class Client:
    def __init__(self, port: int, tls: ssl.SSLContext | None = None, timeout: float = 10.0) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock: socket.socket = tls.wrap_socket(raw, server_hostname="localhost") if tls else raw

    def send(self, message: bytes) -> None:
        self.sock.sendall(START + message + END)

    def read_frame(self) -> bytes:
        data = b""
        while not data.endswith(END):
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed after {len(data)} bytes")
            data += chunk
        assert data.startswith(START)
        return data[1:-2]

    def ask(self, message: bytes) -> bytes:
        self.send(message)
        return self.read_frame()

    def closed(self) -> bool:
        """Whether the listener closed the connection (waits up to the socket's timeout)."""
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, ssl.SSLError):
            return True

    def close(self) -> None:
        self.sock.close()


def segment(ack: bytes, name: str) -> list[str]:
    for line in ack.decode("latin-1").split("\r"):
        if line.startswith(name + "|"):
            return line.split("|")
    raise AssertionError(f"no {name} in {ack!r}")


def settings_for(vhost: str, audit_dsn: str, **overrides: object) -> Settings:
    base = Settings.from_env({"INTEGRATION_BROKER_URL": f"amqp://guest:guest@127.0.0.1:5672/{vhost}"})
    return replace(base, audit_dsn=audit_dsn, **overrides)  # type: ignore[arg-type]


@contextmanager
def running(settings: Settings, validate: Validate | None = None) -> Iterator[MllpListener]:
    """The listener of `settings` on a thread with its own event loop, its store opened there."""
    store = open_audit_store(settings.audit_dsn)
    listener = mllp_listener(settings, store, build_pipeline(settings), validate=validate, bind=("127.0.0.1", 0))
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(listener.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield listener
    finally:
        asyncio.run_coroutine_threadsafe(listener.stop(grace=2), loop).result(15)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        store.close()


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and its key, made with `openssl` (the venv has no `cryptography`)."""
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key_file),
            "-out",
            str(cert_file),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert_file, key_file
