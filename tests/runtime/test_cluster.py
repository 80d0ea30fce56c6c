"""The service on a 3-node RabbitMQ cluster of the test's own with quorum queues (one cluster for the module).

A lost broker node: the node the consumer is connected to is stopped mid-run of 2,000 events. The consumer and
the sender both carry on through the other nodes (several broker URLs); nothing is lost, no event gets two
different referrals, and progress resumes within seconds.

Past one machine: three consumer processes, each connected first to a different node, compete for the same
queues with PostgreSQL as the one store, and one node is stopped mid-run; every event still gets exactly one
referral and the audit chain the three wrote together verifies."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest
from prometheus_client.parser import text_string_to_metric_families

from integration.adapters.rabbitmq import BrokerSettings, connected
from integration.adapters.sql.stores import open_audit_store
from integration.service.audit_chain import verify
from tests.runtime.broker_helpers import (
    INBOUND_ROUTES,
    log_lines,
    output_queue,
    queue_depth,
    referral_events,
    referrals_by_event,
    start_consumer,
    stop_process,
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
    cluster.ensure_running()
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


# -- competing consumers, one per node, on PostgreSQL ------------------------------------------------------

SPREAD_EVENTS = 2000  # a few thousand cost CI more than the ~90 s this test may take on two cores
CONSUMERS = 3
INBOUND_QUEUES = ("rehab.discharge-events", "rehab.discharge-events.dlq")


def _rotated(urls: list[str], first: int) -> list[str]:
    """The cluster's URLs starting at node `first`: a consumer or sender prefers that node, then the others."""
    return urls[first:] + urls[:first]


def _queue_placement(cluster: RabbitCluster, vhost: str) -> dict[str, tuple[str, list[str]]]:
    """queue name → (type, members) as the cluster reports them (`rabbitmqctl list_queues type members`)."""
    listed = json.loads(cluster.ctl("list_queues", "-p", vhost, "name", "type", "members", "--formatter", "json"))
    return {q["name"]: (q["type"], sorted(q["members"])) for q in listed}


def _health_port(log: Path) -> int:
    """The port of the consumer's /metrics, from its log line 'health endpoint' (it binds port 0)."""
    found = re.findall(r'"url": "http://127\.0\.0\.1:(\d+)/readyz"', log.read_text())
    assert found, f"the consumer never said where its health endpoint is:\n{log.read_text()[-2000:]}"
    return int(found[0])


