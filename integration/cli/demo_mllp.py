"""The demo's HL7 v2 step: the MLLP listener on a free port of this machine, against the demo's own vhost (or
its in-memory bus) and temporary store, and one ADT^A03 sent to it over MLLP as a hospital's interface
engine would; the ACK's MSA line is printed.

The A03 is the ER7 twin of golden discharge 01 (`samples/hl7/`, a copy of tests/hl7), sent for another
patient (`HL7_PATIENT`, born the same day): the JSON sample 01 already discharged its patient, and a second
discharge of one patient changes the referral in force rather than sending a new one.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import cast

import click
from hl7.mllp.streams import CARRIAGE_RETURN, END_BLOCK, START_BLOCK  # type: ignore[import-untyped]

from integration.adapters.mllp import MllpListener
from integration.adapters.sql.stores import open_audit_store
from integration.bootstrap import mllp_listener
from integration.config import Settings
from integration.flows.dispatch import Pipeline
from integration.formats.hl7_ack import read_header
from integration.service import hl7_intake
from integration.service.hl7_intake import ReceiptStore

SAMPLE = Path(__file__).resolve().parent / "samples" / "hl7" / "01-municipal-gop-general-sternotomy.a03.er7"
SAMPLE_PATIENT = b"PID|1||2512489996^"
HL7_PATIENT = b"PID|1||2512489004^"  # born 1948-12-25 as PID-7 says; no other sample patient has it
ANSWER_TIMEOUT = 30.0  # seconds for the ACK: the publish timeout and then some


def a03() -> tuple[str, str, bytes]:
    """(name, AMQP message id, ER7 bytes) of the demo's ADT^A03."""
    raw = SAMPLE.read_bytes()
    assert SAMPLE_PATIENT in raw, "the HL7 sample's PID-3 is not the one the demo replaces"
    raw = raw.replace(SAMPLE_PATIENT, HL7_PATIENT)
    header = read_header(raw)
    assert header is not None
    return "hl7-a03-" + SAMPLE.name.removesuffix(".a03.er7"), hl7_intake.message_id(header), raw


DEMO_SENDER = "EPJ@RHN"  # the sample's MSH-3@MSH-4 (MSH-4's namespace id)


def demo_settings(settings: Settings) -> Settings:
    """The listener's settings in the demo: it publishes with the demo vhost's URL (never `mllp_broker_url`, a
    hospital user of the service's vhost), speaks plain TCP to the demo's own client and takes messages from the
    sample's sender alone (MSH-3 EPJ, MSH-4 RHN)."""
    return replace(
        settings,
        mllp_broker_url="",
        mllp_tls_cert_file=None,
        mllp_tls_key_file=None,
        mllp_tls_client_ca_file=None,
        mllp_allowed_senders=(DEMO_SENDER,),
    )


@contextmanager
def listening(
    settings: Settings, pipeline: Pipeline, dsn: str, publish: hl7_intake.Publish | None = None
) -> Iterator[MllpListener]:
    """The listener on 127.0.0.1 and a free port, on a thread with its own event loop and its own connection to
    the demo's store (`dsn`); it publishes to the vhost of `settings`' broker URL (the demo's), or with `publish`
    (the in-memory bus)."""
    store = open_audit_store(dsn)
    receipts = cast(ReceiptStore, store)  # the SQL stores have the receipt table (integration mllp casts too)
    listener = mllp_listener(demo_settings(settings), receipts, pipeline, publish=publish, bind=("127.0.0.1", 0))
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(listener.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="demo-mllp", daemon=True)
    thread.start()
    try:
        if not started.wait(10):
            raise OSError("the MLLP listener did not start")
        yield listener
    finally:
        if started.is_set():
            asyncio.run_coroutine_threadsafe(listener.stop(grace=5), loop).result(15)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        store.close()


def send(port: int, message: bytes) -> bytes:
    """One message over MLLP to 127.0.0.1:`port`; its ACK (without the block characters)."""
    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_TIMEOUT) as connection:
        connection.sendall(START_BLOCK + message + END_BLOCK + CARRIAGE_RETURN)
        answer = b""
        while not answer.endswith(END_BLOCK + CARRIAGE_RETURN):
            chunk = connection.recv(65536)
            if not chunk:
                raise ConnectionError("the listener closed the connection without an ACK")
            answer += chunk
    return answer.lstrip(START_BLOCK).removesuffix(END_BLOCK + CARRIAGE_RETURN)


def msa_line(ack: bytes) -> str:
    """The ACK's MSA segment as text (ERR segments follow it when there is one)."""
    segments = ack.decode("latin-1").split("\r")
    return next((s for s in segments if s.startswith("MSA")), "no MSA in the ACK")


def over_mllp(settings: Settings, pipeline: Pipeline, dsn: str, publish: hl7_intake.Publish | None = None) -> str:
    """Send the demo's A03 over MLLP (printing what happens), and return its MSA line; raises OSError or
    ConnectionError when the listener cannot be started or does not answer."""
    name, _, raw = a03()
    with listening(settings, pipeline, dsn, publish) as listener:
        click.echo(f"MLLP listener on 127.0.0.1:{listener.port}: one ADT^A03 sent ({name})")
        ack = send(listener.port, raw)
    return msa_line(ack)
