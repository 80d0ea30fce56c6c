"""Outages never spend a message's delivery attempts: the consumer holds its messages unacked and waits for
the dependency, says so once in the log and on /readyz, and goes on when it is back — on the real broker."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from integration.adapters.consumer import ConsumerService
from integration.adapters.health import Health, serve
from integration.adapters.rabbitmq import BrokerSettings
from integration.adapters.sql.stores import open_audit_store
from integration.bootstrap import build
from integration.config import Settings
from integration.errors import Transient
from integration.service.audit_chain import verify
from integration.service.processor import RetryPolicy
from integration.topology import FLOWS_BY_NAME
from tests.conftest import FIXED_NOW
from tests.runtime.broker_helpers import (
    connect,
    output_queue,
    publish_events,
    queue_depth,
    referral_events,
    referrals_by_event,
    take_all,
    wait_for,
)
from tests.runtime.conftest import broker_url

FAST = RetryPolicy(attempts=2, seconds=1, initial_wait=0.01, max_wait=0.05)
INBOUND = "rehab.discharge-events"
DLQ = "rehab.discharge-events.dlq"


class SwitchableStore:
    """The real store behind a switch: while off, every call fails as a database outage does."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.off = threading.Event()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.off.is_set():
                raise Transient("audit store (PostgreSQL) unavailable: OperationalError: connection refused")
            return attribute(*args, **kwargs)

        return call


@contextmanager
def consumer(vhost: str, store: Any, health: Health) -> Iterator[ConsumerService]:
    wiring = build(Settings.from_env({}), store=store, clock=lambda: FIXED_NOW, retry=FAST)
    service = ConsumerService(
        BrokerSettings(broker_url(vhost), prefetch=20),
        [FLOWS_BY_NAME["discharge"]],
        wiring.processor_on,
        reconnect_max_wait=1.0,
        health=health,
        wait_initial=0.1,
        wait_max=0.5,
    )
    worker = threading.Thread(target=service.run, daemon=True)
    worker.start()
    try:
        yield service
    finally:
        service.stop()
        worker.join(timeout=30)
        assert not worker.is_alive(), "the consumer did not stop"


def _readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()


def test_a_store_outage_holds_messages_unacked_and_spends_no_attempt(vhost: str, audit_dsn: str) -> None:
    real = open_audit_store(audit_dsn)
    store = SwitchableStore(real)
    outputs = output_queue(vhost)
    events = referral_events(60)
    health = Health()
    server = serve(health, "127.0.0.1:0")
    assert server is not None
    with consumer(vhost, store, health):
        wait_for(lambda: health.ready, 30, "the consumer to be ready")
        publish_events(vhost, events[:10])
        wait_for(lambda: queue_depth(vhost, outputs) == 10, 30, "the first ten")
        store.off.set()
        publish_events(vhost, events[10:])
        wait_for(lambda: not health.ready, 30, "readiness to fail")
        status, text = _readyz(server.server_port)
        assert status == 503 and "audit-store unavailable" in text and "connection refused" in text
        threading.Event().wait(3)  # an outage of a few seconds: nothing may move to the DLQ meanwhile
        assert queue_depth(vhost, DLQ) == 0 and queue_depth(vhost, outputs) == 10
        assert queue_depth(vhost, INBOUND) == 50 - 20  # 20 held unacked (the prefetch), the rest still queued
        store.off.clear()
        wait_for(lambda: queue_depth(vhost, outputs) >= 60, 60, "every event after the store came back")
        wait_for(lambda: health.ready, 10, "readiness to recover")
        assert _readyz(server.server_port)[0] == 200
    server.shutdown()
    assert queue_depth(vhost, DLQ) == 0
    found = referrals_by_event(take_all(vhost, outputs))
    assert set(found) == {e for e, _ in events} and all(len(ids) == 1 for ids in found.values())
    received = [r for r in real.records() if r.step == "received"]
    assert not any(r.detail.get("redelivered") for r in received), "a held message was returned to its queue"
    assert verify(real.records(), real.head()) is None
    real.close()


def test_a_broker_refusing_our_publishes_is_waited_out_not_dead_lettered(vhost: str, audit_dsn: str) -> None:
    """The receivers' queue is full (reject-publish): our confirms come back negative until it drains."""
    store = open_audit_store(audit_dsn)
    connection = connect(vhost)
    try:
        full = "test.outputs.full"
        connection.channel.queue_declare(
            full, durable=True, arguments={"x-queue-type": "quorum", "x-max-length": 5, "x-overflow": "reject-publish"}
        )
        connection.channel.queue_bind(full, "rehab.referral", "#")
    finally:
        connection.close()
    events = referral_events(12)
    health = Health()
    with consumer(vhost, store, health):
        publish_events(vhost, events)
        # a quorum queue's length limit is approximate: it takes five, or a few more
        wait_for(lambda: queue_depth(vhost, full) >= 5 and not health.ready, 30, "the full queue to refuse")
        assert "broker unavailable" in " ".join(health.problems())
        threading.Event().wait(2)
        assert queue_depth(vhost, DLQ) == 0
        taken = take_all(vhost, full)
        while len(referrals_by_event(taken)) < 12:  # republished ones come again, byte for byte
            wait_for(lambda: queue_depth(vhost, full) > 0, 30, "more referrals once there is room")
            taken += take_all(vhost, full)
        wait_for(lambda: health.ready, 10, "readiness to recover")
    found = referrals_by_event(taken)
    assert set(found) == {e for e, _ in events} and all(len(ids) == 1 for ids in found.values())
    assert queue_depth(vhost, DLQ) == 0
    store.close()
