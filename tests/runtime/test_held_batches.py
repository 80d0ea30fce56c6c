"""A batch held through an outage is retried without repeating what it already did (decision 13): on the real
broker, a dead letter the broker confirmed is not published again, a rejection or a failure the store
committed is not audited or counted again, and an output the broker confirmed is not published again —
whether the outage strikes after the dead letters, after the commit or after the outputs (the processor's
fault hook raises Transient there), or the receivers' queue refuses our outputs until it is drained."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest

from integration.adapters.health import Health
from integration.adapters.rabbitmq import BrokerSettings, connected
from integration.adapters.sql.stores import open_audit_store
from integration.errors import Transient
from integration.service.audit_chain import verify
from integration.topology import UNROUTED_QUEUE
from tests.runtime.broker_helpers import (
    DLQ,
    collector,
    consumer,
    publish_events,
    queue_depth,
    referral_events,
    referrals_by_event,
    refusing_queue,
    take_all,
    wait_for,
)
from tests.runtime.conftest import broker_url

WAITS = {"wait_initial": 0.05, "wait_max": 0.2}  # the consumer's wait for a dependency, short for a test


def _with_poison(events: list[tuple[str, bytes]], every: int) -> set[str]:
    poisoned = set()
    for index in range(every - 1, len(events), every):
        event_id, body = events[index]
        events[index] = (event_id, body.replace(b'"schemaVersion":"1"', b'"schemaVersion":"9"'))
        poisoned.add(event_id)
    return poisoned


def _assert_each_once(
    vhost: str, store: Any, events: list[tuple[str, bytes]], poisoned: set[str], outputs: str
) -> None:
    taken = take_all(vhost, outputs)
    published = Counter(m.message_id for m in taken)
    assert all(n == 1 for n in published.values()), f"outputs published again: {published.most_common(3)}"
    found = referrals_by_event(taken)
    assert set(found) == {e for e, _ in events} - poisoned and all(len(ids) == 1 for ids in found.values())
    dead = Counter(m.message_id for m in take_all(vhost, DLQ))
    assert dead == dict.fromkeys(poisoned, 1), f"dead letters published again: {dead.most_common(3)}"
    records = list(store.records())
    for step in ("rejected", "dead-lettered"):
        audited = Counter(r.message_id for r in records if r.step == step)
        assert audited == dict.fromkeys(poisoned, 1), f"{step} audited again: {audited.most_common(3)}"
    audited = Counter(r.detail["outputId"] for r in records if r.step == "published")
    assert sorted(audited) == sorted(published) and all(n == 1 for n in audited.values())
    assert not any(r.detail.get("redelivered") for r in records if r.step == "received")
    assert verify(records, store.head()) is None


class OutageAt:
    """The processor's fault hook: the dependency is away the first `times` times the batch reaches `point`."""

    def __init__(self, point: str, times: int) -> None:
        self.point, self.left, self.reached = point, times, 0

    def __call__(self, where: str) -> None:
        if where == self.point and self.left > 0:
            self.left -= 1
            self.reached += 1
            raise Transient(f"audit store (test) unavailable at {where}")


@pytest.mark.parametrize("point", ["dead-lettered", "committed", "published"])
def test_an_outage_after_a_durable_step_repeats_none_of_it(vhost_of_its_own: str, audit_dsn: str, point: str) -> None:
    vhost = vhost_of_its_own
    outputs = collector(vhost, "rehab.referral")
    events = referral_events(15)
    poisoned = _with_poison(events, every=5)
    store = open_audit_store(audit_dsn)
    outage = OutageAt(point, times=6)
    health = Health()
    publish_events(vhost, events)  # before the consumer starts: one batch of 15
    with consumer(vhost, store, fault=outage, health=health, **WAITS) as service:
        wait_for(lambda: service.handled == len(events), 60, "every event acked")
        assert outage.reached == 6
        wait_for(lambda: health.ready, 10, "readiness once the outage is over")
    _assert_each_once(vhost, store, events, poisoned, outputs)
    store.close()


def test_a_queue_refusing_our_outputs_repeats_no_dead_letter_and_no_confirmed_output(
    vhost_of_its_own: str, audit_dsn: str
) -> None:
    """The receivers' queue is full (reject-publish): the batch is held and retried until it is drained."""
    vhost = vhost_of_its_own
    full = "test.outputs.full"
    refusing_queue(vhost, full, 4)
    events = referral_events(15)
    poisoned = _with_poison(events, every=5)
    store = open_audit_store(audit_dsn)
    health = Health()
    publish_events(vhost, events)
    taken: list[Any] = []
    with consumer(vhost, store, health=health, **WAITS) as service:
        wait_for(lambda: queue_depth(vhost, full) >= 4 and not health.ready, 30, "the full queue to refuse")
        threading.Event().wait(3)  # many retries of the held batch meanwhile
        assert queue_depth(vhost, DLQ) == len(poisoned), "dead letters published again while the batch was held"
        while len(referrals_by_event(taken)) < len(events) - len(poisoned):
            taken += take_all(vhost, full)
            threading.Event().wait(0.3)
        wait_for(lambda: service.handled == len(events) and health.ready, 30, "every event acked")
    taken += take_all(vhost, full)
    published = Counter(m.message_id for m in taken)
    assert all(n == 1 for n in published.values()), f"confirmed outputs published again: {published.most_common(3)}"
    dead = Counter(m.message_id for m in take_all(vhost, DLQ))
    assert dead == dict.fromkeys(poisoned, 1)
    rejected = Counter(r.message_id for r in store.records() if r.step == "rejected")
    assert rejected == dict.fromkeys(poisoned, 1)
    store.close()


def test_an_unroutable_output_holds_the_batch_naming_the_topology_not_the_broker(
    vhost_of_its_own: str, audit_dsn: str
) -> None:
    """rehab.unrouted deleted and no receiver's queue bound: the broker is up but returns our referral. The batch
    is held (nothing lost), readiness names the topology — an operator is not sent to look for a broker outage —
    and once the topology is applied again the referral goes out and readiness comes back."""
    vhost = vhost_of_its_own
    with connected(BrokerSettings(broker_url(vhost))) as connection:
        connection.delete_queue(UNROUTED_QUEUE)
    store = open_audit_store(audit_dsn)
    health = Health()
    events = referral_events(1)
    publish_events(vhost, events)
    with consumer(vhost, store, health=health, **WAITS) as service:
        topology = lambda: [p for p in health.problems() if p.startswith("topology unavailable")]  # noqa: E731
        wait_for(topology, 30, "the returned referral to hold the batch")
        assert "unroutable: rehab.referral referral.municipality." in topology()[0]
        assert not any(p.startswith("broker") for p in health.problems()), "the broker is up"
        with connected(BrokerSettings(broker_url(vhost))) as connection:
            connection.apply_topology()
        wait_for(lambda: service.handled == 1 and health.ready, 30, "the referral sent once the queue is back")
    assert len(take_all(vhost, UNROUTED_QUEUE)) == 1
    store.close()
