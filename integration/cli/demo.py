"""The `demo` command: the consumers on sample messages, apart from any service that runs here.

It never touches the service's vhost or audit store. On a broker on this machine it creates a vhost of its
own (`hjerterehab-demo-<random>`, with `rabbitmqctl`: AMQP cannot create vhosts, and this broker has no
management API), opens it to the URL's user, applies the topology, runs the consumers there and deletes the
vhost at the end, its dead letters with it. Its audit store is a temporary SQLite file, removed at the end,
so no sample patient enters a real audit chain. When no vhost can be made (no broker reachable, a broker on
another machine, no `rabbitmqctl` or no right to use it), the same consumers run on the in-memory bus, and
the first line says why.

SIGTERM (`kill`, `timeout`, `docker stop`) and SIGHUP (the terminal closed) stop it as Ctrl-C does, cleaning
up the same way (vhost and temporary store removed): with the board held, "stopping the board" and exit 0;
during the scripted run, "error: aborted" and exit 1. A second such signal during the clean-up is ignored
(SIGKILL still ends it, leaving the vhost to `rabbitmqctl delete_vhost`).

After the discharge samples it starts the MLLP listener on a free port (against the demo's vhost or in-memory
bus and its store: `demo_mllp`), sends one HL7 v2 ADT^A03 over MLLP and prints the ACK's MSA line; the A03's
referral is listed with the samples'.

It prints a line as it goes (vhost, topology, each flow's samples sent and handled) and then one line per
sample: each output received downstream with its routing key, a dead letter with its reason, or what was
done when nothing was sent (the sample without a referral).

The samples are package data (`integration/cli/samples/`, copies of the golden inputs under tests/golden,
kept identical by tests/test_packaging.py), so the demo runs from an installed wheel. The wiring is
`integration.bootstrap.build`'s, as in `integration run`.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote, unquote, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import click
import orjson

from integration.adapters.consumer import ConsumerService
from integration.adapters.memory import InMemoryBroker, drain_in_memory
from integration.adapters.rabbitmq import RabbitConnection, drain, masked_url
from integration.adapters.sql.store import AuditStore
from integration.adapters.sql.stores import open_audit_store
from integration.bootstrap import Wiring, broker_settings, build
from integration.cli import demo_mllp
from integration.config import Settings
from integration.errors import ConnectionLost
from integration.log import one_line
from integration.service import hl7_intake
from integration.service.audit_chain import AuditRecord
from integration.topology import (
    ACK_EXCHANGE,
    FLOWS_BY_NAME,
    HOTLINE_EXCHANGE,
    REFERRAL_EXCHANGE,
    SENDERS_BY_KIND,
    STATUS_EXCHANGE,
)

SAMPLES = Path(__file__).resolve().parent / "samples"  # package data: the wheel carries them
DEMO_VHOST_PREFIX = "hjerterehab-demo-"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
WAIT_PER_FLOW = 60.0  # seconds for the consumers to handle one flow's samples
PROGRESS_EVERY = 5.0  # seconds between "waiting" lines


class Sample(NamedTuple):
    flow: str
    sender: str  # the kind of sender (`integration.topology.SENDERS`): its exchange is where the sample goes
    name: str
    body: bytes
    message_id: str


def overdue_sample(now: datetime) -> Sample:
    """For the board: sample 07 (a discharge without a referral decision) for another patient
    (`OVERDUE_PATIENT`), discharged `OVERDUE_DAYS` days before `now`, so that the visitation talk is overdue."""
    event = orjson.loads((SAMPLES / "discharge" / "07-no-referral.event.json").read_bytes())
    discharged = (now - timedelta(days=OVERDUE_DAYS)).astimezone(DANISH_TIME).replace(microsecond=0)
    event["eventId"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"hjerterehab-demo/overdue/{discharged.isoformat()}"))
    event["patient"]["cpr"] = OVERDUE_PATIENT
    event["occurredAt"] = (discharged + timedelta(minutes=35)).isoformat()
    event["admission"] = {
        "admittedAt": (discharged - timedelta(days=5)).isoformat(),
        "dischargedAt": discharged.isoformat(),
    }
    return Sample("discharge", "hospital", "overdue-visitation", orjson.dumps(event), event["eventId"])


def samples(overdue: bool = False) -> list[Sample]:
    """The sample discharge events and one bad one (from the hospital), the hotline requests (from a
    municipality or a GP, as their sender says), then a municipality's closing report; with `overdue` (the
    board), also a discharge whose visitation talk is overdue (`overdue_sample`)."""
    found = []
    for path in sorted((SAMPLES / "discharge").glob("*.event.json")):
        body = path.read_bytes()
        name = path.name.removesuffix(".event.json")
        found.append(Sample("discharge", "hospital", name, body, orjson.loads(body)["eventId"]))
    if overdue:
        found.append(overdue_sample(datetime.now(UTC)))
    poison = found[0].body.replace(b'"851"', b'"999"')
    found.append(
        Sample("discharge", "hospital", "bad-unknown-municipality", poison, "demo-poison-unknown-municipality")
    )
    for path in sorted((SAMPLES / "hotline").glob("*.request.json")):
        body = path.read_bytes()
        request = orjson.loads(body)
        sender = "gp" if "ydernummer" in request.get("sender", {}) else "municipality"
        found.append(Sample("hotline", sender, path.name.removesuffix(".request.json"), body, request["requestId"]))
    for path in sorted((SAMPLES / "hotline").glob("*.carecommunication.json")):  # MedCom: answered with an ack
        body = path.read_bytes()
        found.append(Sample("hotline", "municipality", path.name.removesuffix(".json"), body, orjson.loads(body)["id"]))
    report = SAMPLES / "closing" / "01-full-items.report.xml"
    found.append(Sample("closing", "municipality", "closing-report", report.read_bytes(), "demo-closing-report-01"))
    return found


Hold = Callable[[list[tuple[str, str]], Settings | None], None]  # the lines, the demo vhost's settings
OVERDUE_PATIENT = "1804509992"  # the board's overdue sample: no sample patient has this number
OVERDUE_DAYS = 30  # more than the visitation window (21 days by default)
DANISH_TIME = ZoneInfo("Europe/Copenhagen")
DEMO_FLOWS = [FLOWS_BY_NAME["discharge"], FLOWS_BY_NAME["hotline"], FLOWS_BY_NAME["closing"]]
LABELS = {
    REFERRAL_EXCHANGE: "referral from",
    HOTLINE_EXCHANGE: "hotline:",
    STATUS_EXCHANGE: "status:",
    ACK_EXCHANGE: "ack:",
}
OUTPUT_EXCHANGES = tuple(LABELS)
# A referral's MedCom event, by the audit fact that built it: a second discharge of a patient changes the
# referral in force (an update, or a cancellation and a new one) rather than adding one (the pathway).
REFERRAL_EVENT = {
    "fact:referral-built": "new-referral",
    "fact:referral-updated": "update-referral",
    "fact:referral-cancelled": "cancel-referral",
}


class NoVhost(Exception):
    """No vhost of the demo's own could be made: why, in one line."""


