"""A test client speaking MLLP over a socket, a listener run on a thread of its own, and ADT fixtures."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from integration.adapters.mllp import MllpListener
from integration.adapters.sql.stores import open_audit_store
from integration.bootstrap import build_pipeline, mllp_listener, now
from integration.config import Settings
from integration.service.hl7_intake import Validate

START, END = b"\x0b", b"\x1c\x0d"

HL7_FIXTURES = Path(__file__).resolve().parents[1] / "hl7"
A03_TWIN = HL7_FIXTURES / "01-municipal-gop-general-sternotomy.a03.er7"  # golden discharge 01 as ADT^A03
A03_MSH_TAIL = b"|RHN-0001|P|2.5||||||UNICODE UTF-8\r"
CPR_FIELD = b"PID|1||2512489996^^^CPR^NI"  # PID-3's first repetition in A03_TWIN


def adt(control: str = "C1", note: str = "", accept: str = "", app: str = "", version: str = "2.5") -> bytes:
    """The ER7 twin of golden discharge 01 (tests/hl7) under control id `control`: what the discharge consumer
    reads as that golden event. `note` replaces ZRH-8's free text (other content, the same referral); `accept`
    and `app` are MSH-15/16; `version` MSH-12."""
    raw = A03_TWIN.read_bytes()
    assert A03_MSH_TAIL in raw
    tail = f"|{control}|P|{version}|||{accept}|{app}||UNICODE UTF-8\r".encode()
    raw = raw.replace(A03_MSH_TAIL, tail)
    return raw.replace(b"|free text", f"|{note}".encode()) if note else raw


class Client:
    def __init__(
        self, port: int, tls: ssl.SSLContext | None = None, timeout: float = 10.0, source: str | None = None
    ) -> None:
        """`source`: the local address to connect from (another 127.0.0.0/8 address: another peer)."""
        raw = socket.create_connection(
            ("127.0.0.1", port), timeout=timeout, source_address=(source, 0) if source else None
        )
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


SENDER = "EPJ@RHN"  # the fixtures' MSH-3@MSH-4


def settings_for(vhost: str, audit_dsn: str, **overrides: object) -> Settings:
    base = Settings.from_env({"INTEGRATION_BROKER_URL": f"amqp://guest:guest@127.0.0.1:5672/{vhost}"})
    overrides = {"mllp_allowed_senders": (SENDER,), **overrides}
    return replace(base, audit_dsn=audit_dsn, **overrides)  # type: ignore[arg-type]


@contextmanager
def running(
    settings: Settings, validate: Validate | None = None, clock: Callable[[], datetime] = now
) -> Iterator[MllpListener]:
    """The listener of `settings` on a thread with its own event loop, its store opened there."""
    store = open_audit_store(settings.audit_dsn)
    pipeline = build_pipeline(settings)
    listener = mllp_listener(settings, store, pipeline, clock=clock, validate=validate, bind=("127.0.0.1", 0))
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
