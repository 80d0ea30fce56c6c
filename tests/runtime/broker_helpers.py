"""Helpers for the tests against the real broker: events, consumers in a thread or a process, their health
and log, output counting."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson

from integration.adapters.consumer import ConsumerService
from integration.adapters.rabbitmq import BrokerSettings, RabbitConnection, drain
from integration.bootstrap import build
from integration.config import Settings
from integration.service.processor import RetryPolicy
from integration.topology import FLOWS_BY_NAME, SENDERS_BY_KIND
from tests.conftest import FIXED_NOW
from tests.runtime.conftest import broker_url, rabbitmqctl
from tests.support.events import distinct_referral_events

INBOUND = FLOWS_BY_NAME["discharge"].queue  # rehab.discharge-events
DLQ = FLOWS_BY_NAME["discharge"].dead_letter_queue  # rehab.discharge-events.dlq
# A few quick retries of a durable step, so that a test reaches the consumer's wait for the dependency at once.
FAST = RetryPolicy(attempts=2, seconds=1, initial_wait=0.01, max_wait=0.05)

# Who sends each flow's messages when a test does not say (decision 14: each kind of sender has its own
# exchange, bound only to the flows the agreement lets it send).
DEFAULT_SENDER = {
    "discharge": "hospital",
    "hotline": "municipality",
    "closing": "municipality",
    "acknowledgement": "municipality",
}


def target_url(vhost: str) -> str:
    """A vhost of the shared broker, or the URL(s) of a broker of the test's own, as given."""
    return vhost if vhost.startswith(("amqp://", "amqps://")) else broker_url(vhost)


def referral_events(count: int) -> list[tuple[str, bytes]]:
    """`count` distinct discharge events that each produce one referral: (event id, body)."""
    return distinct_referral_events(count)


def connect(vhost: str, prefetch: int = 100) -> RabbitConnection:
    return RabbitConnection(BrokerSettings(target_url(vhost), prefetch))


def inbound_exchange(flow: str, sender: str | None = None) -> str:
    """The exchange a `sender` (a kind: hospital, municipality, gp; default: the flow's usual one) publishes to."""
    return SENDERS_BY_KIND[sender or DEFAULT_SENDER[flow]].exchange


# flow → (exchange, routing key) of its usual sender, for tests that publish with a client of their own.
INBOUND_ROUTES = {flow: (inbound_exchange(flow), flow) for flow in DEFAULT_SENDER}


def publish_events(vhost: str, events: list[tuple[str, bytes]], sender: str = "hospital") -> None:
    """Discharge events, as `sender` would publish them (the connection's user is their user-id)."""
    publish(vhost, "discharge", events, sender)


def publish(
    vhost: str,
    flow: str,
    messages: list[tuple[str, bytes]],
    sender: str | None = None,
    content_type: str = "application/json",
) -> None:
    """(message id, body) pairs to `flow`, through the exchange of `sender` (default: the flow's usual sender)."""
    exchange = inbound_exchange(flow, sender)
    connection = connect(vhost)
    try:
        for message_id, body in messages:
            connection.publish(exchange, flow, body, message_id, content_type=content_type)
    finally:
        connection.close()


def output_queue(vhost: str) -> str:
    """A durable queue that collects every referral published in the vhost."""
    name = f"test.outputs.{uuid.uuid4().hex[:8]}"
    connection = connect(vhost)
    try:
        connection.declare_queue(name, {"x-queue-type": "quorum"})
        connection.bind_queue(name, "rehab.referral", "#")
    finally:
        connection.close()
    return name


def collector(vhost: str, exchange: str, routing_key: str = "#") -> str:
    """A durable queue of its own that collects what is published on `exchange`."""
    name = f"test.{exchange}.{uuid.uuid4().hex[:6]}"
    connection = connect(vhost)
    try:
        connection.declare_queue(name, {"x-queue-type": "quorum"})
        connection.bind_queue(name, exchange, routing_key)
    finally:
        connection.close()
    return name


def take_all(vhost: str, queue: str) -> list[Any]:
    connection = connect(vhost, prefetch=1000)
    try:
        messages = drain(connection, queue, 1_000_000)
        for m in messages:
            connection.ack(m.delivery_tag)
        return messages
    finally:
        connection.close()


