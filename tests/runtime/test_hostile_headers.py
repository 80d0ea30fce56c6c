"""A header table that pika cannot decode (a timestamp past the year 9999, tables nested 2,000 deep, a number
that cannot be written again) is a refusal of that one message, not a lost connection: on a vhost of the
test's own, hostile messages interleaved with innocent ones; the consumer keeps its one connection, every
innocent message is processed exactly once, and each hostile one is dead-lettered on its first delivery
with a reason naming its headers, audited and counted."""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pika
import pytest
from prometheus_client import REGISTRY

from integration.adapters.consumer import ConsumerService
from integration.adapters.rabbitmq import BrokerSettings, RabbitConnection, drain, received
from integration.adapters.sql.stores import open_audit_store
from integration.bootstrap import build
from integration.config import Settings
from integration.service.audit_chain import verify
from integration.service.processor import RetryPolicy
from integration.topology import FLOWS_BY_NAME
from tests.conftest import FIXED_NOW
from tests.runtime.broker_helpers import (
    INBOUND_ROUTES,
    output_queue,
    queue_depth,
    referral_events,
    referrals_by_event,
    take_all,
    unsettled,
    wait_for,
)
from tests.runtime.conftest import broker_url
from tests.runtime.tcp_proxy import TcpProxy

FAST = RetryPolicy(attempts=2, seconds=1, initial_wait=0.01, max_wait=0.05)
INBOUND = "rehab.discharge-events"
DLQ = "rehab.discharge-events.dlq"
P = pika.spec.BasicProperties


def _short(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">B", len(raw)) + raw


def _table(*fields: bytes) -> bytes:
    """An AMQP field table of already encoded (name, value) pairs."""
    inner = b"".join(fields)
    return struct.pack(">I", len(inner)) + inner


def _nested(depth: int) -> bytes:
    table = _table()
    for _ in range(depth):
        table = _table(_short("n") + b"F" + table)
    return table


HOSTILE_TABLES = {
    "timestamp-after-9999": _table(_short("sent-at") + b"T" + struct.pack(">Q", 2**62)),
    "nested-2000-deep": _nested(2000),
    "a-double-no-long-can-hold": _table(_short("size") + b"d" + struct.pack(">d", 1e300)),
    "timestamp-in-an-array": _table(_short("times") + b"A" + struct.pack(">I", 9) + b"T" + struct.pack(">Q", 2**63)),
}


class RawProperties(pika.BasicProperties):
    """Properties whose encoding is given as bytes: what a hostile publisher's own client would send."""

    def __init__(self, raw: bytes) -> None:
        super().__init__()
        self.raw = raw

    def encode(self) -> list[bytes]:
        return [self.raw]


def hostile_properties(table: bytes, message_id: str, user_id: str = "guest") -> RawProperties:
    """content-type, the hostile header table, persistent, message-id and user-id, in the AMQP order."""
    flags = P.FLAG_CONTENT_TYPE | P.FLAG_HEADERS | P.FLAG_DELIVERY_MODE | P.FLAG_MESSAGE_ID | P.FLAG_USER_ID
    return RawProperties(
        struct.pack(">H", flags) + _short("application/json") + table + b"\x02" + _short(message_id) + _short(user_id)
    )


@contextmanager
def consumer(url: str, store: Any) -> Iterator[ConsumerService]:
    wiring = build(Settings.from_env({}), store=store, clock=lambda: FIXED_NOW, retry=FAST)
    service = ConsumerService(
        BrokerSettings(url, prefetch=20),
        [FLOWS_BY_NAME["discharge"]],
        wiring.processor_on,
        reconnect_max_wait=1.0,
    )
    worker = threading.Thread(target=service.run, daemon=True)
    worker.start()
    try:
        yield service
    finally:
        service.stop()
        worker.join(timeout=30)
        assert not worker.is_alive(), "the consumer did not stop"


def _publish_interleaved(vhost: str, innocent: list[tuple[str, bytes]], every: int) -> dict[str, bytes]:
    """The innocent events, with a hostile message after every `every`-th; the hostile ones' id → body."""
    exchange, routing_key = INBOUND_ROUTES["discharge"]
    hostile: dict[str, bytes] = {}
    connection = pika.BlockingConnection(pika.URLParameters(broker_url(vhost)))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        tables = iter(HOSTILE_TABLES.items())
        for index, (event_id, body) in enumerate(innocent, 1):
            properties = pika.BasicProperties(
                message_id=event_id, user_id="guest", content_type="application/json", delivery_mode=2
            )
            channel.basic_publish(exchange, routing_key, body, properties, mandatory=True)
            if index % every == 0 and (kind := next(tables, None)):
                name, table = kind
                hostile_body = b'{"hostile": "' + name.encode() + b'"}'
                channel.basic_publish(
                    exchange, routing_key, hostile_body, hostile_properties(table, f"hostile-{name}"), mandatory=True
                )
                hostile[f"hostile-{name}"] = hostile_body
    finally:
        connection.close()
    assert len(hostile) == len(HOSTILE_TABLES)
    return hostile


