"""The `run` command: the consumers until a signal; and the broker connection the other commands share."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from types import FrameType
from zoneinfo import ZoneInfo

import structlog

from integration.adapters.consumer import ConsumerService
from integration.adapters.health import Health, serve
from integration.adapters.rabbitmq import (
    BrokerSettings,
    RabbitConnection,
    connection_parameters,
    masked_url,
)
from integration.adapters.sql.store import AuditStore, Signer
from integration.adapters.sql.stores import mac_keys, masked_dsn, open_audit_store
from integration.bootstrap import build_pipeline, flow_handlers, unprocessable_answer
from integration.config import Settings
from integration.errors import ConfigurationError, ConnectionLost, StoreDamaged, Transient
from integration.log import one_line
from integration.service.anchors import anchor_job
from integration.service.outbound import ResendPolicy, resend_unacknowledged
from integration.service.processor import Bus, Handler, Processor, Unprocessable
from integration.topology import FLOWS_BY_NAME, Flow

log = structlog.get_logger("integration.run")
DANISH_TIME = ZoneInfo("Europe/Copenhagen")


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
