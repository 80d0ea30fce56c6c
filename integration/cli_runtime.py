"""Commands that run the service: `run` the consumers, and the `demo` on the local broker (or in memory)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import NamedTuple
from zoneinfo import ZoneInfo

import click
import orjson
import structlog

from integration.bootstrap import build_pipeline, flow_handlers, unprocessable_answer
from integration.config import PROJECT_ROOT, Settings
from integration.errors import ConfigurationError, ConnectionLost, StoreDamaged, Transient
from integration.log import one_line
from integration.runtime.anchors import anchor_job
from integration.runtime.audit_store import AuditStore, Signer
from integration.runtime.consumer import ConsumerService
from integration.runtime.health import Health, serve
from integration.runtime.outbound import ResendPolicy, resend_unacknowledged
from integration.runtime.processor import Bus, Handler, Processor, Unprocessable
from integration.runtime.queue_migration import apply as apply_topology_migrating
from integration.runtime.rabbitmq import (
    BrokerSettings,
    RabbitConnection,
    connection_parameters,
    drain,
    masked_url,
)
from integration.runtime.stores import mac_keys, masked_dsn, open_audit_store, open_store
from integration.testing import InMemoryBroker, drain_in_memory
from integration.topology import FLOWS_BY_NAME, SENDERS_BY_KIND, Flow

log = structlog.get_logger("integration.run")
DANISH_TIME = ZoneInfo("Europe/Copenhagen")
SAMPLES = PROJECT_ROOT / "tests" / "golden" / "discharge"


def now() -> datetime:
    return datetime.now(DANISH_TIME)


def broker_settings(settings: Settings) -> BrokerSettings:
    return BrokerSettings(
        settings.broker_url,
        settings.prefetch,
        settings.broker_ca_file,
        settings.broker_cert_file,
        settings.broker_key_file,
    )


@contextmanager
def broker_connection(settings: Settings) -> Iterator[RabbitConnection]:
    """The configured broker, for a command. A broker that cannot be reached, or refuses us, is a
    ConnectionLost naming the (masked) URL; the broker's own error stays its cause."""
    try:
        connection = RabbitConnection(broker_settings(settings))
    except ConnectionLost as exc:
        cause = exc.__cause__ or exc.__context__ or exc  # the adapter keeps pika's error as the context
        said = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
        raise ConnectionLost(f"no connection to {masked_url(settings.broker_url)} ({said})") from exc
    try:
        yield connection
    finally:
        connection.close()


def selected_flows(settings: Settings, handlers: dict[str, object], names: str | None) -> list[Flow]:
    chosen = [n.strip() for n in names.split(",")] if names else list(settings.flows) or list(handlers)
    unknown = [n for n in chosen if n not in handlers]
    if unknown:
        raise ConfigurationError(f"no handler for flow(s) {', '.join(unknown)}; available: {', '.join(handlers)}")
    return [FLOWS_BY_NAME[n] for n in chosen]


def processor_factory(
    handlers: Mapping[str, Handler],
    store: AuditStore,
    unprocessable: Unprocessable | None = None,
    fault: Callable[[str], None] | None = None,
) -> Callable[[Bus], Processor]:
    """Processors on a bus; `fault` is the fault-injection seam of the processor (tests only)."""
    if fault is None:
        return lambda bus: Processor(handlers, store, bus, now, unprocessable=unprocessable)
    return lambda bus: Processor(handlers, store, bus, now, unprocessable=unprocessable, fault=fault)


def resend_policy(settings: Settings) -> ResendPolicy:
    return ResendPolicy(timedelta(minutes=settings.ack_timeout_minutes), settings.max_resends)


