"""A lost broker node: on a 3-node cluster of the test's own with quorum queues, the node the consumer is
connected to is stopped mid-run of 2,000 events. The consumer and the sender both carry on through the other
nodes (several broker URLs); nothing is lost, no event gets two different referrals, and progress resumes
within seconds."""

from __future__ import annotations

import re
import signal
import threading
import time
from pathlib import Path

import pika
import pika.exceptions
import pytest

from integration.adapters.rabbitmq import BrokerSettings, connected
from integration.adapters.sql.stores import open_audit_store
from integration.service.audit_chain import verify
from tests.runtime.broker_helpers import (
    INBOUND_ROUTES,
    output_queue,
    queue_depth,
    referral_events,
    referrals_by_event,
    start_consumer,
    take_all,
    wait_for,
)
from tests.runtime.rabbit_nodes import RabbitCluster

pytestmark = pytest.mark.rabbit_cluster
EVENTS = 2000
RESUME_WITHIN = 20.0  # seconds from the node's loss to the next referral


class ClusterSender:
    """What a sender must do against a cluster: list every node, publish persistent and mandatory with
    confirms, and after a lost connection reconnect to another node and publish again whatever was not
    confirmed — with the same message-id and the same bytes, which the service takes as a redelivery."""

    def __init__(self, urls: list[str], events: list[tuple[str, bytes]], per_second: float) -> None:
        self.urls, self.events, self.per_second = urls, events, per_second
        self.sent = 0
        self.reconnects = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ClusterSender:
        self._thread.start()
        return self

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the sender is stuck after {self.sent} events"
        if self.error:
            raise self.error

    def _connect(self) -> pika.adapters.blocking_connection.BlockingChannel:
        parameters = [pika.URLParameters(u) for u in self.urls]
        for p in parameters:
            p.connection_attempts, p.socket_timeout = 1, 2
        connection = pika.BlockingConnection(parameters)
        channel = connection.channel()
        channel.confirm_delivery()
        return channel

    def _run(self) -> None:
        exchange, routing_key = INBOUND_ROUTES["discharge"]
        try:
            channel = self._connect()
            while self.sent < len(self.events):
                event_id, body = self.events[self.sent]
                properties = pika.BasicProperties(
                    message_id=event_id, delivery_mode=2, content_type="application/json", user_id="guest"
                )
                try:
                    channel.basic_publish(exchange, routing_key, body, properties, mandatory=True)
                except (pika.exceptions.AMQPError, OSError):
                    self.reconnects += 1
                    deadline = time.monotonic() + 30
                    while True:
                        try:
                            channel = self._connect()
                            break
                        except pika.exceptions.AMQPConnectionError:
                            if time.monotonic() > deadline:
                                raise
                            time.sleep(0.2)
                    continue  # the same event again: it was not confirmed
                self.sent += 1
                time.sleep(1 / self.per_second)
        except BaseException as exc:  # reported by join()
            self.error = exc


def _connected_node(log: Path, cluster: RabbitCluster) -> int:
    """Which node the consumer connected to last, from its log line 'connected to the broker' (node=host:port)."""
    ports = re.findall(r'"node": "127\.0\.0\.1:(\d+)"', log.read_text())
    assert ports, "the consumer never said which node it connected to"
    return next(i for i, node in enumerate(cluster) if node.port == int(ports[-1]))


def _acked_events(audit_dsn: str) -> int:
    store = open_audit_store(audit_dsn, create=False)
    try:
        return len({r.message_id for r in store.records() if r.step == "acked" and r.flow == "discharge"})
    finally:
        store.close()


def test_losing_the_connected_node_mid_run_loses_nothing_and_resumes_within_seconds(
    rabbit_cluster: RabbitCluster, audit_dsn: str, tmp_path: Path
) -> None:
    cluster = rabbit_cluster
    urls = cluster.urls()
    with connected(BrokerSettings(",".join(urls))) as connection:
        connection.apply_topology()
    everywhere = ",".join(urls)
    outputs = output_queue(everywhere)
    events = referral_events(EVENTS)
    log = tmp_path / "consumer.log"
    process = start_consumer(everywhere, audit_dsn, log)
    sender = ClusterSender(urls, events, per_second=150).start()
    try:
        wait_for(lambda: queue_depth(everywhere, outputs) >= EVENTS // 4, 120, "a quarter of the events")
        lost = _connected_node(log, cluster)
        before = queue_depth(everywhere, outputs)
        stopped_at = time.monotonic()
        cluster[lost].stop()
        wait_for(lambda: queue_depth(everywhere, outputs) > before + 10, 60, "progress after the node was lost")
        resumed = time.monotonic() - stopped_at
        assert resumed < RESUME_WITHIN, f"progress resumed only after {resumed:.0f} s"
        assert _connected_node(log, cluster) != lost
        sender.join(120)
        wait_for(lambda: queue_depth(everywhere, outputs) >= EVENTS, 180, "every event")
        # republished copies after the node loss can fill the output queue before the last events are taken:
        # wait until the store has acked every distinct event, not for a count of outputs
        wait_for(lambda: _acked_events(audit_dsn) >= EVENTS, 120, "every distinct event acked")
        assert process.poll() is None
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
        cluster.ensure_running()
    found = referrals_by_event(take_all(everywhere, outputs))
    assert set(found) == {e for e, _ in events}, f"{EVENTS - len(found)} events lost"
    assert all(len(ids) == 1 for ids in found.values()), "an event got two different referrals"
    assert queue_depth(everywhere, "rehab.discharge-events.dlq") == 0
    store = open_audit_store(audit_dsn)
    try:
        assert verify(store.records(), store.head()) is None
    finally:
        store.close()
    print(f"progress resumed {resumed:.1f} s after the node was lost; the sender reconnected {sender.reconnects}x")


def test_a_comma_separated_list_starts_and_skips_a_dead_first_node(
    rabbit_cluster: RabbitCluster, audit_dsn: str, tmp_path: Path
) -> None:
    """The list is tried in order on every connection: the first node down does not keep the service away."""
    cluster = rabbit_cluster
    cluster.ensure_running()
    urls = cluster.urls()
    with connected(BrokerSettings(urls[1])) as connection:
        connection.apply_topology()
    cluster[0].stop()
    try:
        everywhere = ",".join(urls)
        outputs = output_queue(",".join(urls[1:]))
        events = referral_events(50)
        sender = ClusterSender(urls, events, per_second=500).start()
        process = start_consumer(everywhere, audit_dsn, tmp_path / "consumer.log")
        try:
            sender.join(60)
            wait_for(lambda: queue_depth(urls[1], outputs) >= 50, 60, "50 referrals with the first node down")
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0
    finally:
        cluster.ensure_running()
    assert len(referrals_by_event(take_all(urls[1], outputs))) == 50