def _ctl(*args: str) -> None:
    try:
        done = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NoVhost(f"rabbitmqctl {args[0]} failed: {type(exc).__name__}") from None
    if done.returncode != 0:
        said = next((line for line in (done.stderr + done.stdout).splitlines() if line.strip()), "no reason given")
        raise NoVhost(f"rabbitmqctl {args[0]} failed: {one_line(said, 160)}")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=3):
            return True
    except OSError:
        return False


@contextmanager
def own_vhost(url: str) -> Iterator[tuple[str, str]]:
    """(name, URL) of a new vhost on the broker of `url` (its first node), open to the URL's user; deleted on
    leaving. NoVhost when none can be made."""
    parts = urlsplit(url.split(",")[0].strip())
    host, port = parts.hostname or "127.0.0.1", parts.port or (5671 if parts.scheme == "amqps" else 5672)
    if not _reachable(host, port):
        raise NoVhost(f"no broker at {masked_url(url)}")
    if host not in LOCAL_HOSTS:
        raise NoVhost(f"the broker at {host} is not on this machine, where rabbitmqctl could create a vhost")
    if shutil.which("rabbitmqctl") is None:
        raise NoVhost("rabbitmqctl is not installed")
    name = f"{DEMO_VHOST_PREFIX}{uuid.uuid4().hex[:8]}"
    _ctl("add_vhost", name)
    try:
        _ctl("set_permissions", "-p", name, unquote(parts.username or "guest"), ".*", ".*", ".*")
        yield name, urlunsplit(parts._replace(path="/" + quote(name, safe="")))
    finally:
        try:
            _ctl("delete_vhost", name)
            click.echo(f"vhost {name} removed")
        except NoVhost as exc:
            click.echo(f"{exc}: remove it with `rabbitmqctl delete_vhost {name}`")


