"""An upgrade from a release that declared the inbound queues with other arguments (a delivery limit of 5):
`integration topology apply` names the queues, `--migrate` re-creates them keeping every message, and the
consumer then processes them as coming from their real sender. On vhosts of the test's own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from integration.adapters.queue_migration import differing_queues, holding_queue, migrate
from integration.adapters.rabbitmq import drain
from integration.errors import ConfigurationError
from integration.topology import DELIVERY_LIMIT, FLOWS_BY_NAME, REPLAY_EXCHANGE, inbound_queue_arguments
from tests.runtime.broker_helpers import (
    connect,
    consumer_env,
    output_queue,
    queue_depth,
    referral_events,
    referrals_by_event,
    start_consumer,
    take_all,
    wait_for,
)
from tests.runtime.conftest import rabbitmqctl

QUEUE = FLOWS_BY_NAME["discharge"].queue
DLQ = FLOWS_BY_NAME["discharge"].dead_letter_queue


def as_an_earlier_release_left_it(vhost: str, messages: list[tuple[str, bytes]]) -> None:
    """The discharge queue declared with the old delivery limit, holding `messages` from user guest, and one
    without a user-id (which the consumer refuses)."""
    connection = connect(vhost)
    try:
        connection.delete_queue(QUEUE)
        old = inbound_queue_arguments(FLOWS_BY_NAME["discharge"]) | {"x-delivery-limit": 5}
        connection.declare_queue(QUEUE, old)
        for message_id, body in messages:
            connection.publish("", QUEUE, body, message_id, content_type="application/json")
        connection.user = None  # no user-id property on the next one
        connection.publish("", QUEUE, b'{"anonymous": true}', "no-user-id", content_type="application/json")
    finally:
        connection.close()


def delivery_limit(vhost: str) -> int:
    listing = json.loads(rabbitmqctl("list_queues", "-p", vhost, "name", "arguments", "--formatter", "json"))
    arguments = next(q["arguments"] for q in listing if q["name"] == QUEUE)
    return int(next(value for name, _, value in arguments if name == "x-delivery-limit"))


def test_apply_names_the_queue_an_earlier_release_declared_and_migrate_keeps_every_message(
    vhost_of_its_own: str, audit_dsn: str, tmp_path: Path
) -> None:
    events = referral_events(30)
    as_an_earlier_release_left_it(vhost_of_its_own, events)

    env = consumer_env(vhost_of_its_own, audit_dsn)
    plain = subprocess.run(
        [sys.executable, "-m", "integration", "topology", "apply"], env=env, capture_output=True, text=True
    )
    assert plain.returncode == 3, plain.stderr
    assert "Traceback" not in plain.stderr
    assert QUEUE in plain.stderr and "--migrate" in plain.stderr
    assert queue_depth(vhost_of_its_own, QUEUE) == len(events) + 1  # nothing touched

    migrated = subprocess.run(
        [sys.executable, "-m", "integration", "topology", "apply", "--migrate"], env=env, capture_output=True, text=True
    )
    assert migrated.returncode == 0, migrated.stderr
    assert f"queue {QUEUE} re-created" in migrated.stdout
    assert delivery_limit(vhost_of_its_own) == DELIVERY_LIMIT
    again = subprocess.run(
        [sys.executable, "-m", "integration", "topology", "apply"], env=env, capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr

    # Every message back, in order, unchanged, through rehab.replay naming its real sender.
    connection = connect(vhost_of_its_own)
    try:
        back = drain(connection, QUEUE, 1000)
        assert [(m.message_id, m.body) for m in back] == events
        assert {m.exchange for m in back} == {REPLAY_EXCHANGE}
        assert {m.raw_headers["x-rehab-original-source"] for m in back} == {"guest"}
        for message in back:
            connection.requeue(message.delivery_tag)
    finally:
        connection.close()
    # The one the consumer would refuse is dead-lettered, naming the property.
    refused = take_all(vhost_of_its_own, DLQ)
    assert len(refused) == 1 and "user-id" in refused[0].raw_headers["x-rehab-reason"]

    # And the consumer turns them into referrals as before.
    outputs = output_queue(vhost_of_its_own)
    consumer = start_consumer(vhost_of_its_own, audit_dsn, tmp_path / "consumer.log")
    try:
        wait_for(lambda: queue_depth(vhost_of_its_own, outputs) >= len(events), 60, "the referrals")
    finally:
        consumer.terminate()
        consumer.wait(30)
    found = referrals_by_event(take_all(vhost_of_its_own, outputs))
    assert len(found) == len(events) and all(len(ids) == 1 for ids in found.values())
    assert queue_depth(vhost_of_its_own, DLQ) == 0


def test_migration_refuses_while_a_consumer_is_attached(vhost_of_its_own: str) -> None:
    as_an_earlier_release_left_it(vhost_of_its_own, referral_events(3))
    attached = connect(vhost_of_its_own)
    attached.consume(QUEUE, lambda _: None)
    try:
        connection = connect(vhost_of_its_own)
        try:
            (state,) = differing_queues(connection)
            with pytest.raises(ConfigurationError, match="consumer"):
                migrate(connection, state)
        finally:
            connection.close()
    finally:
        attached.close()
    assert queue_depth(vhost_of_its_own, QUEUE) == 4


def test_a_migration_cut_short_is_finished_by_the_next_run(vhost_of_its_own: str) -> None:
    """As if the last run died after re-creating the queue: its messages still wait in the holding queue."""
    events = referral_events(5)
    connection = connect(vhost_of_its_own)
    try:
        holding = holding_queue(QUEUE)
        connection.declare_queue(holding, {"x-queue-type": "quorum"})
        for message_id, body in events:
            connection.publish("", holding, body, message_id, {"x-rehab-original-source": "rehab-hospital"})
        (state,) = differing_queues(connection)
        assert state.name == QUEUE
        migrate(connection, state)
        connection.apply_topology()
        back = drain(connection, QUEUE, 100)
        assert [(m.message_id, m.body) for m in back] == events
        assert {m.raw_headers["x-rehab-original-source"] for m in back} == {"rehab-hospital"}
        assert differing_queues(connection) == []
    finally:
        connection.close()
    assert holding_queue(QUEUE) not in rabbitmqctl("list_queues", "-p", vhost_of_its_own, "name", "--silent")
