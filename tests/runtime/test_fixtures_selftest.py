"""The fault-injection fixtures work: a private RabbitMQ node, a private 3-node cluster, the TCP proxy.

The cluster test is marked `rabbit_cluster`: run it alone with `-m rabbit_cluster`, leave it out with
`-m "not rabbit_cluster"`.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid

import pytest

from tests.runtime.conftest import PG_ADMIN_DSN
from tests.runtime.rabbit_nodes import SHARED_NODE, VHOST, OwnBroker, RabbitCluster
from tests.runtime.tcp_proxy import TcpProxy

pika = pytest.importorskip("pika")
psycopg = pytest.importorskip("psycopg")


def amqp(url: str) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(f"{url}?connection_attempts=1&socket_timeout=5"))


def shared_broker_listens() -> bool:
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex(("127.0.0.1", 5672)) == 0


def test_own_node_starts_takes_a_pika_connection_and_stops(own_broker: OwnBroker) -> None:
    node = own_broker.node
    assert node.name != SHARED_NODE and node.port != 5672
    assert VHOST in own_broker.ctl("list_vhosts", "--silent").split()

    connection = amqp(own_broker.url())
    channel = connection.channel()
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.basic_publish("", queue, b"hello")
    got = None
    for _ in range(50):
        _, _, got = channel.basic_get(queue, auto_ack=True)
        if got is not None:
            break
        time.sleep(0.05)
    assert got == b"hello"
    connection.close()

    pid = node.pid()
    node.stop()
    assert not node.is_running(), f"beam process {pid} of {node.name} still runs after stop()"
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        amqp(own_broker.url())
    assert shared_broker_listens(), "the shared broker on 5672 must be untouched"


@pytest.mark.rabbit_cluster
def test_cluster_of_three_keeps_a_quorum_queue_when_a_node_stops(rabbit_cluster: RabbitCluster) -> None:
    names = {n.name for n in rabbit_cluster}
    assert len(names) == 3 and SHARED_NODE not in names
    assert rabbit_cluster.running_nodes() == sorted(names)

    queue = f"selftest.{uuid.uuid4().hex[:6]}"
    connection = amqp(rabbit_cluster.url())
    channel = connection.channel()
    channel.confirm_delivery()
    channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    channel.basic_publish("", queue, b"survives", pika.BasicProperties(delivery_mode=2), mandatory=True)
    connection.close()

    listed = json.loads(
        rabbit_cluster.ctl("list_queues", "-p", VHOST, "name", "leader", "members", "--formatter", "json")
    )
    (entry,) = [q for q in listed if q["name"] == queue]
    assert sorted(entry["members"]) == sorted(names)
    leader = next(n for n in rabbit_cluster if n.name == entry["leader"])
    leader.stop()
    assert not leader.is_running()

    survivor = next(n for n in rabbit_cluster if n is not leader)
    connection = amqp(survivor.url(VHOST))
    try:
        channel = connection.channel()
        body = None
        deadline = time.monotonic() + 30  # a new leader is elected within a few seconds
        while body is None and time.monotonic() < deadline:
            try:
                _, _, body = channel.basic_get(queue, auto_ack=True)
            except pika.exceptions.ChannelClosed:
                channel = connection.channel()
            if body is None:
                time.sleep(0.2)
        assert body == b"survives"
    finally:
        connection.close()

    # abrupt loss works too: SIGKILL of one more node's beam process (the fixture cleans up the rest)
    victim = next(n for n in rabbit_cluster if n is not leader and n is not survivor)
    victim.kill()
    assert not victim.is_running()
    assert shared_broker_listens()


def test_proxy_forwards_refuses_blackholes_and_recovers() -> None:
    with TcpProxy("127.0.0.1", 5432) as proxy:
        dsn = f"postgresql://postgres@127.0.0.1:{proxy.port}/test"
        try:
            with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        except psycopg.OperationalError as exc:
            pytest.fail(f"PostgreSQL is not reachable on 127.0.0.1:5432 through the proxy (.ci/run starts it): {exc}")

        # refuse: the held connection breaks at once, new ones are refused, the real server is untouched
        held = psycopg.connect(dsn, autocommit=True, connect_timeout=5)
        proxy.refuse()
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            held.execute("SELECT 1")
        with pytest.raises(psycopg.OperationalError, match="(?i)refused"):
            psycopg.connect(dsn, connect_timeout=5)
        assert time.monotonic() - started < 2
        held.close()
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5) as direct:
            assert direct.execute("SELECT 1").fetchone() == (1,)

        # forward again: a new connection works
        proxy.forward()
        held = psycopg.connect(dsn, autocommit=True, connect_timeout=5)
        assert held.execute("SELECT 2").fetchone() == (2,)

        # blackhole: a query on the held connection hangs, a new connection gets no answer
        proxy.blackhole()
        result: list[object] = []
        query = threading.Thread(target=lambda: result.append(held.execute("SELECT 3").fetchone()), daemon=True)
        query.start()
        query.join(timeout=1.5)
        assert query.is_alive() and not result, "a query through the black hole must hang"
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(dsn, connect_timeout=2)  # libpq's smallest connect_timeout
        assert time.monotonic() - started >= 1.9

        # healed: the held connection's query completes, and new connections work
        proxy.forward()
        query.join(timeout=5)
        assert result == [(3,)]
        held.close()
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            assert conn.execute("SELECT 4").fetchone() == (4,)
        assert not proxy.errors
