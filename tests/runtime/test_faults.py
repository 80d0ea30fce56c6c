"""Fault tests on the real broker, bounded in time: a consumer killed with SIGKILL, the broker's app
stopped and started, mid-run of 2,000 events. Afterwards every event has exactly one referral
downstream (counted by distinct MessageHeader ids), none is lost, and the audit chain verifies."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from integration.audit_chain import verify
from integration.runtime.stores import open_audit_store
from tests.runtime.broker_helpers import (
    output_queue,
    publish_events,
    queue_depth,
    referral_events,
    referrals_by_event,
    start_consumer,
    take_all,
    wait_for,
)
from tests.runtime.conftest import rabbitmqctl

EVENTS = 2000


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def _assert_exactly_one_referral_each(
    vhost: str, outputs: str, events: list[tuple[str, bytes]], audit_dsn: str
) -> None:
    messages = take_all(vhost, outputs)
    found = referrals_by_event(messages)
    assert set(found) == {event_id for event_id, _ in events}, f"{len(events) - len(found)} events lost"
    assert all(len(ids) == 1 for ids in found.values()), "an event got two different referrals"
    bodies: dict[str, bytes] = {}
    for message in messages:  # a republished referral is byte-identical to the first
        assert bodies.setdefault(message.message_id, message.body) == message.body
    store = open_audit_store(audit_dsn)
    try:
        assert verify(store.records(), store.head()) is None
    finally:
        store.close()


def test_kill_9_mid_run_loses_nothing_and_duplicates_nothing(vhost: str, audit_dsn: str, tmp_path: Path) -> None:
    outputs = output_queue(vhost)
    events = referral_events(EVENTS)
    publish_events(vhost, events)
    log = tmp_path / "consumer.log"
    process = start_consumer(vhost, audit_dsn, log)
    wait_for(lambda: queue_depth(vhost, outputs) >= EVENTS // 4, 120, "a quarter of the events")
    process.kill()  # SIGKILL: no chance to finish anything
    process.wait(timeout=30)
    process = start_consumer(vhost, audit_dsn, log)
    try:
        wait_for(lambda: queue_depth(vhost, outputs) >= EVENTS, 240, "every event after the restart")
    finally:
        _stop(process)
    _assert_exactly_one_referral_each(vhost, outputs, events, audit_dsn)


def test_broker_stop_and_start_mid_run_loses_nothing(vhost: str, audit_dsn: str, tmp_path: Path) -> None:
    outputs = output_queue(vhost)
    events = referral_events(EVENTS)
    publish_events(vhost, events)
    process = start_consumer(vhost, audit_dsn, tmp_path / "consumer.log")
    try:
        wait_for(lambda: queue_depth(vhost, outputs) >= EVENTS // 4, 120, "a quarter of the events")
        rabbitmqctl("stop_app")
        try:
            assert process.poll() is None, "the consumer must survive the broker going away"
        finally:
            rabbitmqctl("start_app")
            rabbitmqctl("await_startup")
        wait_for(lambda: queue_depth(vhost, outputs) >= EVENTS, 240, "every event after the broker came back")
    finally:
        _stop(process)
    _assert_exactly_one_referral_each(vhost, outputs, events, audit_dsn)