def unsettled(vhost: str, queue: str, ctl: Callable[..., str] = rabbitmqctl) -> int:
    """Messages in `queue` not yet acked, ready *or* delivered: 0 only once a consumer acked the last one.

    The ready ones by a passive declare, before and after; the delivered ones from the channels consuming the
    queue (`list_consumers`, then `list_channels`, which asks each channel). All exact, and a message moving
    between the readings is counted twice rather than missed. Not `list_queues messages`: for a quorum queue
    that is the queue's statistics of up to 5 s ago, 0 just after a publish. `queue_depth` alone counts only
    the ready ones, so a consumer holding its prefetch would look done. `ctl` is `rabbitmqctl` of the shared
    broker, or an own node's `ctl`."""
    url = target_url(vhost).split(",")[0]
    name = unquote(urlsplit(url).path.lstrip("/")) or "/"
    ready = queue_depth(vhost, queue)
    consumers = ctl("list_consumers", "-p", name, "--quiet", "--no-table-headers", "queue_name", "channel_pid")
    channels = {fields[1] for fields in _rows(consumers) if fields[0] == queue}
    held = ctl("list_channels", "--quiet", "--no-table-headers", "pid", "messages_unacknowledged")
    delivered = sum(int(fields[1]) for fields in _rows(held) if fields[0] in channels)
    return ready + delivered + queue_depth(vhost, queue)


def _rows(listed: str) -> list[list[str]]:
    return [line.split("\t") for line in listed.splitlines() if "\t" in line]


def queue_depth(vhost: str, queue: str) -> int:
    connection = connect(vhost)
    try:
        return connection.message_count(queue)
    finally:
        connection.close()


def consumer_env(vhost: str, audit_dsn: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
    env.update(
        {
            "INTEGRATION_BROKER_URL": target_url(vhost),
            "INTEGRATION_AUDIT_DSN": audit_dsn,
            "INTEGRATION_PREFETCH": "20",
            "INTEGRATION_HEALTH_LISTEN": "127.0.0.1:0",
            **extra,
        }
    )
    return env


def start_consumer(vhost: str, audit_dsn: str, log_path: Path, **extra: str) -> subprocess.Popen[bytes]:
    log = log_path.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "integration", "--log-level", "INFO", "run"],
        env=consumer_env(vhost, audit_dsn, **extra),
        stdout=log,
        stderr=log,
    )


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def referrals_by_event(messages: list[Any]) -> dict[str, set[str]]:
    """event id → the distinct MessageHeader ids sent for it (each must have exactly one)."""
    found: dict[str, set[str]] = {}
    for message in messages:
        bundle = orjson.loads(message.body)
        request = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest")
        event_id = request["identifier"][0]["value"].removeprefix("urn:uuid:")
        found.setdefault(event_id, set()).add(bundle["entry"][0]["resource"]["id"])
    return found


@contextmanager
def running(service: ConsumerService) -> Iterator[ConsumerService]:
    """`service` consuming in a thread of this process; stopped at the end, which it must do within 30 s."""
    worker = threading.Thread(target=service.run, daemon=True)
    worker.start()
    try:
        yield service
    finally:
        service.stop()
        worker.join(timeout=30)
        assert not worker.is_alive(), "the consumer did not stop"


@contextmanager
def consumer(
    vhost: str,
    store: Any,
    retry: RetryPolicy = FAST,
    fault: Callable[[str], None] | None = None,
    clock_at: datetime = FIXED_NOW,
    **options: Any,
) -> Iterator[ConsumerService]:
    """The discharge flow's consumer (prefetch 20, reconnecting within a second; `options` go to ConsumerService)
    on a vhost of the shared broker or a URL (`target_url`), in a thread of this process (`running`), its
    processor on `store` with `retry`, its clock stopped at `clock_at` and, when given, the `fault` hook."""
    wiring = build(Settings.from_env({}), store=store, clock=lambda: clock_at, retry=retry, fault=fault)
    service = ConsumerService(
        BrokerSettings(target_url(vhost), prefetch=20),
        [FLOWS_BY_NAME["discharge"]],
        wiring.processor_on,
        reconnect_max_wait=1.0,
        **options,
    )
    with running(service):
        yield service


def refusing_queue(vhost: str, name: str, max_length: int) -> None:
    """A queue of the receivers, bound to rehab.referral, that refuses publishes once it holds `max_length`
    messages (`reject-publish`): our confirms come back negative until it is drained. A classic queue: a quorum
    queue applies its limit to what its log has committed, so a window of publishes in flight (decision 29) may
    all be taken past it — exactly what a test of the refusal must not depend on."""
    connection = connect(vhost)
    try:
        arguments = {"x-queue-type": "classic", "x-max-length": max_length, "x-overflow": "reject-publish"}
        connection.declare_queue(name, arguments)
        connection.bind_queue(name, "rehab.referral", "#")
    finally:
        connection.close()


def readyz(port: int) -> tuple[int, str]:
    """/readyz of a consumer's health listener on `port`: (status, text); (0, why) when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()
    except OSError as unreachable:
        return 0, str(unreachable)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to a consumer process still running, and wait (up to a minute) for it to end."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def log_lines(log: Path, text: str) -> int:
    """How many lines of `log` contain `text`."""
    return sum(1 for line in log.read_text().splitlines() if text in line)
