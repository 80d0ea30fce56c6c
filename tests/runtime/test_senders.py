"""What real senders do, on the real broker: retries after a lost confirm, a message-id reused for other
content, and hostile AMQP properties and headers. Nothing is lost, nothing is dropped silently, and the
consumer never crashes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pika
import pytest

from integration.adapters.sql.stores import open_audit_store
from integration.service.audit_chain import verify
from tests.cli_runs import run_integration
from tests.runtime.broker_helpers import (
    DLQ,
    INBOUND,
    connect,
    consumer_env,
    inbound_exchange,
    output_queue,
    queue_depth,
    referral_events,
    referrals_by_event,
    start_consumer,
    stop_process,
    take_all,
    unsettled,
    wait_for,
)
from tests.runtime.conftest import broker_url

HOSPITAL = inbound_exchange("discharge", "hospital")


def _publish_raw(vhost: str, body: bytes, **properties: Any) -> None:
    """Publish as a sender's own client would, with whatever properties it sets (user-id guest unless given)."""
    params = pika.URLParameters(broker_url(vhost))
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        properties.setdefault("user_id", "guest")
        channel.basic_publish(HOSPITAL, "discharge", body, pika.BasicProperties(**properties), mandatory=True)
    finally:
        connection.close()


def _dead_letters(vhost: str) -> list[Any]:
    return take_all(vhost, DLQ)


def _verified(audit_dsn: str) -> list[Any]:
    store = open_audit_store(audit_dsn)
    try:
        assert verify(store.records(), store.head()) is None
        return list(store.records())
    finally:
        store.close()


def test_a_senders_retries_within_one_batch_are_redeliveries_not_a_dead_lettered_batch(
    vhost: str, audit_dsn: str, tmp_path: Path
) -> None:
    """10 retry pairs among 200 events, published back to back so that each pair lands in one batch."""
    outputs = output_queue(vhost)
    events = referral_events(200)
    retried = {event_id for event_id, _ in events[5::20]}
    connection = connect(vhost)
    try:
        for event_id, body in events:
            copies = 2 if event_id in retried else 1
            for _ in range(copies):  # the publisher's retry after a lost confirm: same id, same bytes
                connection.publish(HOSPITAL, "discharge", body, event_id, content_type="application/json")
    finally:
        connection.close()
    assert len(retried) == 10
    process = start_consumer(vhost, audit_dsn, tmp_path / "consumer.log")
    try:
        wait_for(lambda: queue_depth(vhost, outputs) >= 200, 120, "a referral for each of the 200 events")
        wait_for(lambda: unsettled(vhost, INBOUND) == 0, 60, "the inbound queue to drain")
    finally:
        stop_process(process)
    found = referrals_by_event(take_all(vhost, outputs))
    assert set(found) == {e for e, _ in events} and all(len(ids) == 1 for ids in found.values())
    assert _dead_letters(vhost) == []
    records = _verified(audit_dsn)
    assert sum(1 for r in records if r.step == "acked") == 210  # every copy was settled
    assert sum(1 for r in records if r.step == "transformed") == 200


def test_a_reused_message_id_with_other_content_is_dead_lettered_naming_the_id(
    vhost: str, audit_dsn: str, tmp_path: Path
) -> None:
    outputs = output_queue(vhost)
    (first_id, first), (_, second), (_, third) = referral_events(3)
    other_patient = json.loads(second)
    assert json.loads(first)["patient"] != other_patient["patient"]
    process = start_consumer(vhost, audit_dsn, tmp_path / "consumer.log")
    try:
        _publish_raw(vhost, first, message_id=first_id)
        wait_for(lambda: queue_depth(vhost, outputs) == 1, 30, "the first referral")
        _publish_raw(vhost, second, message_id=first_id)  # a later, different event under the used id
        _publish_raw(vhost, first, message_id=first_id)  # and the first again: a redelivery, republished
        _publish_raw(vhost, third, message_id="fresh-id")
        wait_for(lambda: queue_depth(vhost, DLQ) == 1 and queue_depth(vhost, outputs) == 3, 30, "1 DLQ + 3 outputs")
    finally:
        stop_process(process)
    (dead,) = _dead_letters(vhost)
    assert dead.body == second
    assert dead.raw_headers["x-rehab-reason-code"] == "reused-message-id"
    assert first_id in dead.raw_headers["x-rehab-reason"] and "other content" in dead.raw_headers["x-rehab-reason"]
    messages = take_all(vhost, outputs)
    found = referrals_by_event(messages)
    assert len(found) == 2 and all(len(ids) == 1 for ids in found.values())  # first (twice, identical) and third
    records = _verified(audit_dsn)
    rejected = [r for r in records if r.step == "rejected"]
    assert [r.detail["code"] for r in rejected] == ["reused-message-id"] and rejected[0].message_id == first_id
    log = (tmp_path / "consumer.log").read_text()
    assert "a message-id was reused for other content" in log


