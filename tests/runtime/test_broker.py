"""The service on the real RabbitMQ broker: topology, delivery semantics, dead letters, shutdown, reconnects."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from integration.adapters.sql.stores import open_audit_store
from integration.cli.ops import definitions_document
from integration.config import PROJECT_ROOT
from integration.errors import Transient
from tests.cli_runs import run_integration
from tests.runtime.broker_helpers import (
    DLQ,
    INBOUND,
    connect,
    consumer,
    consumer_env,
    output_queue,
    publish_events,
    queue_depth,
    referral_events,
    referrals_by_event,
    start_consumer,
    take_all,
    unsettled,
    wait_for,
)
from tests.runtime.conftest import rabbitmqctl


@contextmanager
def _connection(vhost: str) -> Iterator[Any]:
    connection = connect(vhost)
    try:
        yield connection
    finally:
        connection.close()


def test_topology_apply_is_idempotent(vhost: str) -> None:
    with _connection(vhost) as connection:
        first = connection.apply_topology()
        assert connection.apply_topology() == first
    assert "queue rehab.discharge-events" in first and "exchange rehab.referral" in first


def test_committed_definitions_match_the_topology() -> None:
    committed = (PROJECT_ROOT / "deploy" / "rabbitmq" / "definitions.json").read_bytes()
    assert committed == definitions_document(), (
        "run: integration topology export --out deploy/rabbitmq/definitions.json"
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_events_become_referrals_and_are_acked(vhost: str, backend: str, request, tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 'a.sqlite3'}" if backend == "sqlite" else request.getfixturevalue("postgres_dsn")
    store = open_audit_store(dsn)
    outputs = output_queue(vhost)
    events = referral_events(40)
    with consumer(vhost, store):
        publish_events(vhost, events)
        wait_for(lambda: queue_depth(vhost, outputs) >= 40, 60, "40 referrals")
        wait_for(lambda: unsettled(vhost, INBOUND) == 0, 30, "the inbound queue to drain")
    found = referrals_by_event(take_all(vhost, outputs))
    assert set(found) == {e for e, _ in events} and all(len(ids) == 1 for ids in found.values())
    steps = [r.step for r in store.records()]
    assert steps.count("acked") == 40 and steps.count("published") == 40
    store.close()


def test_redelivered_message_id_republishes_byte_identical_output(vhost: str, audit_dsn: str) -> None:
    store = open_audit_store(audit_dsn)
    outputs = output_queue(vhost)
    (event,) = referral_events(1)
    with consumer(vhost, store):
        publish_events(vhost, [event])
        wait_for(lambda: queue_depth(vhost, outputs) == 1, 30, "the first referral")
        publish_events(vhost, [event])  # the same message id again, as after a lost ack
        wait_for(lambda: queue_depth(vhost, outputs) == 2, 30, "the republished referral")
    first, second = take_all(vhost, outputs)
    assert first.body == second.body and first.message_id == second.message_id
    store.close()


def test_poison_message_is_dead_lettered_with_reason_while_others_flow(vhost: str, audit_dsn: str) -> None:
    store = open_audit_store(audit_dsn)
    outputs = output_queue(vhost)
    events = referral_events(5)
    poison_id, body = events[2]
    events[2] = (poison_id, body.replace(b'"schemaVersion":"1"', b'"schemaVersion":"9"'))
    before = queue_depth(vhost, DLQ)
    with consumer(vhost, store):
        publish_events(vhost, events)
        wait_for(lambda: queue_depth(vhost, outputs) == 4 and queue_depth(vhost, DLQ) == before + 1, 30, "4 + 1 DLQ")
    with _connection(vhost) as connection:
        dead = connection.get(DLQ)
        while dead.message_id != poison_id:
            dead = connection.get(DLQ)
    assert dead.body == events[2][1]
    assert dead.raw_headers["x-rehab-reason"] == "schemaVersion: must be '1'"
    assert dead.raw_headers["x-rehab-flow"] == "discharge"
    assert datetime.fromisoformat(dead.raw_headers["x-rehab-rejected-at"])
    take_all(vhost, outputs)
    store.close()


class UnavailableStore:
    """An audit store whose database is down."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def processed_many(self, *args: Any) -> None:
        raise Transient("database unavailable")

    def record(self, *args: Any, **kwargs: Any) -> None:
        raise Transient("database unavailable")


def test_persistent_transient_failure_ends_in_the_dlq_through_the_delivery_limit(vhost: str, audit_dsn: str) -> None:
    outputs = output_queue(vhost)
    (event,) = referral_events(1)
    before = queue_depth(vhost, DLQ)
    with consumer(vhost, UnavailableStore(None)):
        publish_events(vhost, [event])
        wait_for(lambda: queue_depth(vhost, DLQ) == before + 1, 60, "the broker to dead-letter after 5 deliveries")
    assert queue_depth(vhost, outputs) == 0  # nothing was published: nothing durable had been done
    with _connection(vhost) as connection:
        while True:
            dead = connection.get(DLQ)
            if dead.message_id == event[0]:
                break
    assert dead.raw_headers["x-first-death-reason"] == "delivery_limit"