def _settled(port: int) -> dict[str, int]:
    """Discharge events this consumer process settled, by outcome (its own rehab_messages counter)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        sample.labels["outcome"]: int(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "rehab_messages_total" and sample.labels.get("flow") == "discharge"
    }


def _processed(port: int) -> int:
    """Discharge events this consumer process processed (not redeliveries it answered from the store)."""
    return _settled(port).get("processed", 0)


def _answered(ports: list[int]) -> int:
    """Deliveries of discharge events the consumers settled without dead-lettering or returning them: the
    processed ones and the redeliveries answered with their stored outputs."""
    outcomes = ("processed", "replayed-outputs", "duplicate-in-batch")
    return sum(_settled(port).get(outcome, 0) for port in ports for outcome in outcomes)


def _first_node(log: Path, cluster: RabbitCluster) -> int:
    """Which node the consumer connected to first, from its first 'connected to the broker' line."""
    ports = re.findall(r'"node": "127\.0\.0\.1:(\d+)"', log.read_text())
    assert ports, "the consumer never said which node it connected to"
    return next(i for i, node in enumerate(cluster) if node.port == int(ports[0]))


def _bodies_by_event(messages: list[Any]) -> dict[str, set[bytes]]:
    """event id → the distinct bodies of the referrals sent for it (a redelivery resends the same bytes)."""
    found: dict[str, set[bytes]] = {}
    for message in messages:
        (event_id,) = referrals_by_event([message])
        found.setdefault(event_id, set()).add(bytes(message.body))
    return found


def _stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to every consumer still running at once, then wait for each (they drain side by side)."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        stop_process(process)


def test_three_consumers_on_three_nodes_share_the_events_and_survive_a_lost_node(
    rabbit_cluster: RabbitCluster, postgres_dsn: str, tmp_path: Path
) -> None:
    """Three `integration run` processes, each connected first to a different node of the cluster, compete for
    the quorum queues (replicated on all three nodes) while three senders publish through different nodes;
    PostgreSQL is the one store. A third of the way through, the second consumer's node is stopped: that
    consumer carries on through the next node of its list. Every event gets one referral (copies only byte for
    byte), every consumer took its share, and the audit chain the three wrote together verifies."""
    cluster = rabbit_cluster
    cluster.ensure_running()
    vhost = f"consumers-{uuid.uuid4().hex[:6]}"
    cluster[0].add_vhost(vhost)
    urls = cluster.urls(vhost)
    everywhere = ",".join(urls)
    with connected(BrokerSettings(everywhere)) as connection:
        connection.apply_topology()
    placement = _queue_placement(cluster, vhost)
    every_node = sorted(n.name for n in cluster)
    for queue in INBOUND_QUEUES:
        assert placement[queue] == ("quorum", every_node), f"{queue} is not replicated on every node: {placement}"
    outputs = output_queue(everywhere)
    events = referral_events(SPREAD_EVENTS)
    logs = [tmp_path / f"consumer-{i}.log" for i in range(CONSUMERS)]
    processes = [start_consumer(",".join(_rotated(urls, i)), postgres_dsn, logs[i]) for i in range(CONSUMERS)]
    started = time.monotonic()
    try:
        wait_for(lambda: all(log_lines(log, '"consuming"') for log in logs), 60, "all three consumers consuming")
        assert [_first_node(log, cluster) for log in logs] == list(range(CONSUMERS))
        ports = [_health_port(log) for log in logs]
        thirds = [events[i::CONSUMERS] for i in range(CONSUMERS)]
        senders = [ClusterSender(_rotated(urls, i), thirds[i], per_second=400).start() for i in range(CONSUMERS)]
        for sender in senders:
            sender.join(120)

        wait_for(lambda: _answered(ports) >= SPREAD_EVENTS // 3, 120, "a third of the events processed")
        lost, before = 1, _answered(ports)
        cluster[lost].stop()
        wait_for(lambda: _answered(ports) > before + 30, 60, "progress after the node was lost")
        # a redelivery answered from the store counts too, so this is reached no later than the last event
        wait_for(lambda: _answered(ports) >= SPREAD_EVENTS, 180, "as many answers as events")
        wait_for(lambda: _acked_events(postgres_dsn) >= SPREAD_EVENTS, 60, "every distinct event acked")
        shares = [_processed(p) for p in ports]
        took = time.monotonic() - started
        assert [p.poll() for p in processes] == [None] * CONSUMERS, "a consumer exited"
        assert _connected_node(logs[lost], cluster) == lost + 1, "the consumer did not move to its next node"
    finally:
        _stop_all(processes)
    assert all(share > 0 for share in shares), f"not every consumer took events: {shares}"
    alive = ",".join(u for i, u in enumerate(urls) if i != lost)
    bodies = _bodies_by_event(take_all(alive, outputs))
    assert set(bodies) == {e for e, _ in events}, f"{SPREAD_EVENTS - len(bodies)} events without a referral"
    assert all(len(b) == 1 for b in bodies.values()), "an event got two different referrals"
    assert queue_depth(alive, "rehab.discharge-events.dlq") == 0
    store = open_audit_store(postgres_dsn, create=False)
    try:
        records = list(store.records())
        assert verify(records, store.head()) is None
    finally:
        store.close()
    discharge = [r for r in records if r.flow == "discharge"]
    assert len({r.message_id for r in discharge if r.step == "acked"}) == SPREAD_EVENTS
    # processed once across the three processes: one transformation per event in the one chain (a consumer that
    # lost its node after its commit saw its deliveries answered by another from the store, not processed again)
    transformed = Counter(r.message_id for r in discharge if r.step == "transformed")
    assert len(transformed) == SPREAD_EVENTS and set(transformed.values()) == {1}, "an event was processed twice"
    # The stopped node stays down: the fixture deletes it, and every test of the module starts with
    # ensure_running().
    print(f"{SPREAD_EVENTS} events in {took:.0f} s, node {lost + 1} stopped at a third; per consumer: {shares}")