HOSTILE = [
    # (what, body factory index, properties, expected: "processed" or the refused property)
    ("non-UTF-8 message-id", {"message_id": b"\xff\xfe-id"}, "message-id"),
    ("newline in the message-id", {"message_id": "evil\n  forged-line  fake reason"}, "message-id"),
    ("non-UTF-8 app-id", {"message_id": "app-id-test", "app_id": b"\xff\xfe"}, "processed"),
    ("x-delivery-count abc", {"message_id": "dc-abc", "headers": {"x-delivery-count": "abc"}}, "processed"),
    ("x-delivery-count 99", {"message_id": "dc-99", "headers": {"x-delivery-count": 99}}, "processed"),
    ("forged x-rehab-reason", {"message_id": "forged", "headers": {"x-rehab-reason": "forged"}}, "processed"),
    ("no user-id", {"message_id": "no-user", "user_id": None}, "user-id"),
]


def test_hostile_properties_and_headers_never_crash_the_consumer(vhost: str, audit_dsn: str, tmp_path: Path) -> None:
    outputs = output_queue(vhost)
    events = referral_events(len(HOSTILE) + 20)
    hostile, innocent = events[: len(HOSTILE)], events[len(HOSTILE) :]
    for (_, body), (_, properties, _) in zip(hostile, HOSTILE, strict=True):
        properties = dict(properties)
        user = properties.pop("user_id", "guest")
        _publish_raw(vhost, body, user_id=user, content_type="application/json", **properties)
    for event_id, body in innocent:
        _publish_raw(vhost, body, message_id=event_id, content_type="application/json")
    expected_processed = 20 + sum(1 for *_, outcome in HOSTILE if outcome == "processed")
    refused = [what for what, _, outcome in HOSTILE if outcome != "processed"]
    process = start_consumer(vhost, audit_dsn, tmp_path / "consumer.log")
    try:
        wait_for(
            lambda: queue_depth(vhost, outputs) >= expected_processed and queue_depth(vhost, DLQ) >= len(refused),
            60,
            "every innocent and acceptable message processed, the hostile ones dead-lettered",
        )
        assert process.poll() is None, "the consumer crashed"
        listed = run_integration("dlq", "list", "--flow", "discharge", env=consumer_env(vhost, audit_dsn), text=True)
    finally:
        stop_process(process)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0] == f"{DLQ}: {len(refused)} message(s)" and len(lines) == 1 + len(refused), listed.stdout
    assert "forged-line" in listed.stdout and "\\n" in listed.stdout  # escaped, on its own line
    dead = _dead_letters(vhost)
    reasons = sorted(m.raw_headers["x-rehab-reason"].split(":")[0] for m in dead)
    assert reasons == sorted(outcome for *_, outcome in HOSTILE if outcome != "processed")
    assert all(m.raw_headers["x-rehab-reason-code"] == "invalid-input" for m in dead)
    assert queue_depth(vhost, outputs) == expected_processed
    records = _verified(audit_dsn)
    assert not any(r.step == "gave-up" for r in records), "no message gave up on its first attempt"


@pytest.mark.parametrize("count", ["abc", 99])
def test_x_delivery_count_from_a_publisher_is_ignored(audit_dsn: str, count: object) -> None:
    """In-process, with a flow that fails: the attempts come from our store, whatever the header says."""
    from datetime import UTC, datetime

    from integration.adapters.memory import InMemoryBroker
    from integration.bootstrap import build
    from integration.config import Settings
    from integration.service.processor import FLOW_ATTEMPTS, Delivery

    def broken(body: bytes, now: datetime, state: Any) -> Any:
        raise RuntimeError("a bug")

    store = open_audit_store(audit_dsn)
    broker = InMemoryBroker()
    processor = build(
        Settings.from_env({}),
        bus=broker,
        store=store,
        clock=lambda: datetime(2026, 11, 20, tzinfo=UTC),
        handlers={"discharge": broken},
    ).processor
    delivery = Delivery("discharge", b"{}", "m-1", headers={"x-delivery-count": count}, source="guest")
    outcomes = [processor.process(delivery).disposition for _ in range(FLOW_ATTEMPTS)]
    assert outcomes == ["failed"] * (FLOW_ATTEMPTS - 1) + ["dead-lettered"]
    (dead,) = broker.queues["rehab.discharge-events.dlq"]
    assert f"all {FLOW_ATTEMPTS} attempts" in dead.headers["x-rehab-reason"]
    store.close()
