"""Confirms in flight (decision 29) on the real broker: a window of publishes confirmed whole, or refused naming
exactly the positions the broker did confirm; a batch acked with one `multiple` ack, never one that takes along a
delivery still held; a delivery refused for want of an earlier message held, tried again, and refused only after
its wait (decision 31)."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest

from integration.adapters import consumer as consumer_module
from integration.adapters.rabbitmq import BrokerSettings, RabbitConnection
from integration.adapters.sql.stores import open_audit_store
from integration.errors import ConnectionLost, Unconfirmed
from integration.service.audit_chain import verify
from integration.service.ports import Publication
from integration.topology import DEAD_LETTER_EXCHANGE, FLOWS_BY_NAME
from tests.pathway_runs import SCENARIOS, steps
from tests.runtime.broker_helpers import (
    collector,
    connect,
    consumer,
    output_queue,
    publish,
    publish_events,
    queue_depth,
    referral_events,
    referrals_by_event,
    take_all,
    target_url,
    unsettled,
    wait_for,
)


def _window(queue: str, count: int) -> list[Publication]:
    return [Publication("", queue, b"message %d" % i, f"window-{i}") for i in range(count)]


def test_a_window_is_confirmed_whole_and_arrives_in_order(vhost_of_its_own: str) -> None:
    queue = collector(vhost_of_its_own, "amq.direct", "nothing")  # a queue of its own, reached by its name
    connection = connect(vhost_of_its_own)
    try:
        connection.publish_all(_window(queue, 300))
    finally:
        connection.close()
    taken = take_all(vhost_of_its_own, queue)
    assert [m.message_id for m in taken] == [f"window-{i}" for i in range(300)]
    assert {m.source for m in taken} == {"guest"}  # our broker user as the AMQP user-id, on every one


def test_a_full_queue_refuses_exactly_the_overflow_and_names_the_confirmed(vhost_of_its_own: str) -> None:
    connection = connect(vhost_of_its_own)
    try:
        connection.declare_queue("full", {"x-queue-type": "classic", "x-max-length": 3, "x-overflow": "reject-publish"})
        with pytest.raises(Unconfirmed) as refused:
            connection.publish_all(_window("full", 5))
        assert refused.value.confirmed == frozenset({0, 1, 2})
        assert refused.value.dependency == "broker" and "refused the message" in str(refused.value)
        take_all(vhost_of_its_own, "full")
        connection.publish_all(_window("full", 2))  # the same connection goes on once the queue is drained
    finally:
        connection.close()


def test_an_unroutable_message_in_a_window_is_not_confirmed(vhost_of_its_own: str) -> None:
    queue = collector(vhost_of_its_own, "amq.direct", "nothing")
    window = _window(queue, 3)
    window[1] = Publication("amq.topic", "no.binding", b"lost?", "window-unroutable")
    connection = connect(vhost_of_its_own)
    try:
        with pytest.raises(Unconfirmed) as refused:
            connection.publish_all(window)
    finally:
        connection.close()
    assert refused.value.confirmed == frozenset({0, 2})
    assert "unroutable: amq.topic no.binding" in str(refused.value)
    assert refused.value.dependency == "topology", "the broker is up: its topology lacks a queue"


def test_a_window_to_a_missing_exchange_is_a_lost_connection_naming_it(vhost_of_its_own: str) -> None:
    connection = connect(vhost_of_its_own)
    try:
        with pytest.raises(ConnectionLost, match="publishing channel.*no exchange 'no-such-exchange'"):
            connection.publish_all([Publication("no-such-exchange", "x", b"x", "m-1")])
    finally:
        connection.close()


def test_confirms_later_than_the_timeout_are_awaited_not_answered_with_another_copy(vhost_of_its_own: str) -> None:
    """A window that gives up before the broker confirmed (an alarm, a slow quorum): its retry must not publish
    again what is still in flight on the channel — each retry would add a copy for as long as the broker is slow.
    A classic queue, counted (a passive declare) rather than drained: exact, and no basic.get on a busy queue."""
    connection = RabbitConnection(BrokerSettings(target_url(vhost_of_its_own), confirm_timeout=0.000001))
    window, gave_up = _window("late-confirms", 1000), 0
    try:
        connection.declare_queue("late-confirms", {"x-queue-type": "classic"})
        for _ in range(200):
            try:
                connection.publish_all(window)
                break
            except Unconfirmed as exc:  # as the processor does: the retry asks only for what was not confirmed
                window = [p for i, p in enumerate(window) if i not in exc.confirmed]
                gave_up += 1
        held = connection.message_count("late-confirms")
    finally:
        connection.close()
    assert gave_up > 0, "the broker confirmed a thousand messages within a microsecond: the test proves nothing"
    assert held == 1000, f"copies: {held - 1000}"


class AckSpy:
    """Records every ack the consumer sends (the real ack is sent too)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[int, bool]] = []
        real = RabbitConnection.ack

        def ack(connection: RabbitConnection, delivery_tag: int, multiple: bool = False) -> None:
            self.calls.append((delivery_tag, multiple))
            real(connection, delivery_tag, multiple)

        monkeypatch.setattr(RabbitConnection, "ack", ack)