def demo_in_memory(wiring: Wiring, overdue: bool = False, mllp_dsn: str | None = None) -> list[tuple[str, str]]:
    """The demo on the in-memory bus; with `mllp_dsn` (the demo's store), also the A03 over MLLP."""
    assert wiring.store is not None
    store = wiring.store
    broker = InMemoryBroker()
    for exchange in OUTPUT_EXCHANGES:
        broker.bind(exchange, "demo.outputs", "#")
    processor = wiring.processor_on(broker)
    every = samples(overdue)
    for flow in DEMO_FLOWS:  # the referrals first: they open the courses the hotline requests ask about
        batch = [s for s in every if s.flow == flow.name]
        for sample in batch:
            exchange = SENDERS_BY_KIND[sample.sender].exchange
            broker.publish(exchange, flow.name, sample.body, sample.message_id, content_type="application/json")
        drain_in_memory(broker, processor, [flow])
        click.echo(f"{flow.name}: {len(batch)} samples sent and handled")
        if flow.name == "discharge" and mllp_dsn is not None:
            publish = _to_the_discharge_queue(broker)
            _after_the_flows_samples(every, flow.name, _over_mllp(wiring.settings, wiring, mllp_dsn, publish))
            drain_in_memory(broker, processor, [flow])
    routed = [m.message_id or "" for m in broker.queues["demo.outputs"]]
    return summarise(store, routed, every)


def demo_on_broker(
    wiring: Wiring,
    settings: Settings,
    connection: RabbitConnection,
    hold: Hold | None = None,
    mllp_dsn: str | None = None,
) -> list[tuple[str, str]]:
    """The demo on `connection`, in the vhost of `settings` (the demo's own), with `wiring`'s processors; with
    `hold`, the consumers keep running while it does (the board, until Ctrl-C), given the lines so far; with
    `mllp_dsn` (the demo's store), the A03 over MLLP after the discharge samples."""
    assert wiring.store is not None
    store = wiring.store
    connection.apply_topology()
    click.echo("topology applied")
    outputs = connection.declare_temporary_queue()
    for exchange in OUTPUT_EXCHANGES:
        connection.bind_queue(outputs, exchange, "#")
    service = ConsumerService(broker_settings(settings), DEMO_FLOWS, wiring.processor_on)
    worker = threading.Thread(target=service.run, daemon=True)
    worker.start()
    click.echo(f"consumers started on {', '.join(f.queue for f in DEMO_FLOWS)}")
    every = samples(overdue=hold is not None)
    try:
        for flow in DEMO_FLOWS:  # the referrals first: they open the courses the hotline requests ask about
            batch = [s for s in every if s.flow == flow.name]
            expected = service.handled + len(batch)
            for sample in batch:
                exchange = SENDERS_BY_KIND[sample.sender].exchange
                connection.publish(exchange, flow.name, sample.body, sample.message_id, content_type="application/json")
            _wait_for(service, expected, flow.name, len(batch))
            if flow.name == "discharge" and mllp_dsn is not None:
                expected = service.handled + 1
                sent = _over_mllp(settings, wiring, mllp_dsn)
                _after_the_flows_samples(every, flow.name, sent)
                _wait_for(service, expected if sent else service.handled, f"{flow.name} over MLLP", len(sent))
        if hold is not None:
            hold(_outcome(store, connection, outputs, every), settings)
            return []
    finally:
        service.stop()
        worker.join(timeout=30)
    return _outcome(store, connection, outputs, every)