def _dead_letters() -> float:
    return REGISTRY.get_sample_value("rehab_dead_letters_total", {"flow": "discharge", "reason": "invalid-input"}) or 0


def test_undecodable_headers_refuse_that_message_alone_and_keep_the_connection(
    vhost_of_its_own: str, audit_dsn: str
) -> None:
    vhost = vhost_of_its_own
    outputs = output_queue(vhost)
    events = referral_events(50)
    hostile = _publish_interleaved(vhost, events, every=10)
    store = open_audit_store(audit_dsn)
    counted = _dead_letters()
    with TcpProxy("127.0.0.1", 5672) as proxy:
        url = broker_url(vhost).replace("127.0.0.1:5672", f"127.0.0.1:{proxy.port}")
        with consumer(url, store):
            wait_for(
                lambda: queue_depth(vhost, outputs) >= len(events) and queue_depth(vhost, DLQ) >= len(hostile),
                60,
                "every innocent event processed and every hostile one dead-lettered",
            )
            wait_for(lambda: unsettled(vhost, INBOUND) == 0, 10, "the inbound queue to be acked empty")
        assert proxy.accepted == 1, f"the consumer connected {proxy.accepted} times: a message dropped its connection"
    found = referrals_by_event(take_all(vhost, outputs))
    assert set(found) == {e for e, _ in events} and all(len(ids) == 1 for ids in found.values())
    dead = take_all(vhost, DLQ)
    assert sorted(m.message_id for m in dead) == sorted(hostile), "each hostile message dead-lettered once"
    for message in dead:
        assert message.body == hostile[message.message_id], "the dead letter carries the body unchanged"
        reason = message.raw_headers["x-rehab-reason"]
        assert reason.startswith("headers:") and "could not be" in reason, reason
        assert message.raw_headers["x-rehab-reason-code"] == "invalid-input"
        assert message.raw_headers["x-rehab-source"] == "guest"
    records = list(store.records())
    rejected = [r for r in records if r.step == "rejected"]
    assert sorted(r.message_id for r in rejected) == sorted(hostile), "each refusal audited once"
    assert all(r.detail["reason"].startswith("headers:") for r in rejected)
    assert not any(r.detail.get("redelivered") for r in records if r.step == "received"), "a message came back"
    assert verify(records, store.head()) is None
    assert _dead_letters() - counted == len(hostile)
    store.close()


@pytest.mark.parametrize("name", sorted(HOSTILE_TABLES))
def test_the_adapter_reads_a_hostile_table_as_a_refusal_naming_the_headers(vhost_of_its_own: str, name: str) -> None:
    """Read with basic.get (as `dlq list` reads): the properties around the table survive, the message is refused."""
    vhost = vhost_of_its_own
    exchange, routing_key = INBOUND_ROUTES["discharge"]
    connection = RabbitConnection(BrokerSettings(broker_url(vhost)))
    try:
        connection.channel.basic_publish(
            exchange, routing_key, b"{}", hostile_properties(HOSTILE_TABLES[name], "m-1"), mandatory=True
        )
        (message,) = drain(connection, INBOUND, 10)
    finally:
        connection.close()
    assert message.problem is not None and message.problem[0] == "headers"
    assert "could not be" in message.problem[1]
    assert (message.message_id, message.source, message.content_type) == ("m-1", "guest", "application/json")
    assert message.headers == {} and message.raw_headers == {}


def test_headers_nested_deeper_than_any_sender_needs_are_refused() -> None:
    """A table pika can still decode, but deep enough to exhaust the stack when written again deeper down."""
    properties = pika.spec.props[P.INDEX]()
    encoded = struct.pack(">H", P.FLAG_HEADERS) + _nested(300)
    properties.decode(encoded)
    message = received(pika.spec.Basic.Deliver(delivery_tag=1, routing_key="discharge"), properties, b"{}")
    assert message.problem is not None and message.problem[0] == "headers" and "nested" in message.problem[1]