def test_sigterm_finishes_in_flight_work_and_loses_nothing(vhost: str, audit_dsn: str, tmp_path: Path) -> None:
    outputs = output_queue(vhost)
    events = referral_events(400)
    publish_events(vhost, events)
    process = start_consumer(vhost, audit_dsn, tmp_path / "consumer.log")
    wait_for(lambda: queue_depth(vhost, outputs) >= 50, 60, "a first part to be processed")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    left = queue_depth(vhost, INBOUND)
    done = queue_depth(vhost, outputs)
    assert left > 0 and done + left >= 400  # stopped part way, and every event is either done or still queued
    process = start_consumer(vhost, audit_dsn, tmp_path / "consumer.log")
    try:
        # ready-message counts leave out messages in flight: wait for the outputs themselves
        wait_for(lambda: queue_depth(vhost, outputs) >= 400, 90, "the rest")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    found = referrals_by_event(take_all(vhost, outputs))
    assert len(found) == 400 and all(len(ids) == 1 for ids in found.values())


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_integration(*args, env=env, text=True, timeout=120)


def test_dlq_list_and_replay_after_a_mapping_fix(vhost: str, audit_dsn: str, tmp_path: Path) -> None:
    import shutil

    outputs = output_queue(vhost)
    ((event_id, body),) = referral_events(1)
    copenhagen = json.dumps({**json.loads(body), "patient": {**json.loads(body)["patient"], "municipalityCode": "101"}})
    env = consumer_env(vhost, audit_dsn)
    before = queue_depth(vhost, DLQ)
    process = start_consumer(vhost, audit_dsn, tmp_path / "consumer.log")
    try:
        publish_events(vhost, [(event_id, copenhagen.encode())])
        wait_for(lambda: queue_depth(vhost, DLQ) == before + 1, 30, "the message to be dead-lettered")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    listed = _cli("dlq", "list", "--flow", "discharge", env=env)
    assert listed.returncode == 0, listed.stderr
    assert event_id in listed.stdout and "municipality 101 (København) has no receiving endpoint" in listed.stdout
    assert queue_depth(vhost, DLQ) == before + 1  # listing leaves the messages where they are

    fixed = tmp_path / "mappings"
    shutil.copytree(PROJECT_ROOT / "mappings", fixed)
    municipalities = fixed / "municipalities.yaml"
    municipalities.write_text(
        municipalities.read_text(encoding="utf-8").replace(
            '{code: "101", name: "København", region: "Region Hovedstaden"}',
            '{code: "101", name: "København", region: "Region Hovedstaden", '
            'endpoint: {sor: "434761000016005", ean: "5790000101016", name: "Københavns Kommune, Forebyggelse"}}',
        ),
        encoding="utf-8",
    )
    env_fixed = {**env, "INTEGRATION_MAPPINGS_DIR": str(fixed)}
    process = start_consumer(vhost, audit_dsn, tmp_path / "consumer.log", INTEGRATION_MAPPINGS_DIR=str(fixed))
    try:
        replayed = _cli("dlq", "replay", "--flow", "discharge", "--id", event_id, env=env_fixed)
        assert replayed.returncode == 0, replayed.stderr
        assert "replayed 1 message(s)" in replayed.stdout
        wait_for(lambda: queue_depth(vhost, outputs) >= 1, 30, "the replayed referral")
        assert queue_depth(vhost, DLQ) == before  # only the named message left the DLQ
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    (message,) = [m for m in take_all(vhost, outputs) if event_id.encode() in m.body]
    assert json.loads(message.body)["entry"][0]["resource"]["destination"][0]["endpoint"].endswith("434761000016005")
    number = json.loads(copenhagen)["patient"]["replacementCpr"]  # generated patients have replacement numbers
    trail = _cli("audit", "trail", "--patient", f"{number['system']}|{number['value']}", env=env)
    assert trail.returncode == 0 and "published" in trail.stdout
    verified = _cli("audit", "verify", env=env)
    assert verified.returncode == 0 and "audit log intact" in verified.stdout


def test_demo_on_the_broker(vhost: str, audit_dsn: str, tmp_path: Path) -> None:
    """The demo runs in a vhost of its own, removed at the end: nothing reaches the configured vhost or store."""
    dlq_before = queue_depth(vhost, "rehab.discharge-events.dlq")
    done = run_integration("demo", env=consumer_env(vhost, audit_dsn), text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("broker: amqp://guest:***@127.0.0.1:5672/hjerterehab-demo-")
    own = lines[0].split("vhost ")[1].split()[0]
    assert f"vhost {own} removed" in lines and own not in rabbitmqctl("list_vhosts")
    # 13 patients from JSON, four re-routed (cancel + new), and the ADT^A03 the demo sends over MLLP
    assert sum("referral from" in line for line in lines) == 18
    assert any("no output: 07-no-referral" in line and "nothing to send" in line for line in lines)
    assert any("hotline: municipality-acute" in line and "hotline.oncall.715541000016001" in line for line in lines)
    assert any(
        "ack: municipality-routine.carecommunication" in line and "ack.434751000016002" in line for line in lines
    )
    assert any(line.strip().startswith("dead-lettered (rehab.discharge-events.dlq)") and "1," in line for line in lines)
    assert queue_depth(vhost, "rehab.discharge-events.dlq") == dlq_before
    assert not Path(audit_dsn.removeprefix("sqlite:///")).exists()  # the service's store is not touched
