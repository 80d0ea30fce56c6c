"""Fault tests on a RabbitMQ node of the test's own, bounded in time: a consumer killed with SIGKILL many times
at random moments and at each durable step of the processor, and the broker node itself killed, mid-run of
2,000 events. Afterwards every event has exactly one referral downstream (counted by distinct MessageHeader
ids), the dead-letter queue holds exactly the poison messages sent on purpose, and the audit chain verifies."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from integration.adapters.rabbitmq import BrokerSettings, connected
from integration.adapters.sql.stores import open_audit_store
from integration.service.audit_chain import verify
from tests.runtime.broker_helpers import (
    DLQ,
    INBOUND,
    consumer,
    consumer_env,
    output_queue,
    publish_events,
    queue_depth,
    referral_events,
    referrals_by_event,
    start_consumer,
    stop_process,
    take_all,
    unsettled,
    wait_for,
)

EVENTS = 2000


@pytest.fixture
def broker(own_broker) -> str:  # type: ignore[no-untyped-def]
    """The own node's URL, with a fresh vhost and the service's topology applied."""
    import uuid

    vhost = f"faults-{uuid.uuid4().hex[:8]}"
    own_broker.node.add_vhost(vhost)
    url = own_broker.url(vhost)
    with connected(BrokerSettings(url)) as connection:
        connection.apply_topology()
    return url


def _with_poison(events: list[tuple[str, bytes]], every: int) -> tuple[list[tuple[str, bytes]], set[str]]:
    """Every `every`-th event made invalid on purpose: these, and only these, must end in the dead-letter queue."""
    poisoned = set()
    for index in range(every - 1, len(events), every):
        event_id, body = events[index]
        events[index] = (event_id, body.replace(b'"schemaVersion":"1"', b'"schemaVersion":"9"'))
        poisoned.add(event_id)
    return events, poisoned


def _assert_exactly_once(
    broker: str, outputs: str, events: list[tuple[str, bytes]], poisoned: set[str], dsn: str
) -> None:
    messages = take_all(broker, outputs)
    found = referrals_by_event(messages)
    expected = {event_id for event_id, _ in events} - poisoned
    assert set(found) == expected, f"{len(expected - set(found))} events lost"
    assert all(len(ids) == 1 for ids in found.values()), "an event got two different referrals"
    bodies: dict[str, bytes] = {}
    for message in messages:  # a republished referral is byte-identical to the first
        assert bodies.setdefault(message.message_id, message.body) == message.body
    dead = {m.message_id for m in take_all(broker, DLQ)}
    assert dead == poisoned, "the dead-letter queue holds exactly the poison messages"
    store = open_audit_store(dsn)
    try:
        assert verify(store.records(), store.head()) is None
    finally:
        store.close()


def _finish(node, broker: str, dsn: str, log: Path, outputs: str, expected: int) -> None:  # type: ignore[no-untyped-def]
    """Run the consumer until every inbound message is acked (hence its outputs confirmed), then stop it."""
    process = start_consumer(broker, dsn, log)
    try:
        wait_for(lambda: queue_depth(broker, outputs) >= expected, 240, "every event after the restarts")
        wait_for(lambda: unsettled(broker, INBOUND, node.ctl) == 0, 120, "every inbound message acked")
    finally:
        stop_process(process)


def test_kill_9_many_times_mid_run_loses_nothing_and_duplicates_nothing(
    own_broker, broker: str, audit_dsn: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    outputs = output_queue(broker)
    events, poisoned = _with_poison(referral_events(EVENTS), every=97)
    publish_events(broker, events)
    log = tmp_path / "consumer.log"
    for kill in range(6):  # six SIGKILLs at whatever moment the consumer is in
        process = start_consumer(broker, audit_dsn, log)
        done = queue_depth(broker, outputs)
        wait_for(lambda done=done: queue_depth(broker, outputs) >= done + 150, 120, f"progress before kill {kill + 1}")
        process.kill()
        process.wait(timeout=30)
    _finish(own_broker.node, broker, audit_dsn, log, outputs, EVENTS - len(poisoned))
    _assert_exactly_once(broker, outputs, events, poisoned, audit_dsn)


# Each durable step, and the points confirm windows added (decision 29): a window half published, and the
# "published" records committed before the batch's one multiple ack.
POINTS = ["handled", "dead-lettered", "committed", "published", "mid-window", "recorded"]


def test_kill_9_at_each_durable_step_loses_nothing_and_duplicates_nothing(
    own_broker, broker: str, audit_dsn: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    outputs = output_queue(broker)
    events, poisoned = _with_poison(referral_events(EVENTS), every=41)
    publish_events(broker, events)
    log = tmp_path / "consumer.log"
    env = consumer_env(broker, audit_dsn)
    kills = 0
    for point in POINTS * 2:  # each durable step, twice, at a different batch each time
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "tests.runtime.fault_consumer", point, str(2 + kills)],
                env=env,
                stdout=out,
                stderr=out,
            )
        assert process.wait(timeout=120) == -signal.SIGKILL, f"the consumer was not killed at {point}"
        kills += 1
    assert log.read_text().count("fault injection: SIGKILL at") == len(POINTS) * 2
    _finish(own_broker.node, broker, audit_dsn, log, outputs, EVENTS - len(poisoned))
    _assert_exactly_once(broker, outputs, events, poisoned, audit_dsn)


def test_broker_node_killed_and_restarted_mid_run_loses_nothing(
    own_broker, broker: str, audit_dsn: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    outputs = output_queue(broker)
    events = referral_events(EVENTS)
    publish_events(broker, events)
    process = start_consumer(broker, audit_dsn, tmp_path / "consumer.log")
    try:
        wait_for(lambda: queue_depth(broker, outputs) >= EVENTS // 4, 120, "a quarter of the events")
        own_broker.node.kill()  # the whole node, abruptly: no goodbye to the consumer
        try:
            assert process.poll() is None, "the consumer must survive the broker going away"
        finally:
            own_broker.node.start()
        wait_for(lambda: queue_depth(broker, outputs) >= EVENTS, 240, "every event after the broker came back")
        wait_for(lambda: unsettled(broker, INBOUND, own_broker.node.ctl) == 0, 120, "every inbound message acked")
        assert process.poll() is None
    finally:
        stop_process(process)
    _assert_exactly_once(broker, outputs, events, set(), audit_dsn)


def _consumer_connections(own_broker, vhost: str) -> set[str]:  # type: ignore[no-untyped-def]
    """The peer ports of the node's connections on `vhost` (one per connection our consumer holds)."""
    listed = own_broker.ctl("list_connections", "vhost", "peer_port", "--silent").splitlines()
    return {port for name, port in (line.split("\t") for line in listed if "\t" in line) if name == vhost}