def _to_the_discharge_queue(broker: InMemoryBroker) -> hl7_intake.Publish:
    """The listener's publish on the in-memory bus: to the hospitals' exchange, the discharge flow's key."""
    hospital = SENDERS_BY_KIND["hospital"].exchange

    def publish(body: bytes, message_id: str) -> None:
        broker.publish(hospital, hl7_intake.FLOW, body, message_id, content_type=hl7_intake.ER7_CONTENT_TYPE)

    return publish


def _over_mllp(settings: Settings, wiring: Wiring, dsn: str, publish: hl7_intake.Publish | None = None) -> list[Sample]:
    """The A03 over MLLP (`demo_mllp`): its sample when it was published (AA), none when not; says which."""
    name, message_id, raw = demo_mllp.a03()
    try:
        msa = demo_mllp.over_mllp(settings, wiring.pipeline, dsn, publish)
    except (OSError, ConnectionError) as exc:
        click.echo(f"MLLP: no ACK ({one_line(exc)})")
        return []
    click.echo(f"MLLP ACK: {msa}")
    return [Sample("discharge", "hospital", name, raw, message_id)] if msa.startswith("MSA|AA|") else []


def _after_the_flows_samples(every: list[Sample], flow: str, more: list[Sample]) -> None:
    """`more` into `every` after its last sample of `flow`: the summary lists a flow's samples together."""
    last = max((i for i, sample in enumerate(every) if sample.flow == flow), default=len(every) - 1)
    every[last + 1 : last + 1] = more


def _outcome(
    store: AuditStore, connection: RabbitConnection, outputs: str, every: list[Sample]
) -> list[tuple[str, str]]:
    routed = [m.message_id or "" for m in drain(connection, outputs, 10_000)]
    dead_letters = FLOWS_BY_NAME["discharge"].dead_letter_queue
    dead = connection.message_count(dead_letters)
    lines = summarise(store, routed, every)
    lines.append((f"dead-lettered ({dead_letters})", f"{dead}, removed with the demo's vhost"))
    return lines


def _wait_for(service: ConsumerService, expected: int, flow: str, sent: int) -> None:
    started = time.monotonic()
    said = started
    while service.handled < expected and time.monotonic() - started < WAIT_PER_FLOW:
        if time.monotonic() - said >= PROGRESS_EVERY:
            said = time.monotonic()
            done = sent - (expected - service.handled)
            click.echo(f"{flow}: waiting for the consumers, {done} of {sent} handled")
        time.sleep(0.05)
    done = sent - max(expected - service.handled, 0)
    click.echo(f"{flow}: {sent} samples sent, {done} handled" + ("" if done == sent else " (timed out waiting)"))


