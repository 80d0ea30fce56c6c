"""What the running consumer says about itself when it cannot work, with `integration run` as a process on a vhost
of the test's own: the audit store going away while no message arrives fails /readyz within seconds (the idle
consumer asks the store), and a queue the topology lacks is retried with backoff, said once in the log and on
/readyz, until `topology apply` makes it, and the consumer then consumes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from integration.adapters.consumer import ConsumerService
from integration.adapters.health import Health
from integration.adapters.rabbitmq import BrokerSettings, connected
from integration.adapters.sql.stores import open_audit_store
from integration.bootstrap import build
from integration.config import Settings
from integration.topology import FLOWS_BY_NAME
from tests.conftest import FIXED_NOW
from tests.runtime.broker_helpers import (
    INBOUND,
    connect,
    log_lines,
    output_queue,
    publish_events,
    queue_depth,
    readyz,
    referral_events,
    running,
    start_consumer,
    stop_process,
    target_url,
    wait_for,
)
from tests.runtime.rabbit_nodes import free_port
from tests.runtime.tcp_proxy import TcpProxy


@pytest.mark.parametrize("cut", ["refuse", "blackhole"])
def test_the_store_going_away_while_the_consumer_is_idle_fails_readiness_and_is_said_once(
    vhost_of_its_own: str, postgres_dsn: str, tmp_path: Path, cut: str
) -> None:
    vhost = vhost_of_its_own
    outputs = output_queue(vhost)
    log = tmp_path / "consumer.log"
    health = free_port()
    with TcpProxy("127.0.0.1", 5432) as proxy:
        dsn = postgres_dsn.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        process = start_consumer(vhost, dsn, log, INTEGRATION_HEALTH_LISTEN=f"127.0.0.1:{health}")
        try:
            wait_for(lambda: readyz(health)[0] == 200, 30, "the consumer to be ready")
            getattr(proxy, cut)()
            cut_at = time.monotonic()
            wait_for(lambda: readyz(health)[0] == 503, 30, "readiness to fail while idle")
            noticed = time.monotonic() - cut_at
            assert "audit-store unavailable" in readyz(health)[1]
            time.sleep(8)  # more probes fail meanwhile: they say nothing new
            assert log_lines(log, "audit-store unavailable") == 1, log.read_text()[-3000:]
            proxy.forward()
            wait_for(lambda: readyz(health)[0] == 200, 40, "readiness once the store is back")
            assert log_lines(log, "audit-store available again") == 1
            events = referral_events(3)
            publish_events(vhost, events)
            wait_for(lambda: queue_depth(vhost, outputs) >= 3, 30, "the events after the outage")
            assert process.poll() is None and "Traceback" not in log.read_text()
        finally:
            stop_process(process)
    assert noticed < (10 if cut == "refuse" else 25), f"readiness failed only {noticed:.0f} s after the store went"


def test_a_missing_queue_is_waited_for_with_backoff_said_once_and_fails_readiness(
    vhost_of_its_own: str, audit_dsn: str, tmp_path: Path
) -> None:
    vhost = vhost_of_its_own
    connection = connect(vhost)
    try:
        connection.delete_queue(INBOUND)  # an operator deleted it, or the topology was never applied
    finally:
        connection.close()
    outputs = output_queue(vhost)
    log = tmp_path / "consumer.log"
    health = free_port()
    process = start_consumer(vhost, audit_dsn, log, INTEGRATION_HEALTH_LISTEN=f"127.0.0.1:{health}")
    try:
        wait_for(lambda: log_lines(log, INBOUND) >= 1, 30, "a line naming the missing queue")
        time.sleep(5)
        lines = log.read_text().splitlines()
        assert len(lines) < 20, f"{len(lines)} log lines in 5 s: " + "\n".join(lines[-5:])
        assert log_lines(log, "integration topology apply") == 1, "\n".join(lines)
        status, text = readyz(health)
        assert status == 503 and INBOUND in text and "topology apply" in text, text
        assert process.poll() is None
        with connected(BrokerSettings(target_url(vhost))) as applying:
            applying.apply_topology()
        events = referral_events(3)
        publish_events(vhost, events)
        wait_for(lambda: queue_depth(vhost, outputs) >= 3, 60, "the consumer to consume once the queue is there")
        wait_for(lambda: readyz(health)[0] == 200, 10, "readiness once consuming")
        assert "Traceback" not in log.read_text()
    finally:
        stop_process(process)
    assert process.returncode == 0


def test_a_black_holed_broker_is_noticed_within_the_heartbeats_and_left_for_the_next_connection(
    vhost_of_its_own: str, audit_dsn: str, tmp_path: Path
) -> None:
    """A path to the broker that moves no bytes (a hung node, a middlebox dropping payload): the heartbeats give
    up within 40 s (15 s heartbeat; pika's check every 20 s), /readyz says so, and the consumer reconnects."""
    vhost = vhost_of_its_own
    outputs = output_queue(vhost)
    log = tmp_path / "consumer.log"
    health = free_port()
    with TcpProxy("127.0.0.1", 5672) as proxy:
        url = target_url(vhost).replace("127.0.0.1:5672", f"127.0.0.1:{proxy.port}")
        process = start_consumer(url, audit_dsn, log, INTEGRATION_HEALTH_LISTEN=f"127.0.0.1:{health}")
        try:
            wait_for(lambda: readyz(health)[0] == 200, 30, "the consumer to be ready")
            proxy.blackhole()
            cut_at = time.monotonic()
            wait_for(lambda: "broker unavailable" in readyz(health)[1], 60, "readiness to fail")
            noticed = time.monotonic() - cut_at
            proxy.forward()
            wait_for(lambda: readyz(health)[0] == 200, 60, "readiness once the path is back")
            publish_events(vhost, referral_events(2))
            wait_for(lambda: queue_depth(vhost, outputs) >= 2, 30, "the events after the reconnection")
        finally:
            stop_process(process)
    assert noticed < 42, f"a black-holed broker went unnoticed for {noticed:.0f} s"
    assert log_lines(log, "broker connection lost") == 1


def test_waiting_out_a_missing_queue_is_alive_for_healthz(vhost_of_its_own: str, audit_dsn: str) -> None:
    """The backoff is the loop's work, not a stuck loop: /healthz must not have the consumer restarted for it."""
    vhost = vhost_of_its_own
    connection = connect(vhost)
    try:
        connection.delete_queue(INBOUND)
    finally:
        connection.close()
    now = [0.0]
    health = Health(clock=lambda: now[0])
    store = open_audit_store(audit_dsn)
    wiring = build(Settings.from_env({}), store=store, clock=lambda: FIXED_NOW)
    service = ConsumerService(
        BrokerSettings(target_url(vhost)),
        [FLOWS_BY_NAME["discharge"]],
        wiring.processor_on,
        health=health,
        retry_initial=20.0,
    )
    try:
        with running(service):
            wait_for(lambda: any(INBOUND in line for line in health.problems()), 30, "the missing queue on /readyz")
            now[0] += 3600.0  # an hour later by the health's clock, still in the first backoff by the real one
            time.sleep(2)
            assert health.alive
    finally:
        store.close()