def test_consumer_reconnects_when_the_broker_closes_its_connections(own_broker, broker: str, audit_dsn: str) -> None:  # type: ignore[no-untyped-def]
    """The node closes every connection of the vhost mid-run (an operator's `close_all_connections`, a node
    going into maintenance): the consumer connects again and every event gets exactly one referral."""
    vhost = unquote(urlsplit(broker).path.lstrip("/"))
    store = open_audit_store(audit_dsn)
    outputs = output_queue(broker)
    events = referral_events(300)
    try:
        with consumer(broker, store):
            publish_events(broker, events[:150])
            wait_for(lambda: queue_depth(broker, outputs) >= 50, 60, "a first part")
            before = _consumer_connections(own_broker, vhost)
            assert before, "the consumer holds a connection to the node"
            own_broker.ctl("close_all_connections", "--vhost", vhost, "test: dropped on purpose")
            wait_for(lambda: not before & _consumer_connections(own_broker, vhost), 30, "the connections to close")
            publish_events(broker, events[150:])
            wait_for(lambda: queue_depth(broker, outputs) >= 300, 90, "all 300 after the reconnection")
            wait_for(lambda: unsettled(broker, INBOUND, own_broker.node.ctl) == 0, 60, "every inbound message acked")
            assert _consumer_connections(own_broker, vhost), "the consumer connected again"
        _assert_exactly_once(broker, outputs, events, set(), audit_dsn)
    finally:
        store.close()