def summarise(store: AuditStore, routed: list[str], every: list[Sample]) -> list[tuple[str, str]]:
    """One line per output received downstream (label and sample → routing key), per sample in order; a
    dead-lettered sample with its reason; a sample that sent nothing with what was done with it."""
    records: dict[str, list[AuditRecord]] = {}
    for record in store.records():
        records.setdefault(record.message_id, []).append(record)
    arrived = set(routed)
    lines = []
    for sample in every:
        mine = records.get(sample.message_id, [])
        sent = [r for r in mine if r.step == "published" and r.detail.get("outputId") in arrived]
        events = {r.detail.get("messageHeaderId"): REFERRAL_EVENT[r.step] for r in mine if r.step in REFERRAL_EVENT}
        for record in sent:
            label = LABELS.get(str(record.detail.get("exchange")), "?")
            event = events.get(record.detail.get("outputId"))
            lines.append(
                (f"{label} {sample.name}", str(record.detail.get("routingKey")) + (f" ({event})" if event else ""))
            )
        refused = next((r for r in mine if r.step in ("rejected", "gave-up")), None)
        if refused is not None:
            lines.append((f"dead-lettered: {sample.name}", one_line(refused.detail.get("reason", "?"))))
        elif not sent:
            done = "processed: nothing to send" if any(r.step == "transformed" for r in mine) else "not processed"
            lines.append((f"no output: {sample.name}", done))
    return lines


def _print(lines: list[tuple[str, str]]) -> None:
    for left, right in lines:
        click.echo(f"  {left:<58} → {right}")


STOPPING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextmanager
def _stopped_like_ctrl_c() -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt in the main thread while inside, as Ctrl-C does, so the
    demo's `finally` blocks remove its vhost and temporary store (by default either signal ends the process
    at once, cleaning up nothing). After the first, they are ignored until the clean-up is done."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        for number in STOPPING_SIGNALS:
            signal.signal(number, signal.SIG_IGN)
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {number: signal.signal(number, interrupt) for number in STOPPING_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def run_demo(settings: Settings, board: str | None = None) -> None:
    """The demo; with `board` (host:port), the pathway board over the demo's store and vhost stays up until
    Ctrl-C (or SIGTERM/SIGHUP), the consumers running (users and session secret made in the demo's temporary
    folder)."""
    with _stopped_like_ctrl_c(), tempfile.TemporaryDirectory(prefix="hjerterehab-demo-") as scratch:
        dsn = f"sqlite:///{Path(scratch) / 'audit.sqlite3'}"
        store = open_audit_store(dsn)
        try:
            hold = None
            if board is not None:
                from integration.cli.demo_board import holding_board

                hold = holding_board(settings, dsn, Path(scratch), board, _print)
            lines = _run(build(settings, store=store), hold, dsn)
            if not lines:  # held: the board showed them
                return
            _print(lines)
            click.echo(
                f"{sum(1 for left, _ in lines if left.startswith('referral'))} referrals and "
                f"{sum(1 for left, _ in lines if left.startswith('hotline'))} hotline and "
                f"{sum(1 for left, _ in lines if left.startswith('status'))} status messages and "
                f"{sum(1 for left, _ in lines if left.startswith('ack'))} MedCom acks received downstream; "
                f"audit log {store.head()[0]} records (a temporary store of the demo's own, now removed)"
            )
        finally:
            store.close()


def _run(wiring: Wiring, hold: Hold | None = None, dsn: str | None = None) -> list[tuple[str, str]]:
    settings = wiring.settings
    try:
        with own_vhost(settings.broker_url) as (vhost, url):
            click.echo(f"broker: {masked_url(url)} (vhost {vhost} of the demo's own, removed at the end)")
            try:
                connection = RabbitConnection(broker_settings(replace(settings, broker_url=url)))
            except ConnectionLost as exc:
                raise NoVhost(f"no connection to {masked_url(url)} ({exc})") from None
            try:
                return demo_on_broker(wiring, replace(settings, broker_url=url), connection, hold, dsn)
            finally:
                connection.close()
    except NoVhost as exc:
        click.echo(f"{one_line(exc)}; running on the in-memory bus instead (never in the service's vhost)")
        lines = demo_in_memory(wiring, overdue=hold is not None, mllp_dsn=dsn)
        if hold is None:
            return lines
        hold(lines, None)
        return []