def run_consumers(settings: Settings, flow_names: str | None, fault: Callable[[str], None] | None = None) -> None:
    """Run the consumers until SIGTERM or SIGINT. An audit store that is down at start is waited for,
    as during operation: one line says what is awaited, `/readyz` fails until it answers. `fault` is
    passed to the processors (the fault tests' kill switch; never set by the command line)."""
    pipeline = build_pipeline(settings)
    handlers = flow_handlers(pipeline)
    flows = selected_flows(settings, dict(handlers), flow_names)
    broker = broker_settings(settings)
    # A broker URL that cannot work is a configuration error now, not a retry loop.
    vhost = connection_parameters(broker)[0].virtual_host
    health = Health()
    stopping = threading.Event()
    signalled: list[str] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        # No logging here: a signal handler may interrupt a log line being written. The stopper thread says it.
        signalled.append(signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    keys = mac_keys(settings)
    serve(health, settings.health_listen)
    store = wait_for_store(settings.audit_dsn, health, stopping, sign=keys.sign if keys else None)
    if store is None:
        log.info("stopped while waiting for the audit store", signal=signalled[0] if signalled else None)
        return
    factory = processor_factory(handlers, store, unprocessable_answer(pipeline), fault)
    policy = resend_policy(settings)
    anchor = anchor_job(settings, store)  # the chain's head, out of the database's reach (decision 15)
    service = ConsumerService(
        broker,
        flows,
        factory,
        periodic=lambda bus: (anchor(), resend_unacknowledged(store, bus, now(), policy)),
        health=health,
    )
    log.info(
        "starting",
        flows=[f.name for f in flows],
        queues=[f.queue for f in flows],
        vhost=vhost,
        broker=masked_url(broker.url),
        audit=masked_dsn(settings.audit_dsn),
        prefetch=broker.prefetch,
    )

    def stop_when_signalled() -> None:
        stopping.wait()
        if signalled:
            log.info("stopping: finishing the messages in hand", signal=signalled[0])
        service.stop()

    threading.Thread(target=stop_when_signalled, daemon=True).start()
    try:
        service.run()
    finally:
        anchor.last()
        store.close()
    log.info("stopped", handled=service.handled)


def wait_for_store(
    dsn: str, health: Health, stopping: threading.Event, max_wait: float = 15.0, sign: Signer | None = None
) -> AuditStore | None:
    """Open the audit store, waiting with backoff while it is unavailable; None when stopped meanwhile. A
    damaged store (StoreDamaged: its file, or a schema other than its version says) is raised at once:
    waiting will not mend it, and the service must not migrate it."""
    delay = 0.5
    while True:
        try:
            store = open_audit_store(dsn, sign=sign)
        except StoreDamaged:
            raise
        except Transient as exc:
            if health.down("audit-store", str(exc)):
                log.warning("waiting for the audit store", audit=masked_dsn(dsn), reason=one_line(exc))
            if stopping.wait(delay):
                return None
            delay = min(delay * 2, max_wait)
            continue
        away = health.up("audit-store")
        if away is not None:
            log.info("audit store available", waited_s=round(away, 1))
        return store


HOTLINE_SAMPLES = PROJECT_ROOT / "tests" / "golden" / "hotline"
CLOSING_SAMPLES = PROJECT_ROOT / "tests" / "golden" / "closing"


class Sample(NamedTuple):
    flow: str
    sender: str  # the kind of sender (`integration.topology.SENDERS`): its exchange is where the sample goes
    name: str
    body: bytes
    message_id: str


def _samples() -> list[Sample]:
    """The sample discharge events and one bad one (from the hospital), the hotline requests (from a
    municipality or a GP, as their sender says), then a municipality's closing report."""
    samples = []
    for path in sorted(SAMPLES.glob("*.event.json")):
        body = path.read_bytes()
        name = path.name.removesuffix(".event.json")
        samples.append(Sample("discharge", "hospital", name, body, orjson.loads(body)["eventId"]))
    poison = samples[0].body.replace(b'"851"', b'"999"')
    samples.append(
        Sample("discharge", "hospital", "bad-unknown-municipality", poison, "demo-poison-unknown-municipality")
    )
    for path in sorted(HOTLINE_SAMPLES.glob("*.request.json")):
        body = path.read_bytes()
        request = orjson.loads(body)
        sender = "gp" if "ydernummer" in request.get("sender", {}) else "municipality"
        samples.append(Sample("hotline", sender, path.name.removesuffix(".request.json"), body, request["requestId"]))
    for path in sorted(HOTLINE_SAMPLES.glob("*.carecommunication.json")):  # MedCom: answered with an ack
        body = path.read_bytes()
        name = path.name.removesuffix(".json")
        samples.append(Sample("hotline", "municipality", name, body, orjson.loads(body)["id"]))
    report = CLOSING_SAMPLES / "01-full-items.report.xml"
    samples.append(Sample("closing", "municipality", "closing-report", report.read_bytes(), "demo-closing-report-01"))
    return samples


DEMO_FLOWS = [FLOWS_BY_NAME["discharge"], FLOWS_BY_NAME["hotline"], FLOWS_BY_NAME["closing"]]
LABELS = {
    "rehab.referral": "referral from",
    "rehab.hotline": "hotline:",
    "rehab.status": "status:",
    "rehab.ack": "ack:",
}
OUTPUT_EXCHANGES = tuple(LABELS)


def demo_in_memory(settings: Settings, store: AuditStore) -> list[tuple[str, str]]:
    broker = InMemoryBroker()
    for exchange in OUTPUT_EXCHANGES:
        broker.bind(exchange, "demo.outputs", "#")
    processor = processor_factory(flow_handlers(build_pipeline(settings)), store)(broker)
    for flow in DEMO_FLOWS:  # the referrals first: they open the courses the hotline requests ask about
        for sample in _samples():
            if sample.flow == flow.name:
                exchange = SENDERS_BY_KIND[sample.sender].exchange
                broker.publish(exchange, flow.name, sample.body, sample.message_id, content_type="application/json")
        drain_in_memory(broker, processor, [flow])
    routed = [m.message_id or "" for m in broker.queues["demo.outputs"]]
    names = {s.message_id: s.name for s in _samples()}
    dead = [
        (names.get(m.message_id or "", "?"), str(m.headers.get("x-rehab-reason")))
        for m in broker.queues["rehab.discharge-events.dlq"]
    ]
    return _summarise(store, routed, dead)


def _summarise(store: AuditStore, routed: list[str], dead: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """One line per message received downstream (sample → routing key), then the dead-lettered ones."""
    names = {s.message_id: s.name for s in _samples()}
    published = {r.detail.get("outputId"): r for r in store.records() if r.step == "published"}
    lines = []
    for output_id in routed:
        record = published.get(output_id)
        name = names.get(record.message_id, "?") if record else "?"
        what = LABELS.get(str(record.detail.get("exchange")), "?") if record else "?"
        lines.append((f"{what} {name}", str(record.detail.get("routingKey")) if record else "?"))
    lines += [(f"dead-lettered: {name}", reason) for name, reason in dead]
    return lines


def demo_on_broker(settings: Settings, store: AuditStore, connection: RabbitConnection) -> list[tuple[str, str]]:
    # A vhost an earlier release set up has queues with other arguments: re-created, messages kept.
    apply_topology_migrating(connection, migrating=True)
    outputs = connection.channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
    for exchange in OUTPUT_EXCHANGES:
        connection.channel.queue_bind(outputs, exchange, "#")
    dlq_before = connection.channel.queue_declare("rehab.discharge-events.dlq", passive=True).method.message_count
    handlers = flow_handlers(build_pipeline(settings))
    service = ConsumerService(broker_settings(settings), DEMO_FLOWS, processor_factory(handlers, store))
    worker = threading.Thread(target=service.run, daemon=True)
    worker.start()
    samples = _samples()
    for flow in DEMO_FLOWS:  # the referrals first: they open the courses the hotline requests ask about
        batch = [s for s in samples if s.flow == flow.name]
        expected = service.handled + len(batch)
        for sample in batch:
            exchange = SENDERS_BY_KIND[sample.sender].exchange
            connection.publish(exchange, flow.name, sample.body, sample.message_id, content_type="application/json")
        deadline = time.monotonic() + 60
        while service.handled < expected and time.monotonic() < deadline:
            time.sleep(0.05)
    service.stop()
    worker.join(timeout=30)
    routed = [m.message_id or "" for m in drain(connection, outputs, 10_000)]
    dlq_after = connection.channel.queue_declare("rehab.discharge-events.dlq", passive=True).method.message_count
    lines = _summarise(store, routed, [])
    lines.append(("dead-lettered (rehab.discharge-events.dlq)", f"{dlq_after - dlq_before} new, {dlq_after} waiting"))
    return lines


def run_demo(settings: Settings) -> None:
    Path("out").mkdir(exist_ok=True)
    store = open_store(settings)
    try:
        try:
            connection = RabbitConnection(broker_settings(settings))
        except ConnectionLost as exc:
            click.echo(f"no broker at {masked_url(settings.broker_url)} ({exc}); running on the in-memory bus instead")
            lines = demo_in_memory(settings, store)
        else:
            click.echo(f"broker: {masked_url(settings.broker_url)}; audit: {masked_dsn(settings.audit_dsn)}")
            try:
                lines = demo_on_broker(settings, store, connection)
            finally:
                connection.close()
        for left, right in lines:
            click.echo(f"  {left:<58} → {right}")
        click.echo(
            f"{sum(1 for left, _ in lines if left.startswith('referral'))} referrals and "
            f"{sum(1 for left, _ in lines if left.startswith('hotline'))} hotline and "
            f"{sum(1 for left, _ in lines if left.startswith('status'))} status messages and "
            f"{sum(1 for left, _ in lines if left.startswith('ack'))} MedCom acks received downstream; "
            f"audit log {store.head()[0]} records"
        )
    finally:
        store.close()