def test_a_batch_is_acked_with_one_multiple_ack(
    vhost_of_its_own: str, audit_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    vhost = vhost_of_its_own
    spy = AckSpy(monkeypatch)
    outputs = output_queue(vhost)
    events = referral_events(60)
    publish_events(vhost, events)  # before the consumer starts: they arrive together, batches of up to 20
    store = open_audit_store(audit_dsn)
    with consumer(vhost, store) as service:
        wait_for(lambda: service.handled == len(events), 60, "every event acked")
    calls = list(spy.calls)  # the consumer's (take_all acks on a connection of its own)
    wait_for(lambda: unsettled(vhost, FLOWS_BY_NAME["discharge"].queue) == 0, 15, "the queue's counts")
    assert len(calls) <= 8, f"{len(calls)} acks for {len(events)} deliveries"
    assert any(multiple for _, multiple in calls)
    found = referrals_by_event(take_all(vhost, outputs))
    assert set(found) == {e for e, _ in events} and all(len(ids) == 1 for ids in found.values())
    records = list(store.records())
    assert Counter(r.step for r in records)["acked"] == len(events)  # written with a later batch, or when idle
    assert verify(records, store.head()) is None
    store.close()


def _scenario(name: str) -> Any:
    return next(s for s in SCENARIOS if s.name.startswith(name))


def test_a_visitation_before_its_discharge_waits_for_it_instead_of_being_refused(
    vhost_of_its_own: str, audit_dsn: str
) -> None:
    """A visitation taken by this consumer before the discharge it follows (which, with competing consumers, may
    be in another process's batch): held, tried again, and processed once its discharge is."""
    vhost = vhost_of_its_own
    dead = collector(vhost, DEAD_LETTER_EXCHANGE, "discharge")
    discharge, visitation = steps(_scenario("01-"))[:2]
    assert "visitation" in visitation.body.decode()
    store = open_audit_store(audit_dsn)
    with consumer(vhost, store, clock_at=visitation.received_at) as service:
        publish(vhost, "discharge", [(visitation.message_id, visitation.body)])
        threading.Event().wait(1.0)  # the visitation alone, held meanwhile
        assert service.handled == 0 and queue_depth(vhost, dead) == 0
        publish(vhost, "discharge", [(discharge.message_id, discharge.body)])
        wait_for(lambda: service.handled == 2, 30, "the discharge, then the visitation")
    assert take_all(vhost, dead) == []
    steps_of = Counter((r.message_id, r.step) for r in store.records())
    assert steps_of[(visitation.message_id, "transformed")] == 1
    assert steps_of[(visitation.message_id, "received")] == 1  # its waits recorded nothing
    store.close()


def test_a_held_delivery_is_never_acked_by_a_multiple_ack_and_is_refused_after_its_wait(
    vhost_of_its_own: str, audit_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A visitation whose discharge never comes is held while the events after it are processed and acked: the
    acks of those must not take it along; after its wait it is dead-lettered `out-of-order`, as before."""
    vhost = vhost_of_its_own
    spy = AckSpy(monkeypatch)
    dead = collector(vhost, DEAD_LETTER_EXCHANGE, "discharge")
    _, visitation = steps(_scenario("01-"))[:2]
    events = referral_events(30)
    publish(vhost, "discharge", [(visitation.message_id, visitation.body), *events])
    store = open_audit_store(audit_dsn)
    with consumer(vhost, store, clock_at=visitation.received_at, wait_for_earlier=2.0) as service:
        wait_for(lambda: service.handled == len(events) + 1, 30, "the events, then the visitation refused")
    calls = list(spy.calls)  # the consumer's (take_all acks on a connection of its own)
    letters = take_all(vhost, dead)
    assert [m.message_id for m in letters] == [visitation.message_id]
    assert letters[0].raw_headers["x-rehab-reason-code"] == "out-of-order"
    wait_for(lambda: unsettled(vhost, FLOWS_BY_NAME["discharge"].queue) == 0, 15, "the queue's counts")
    held_tag = min(tag for tag, _ in calls)  # the first delivery: the visitation, acked once, on its own
    assert [(tag, multiple) for tag, multiple in calls if tag == held_tag] == [(held_tag, False)]
    before_its_ack = calls[: calls.index((held_tag, False))]
    assert before_its_ack and not any(multiple for _, multiple in before_its_ack), "a multiple ack took it along"
    store.close()


def test_the_wait_for_an_earlier_message_is_bounded_by_default() -> None:
    assert 0 < consumer_module.WAIT_FOR_EARLIER <= 30
