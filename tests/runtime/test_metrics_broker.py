"""The broker-derived gauges on a RabbitMQ vhost of the test's own: the dead-letter and inbound queues' depths by a
passive declare on the consumer's connection (nothing created, no message touched), a missing queue reported as
none rather than empty, and the consumer loop refreshing them while it consumes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from prometheus_client import REGISTRY

from integration.adapters.sql.sqlite import SqliteAuditStore
from integration.service.metrics_refresh import GaugeRefresher
from integration.topology import DEAD_LETTER_EXCHANGE, FLOWS_BY_NAME, REFUSED_QUEUE
from tests.conftest import FIXED_NOW
from tests.runtime.broker_helpers import DLQ, INBOUND, connect, consumer, queue_depth, wait_for

HOTLINE_DLQ = FLOWS_BY_NAME["hotline"].dead_letter_queue


def _dead_letters(vhost: str, flow: str, count: int) -> None:
    connection = connect(vhost)
    try:
        for n in range(count):
            connection.publish(DEAD_LETTER_EXCHANGE, flow, b"{}", f"dl-{n}", content_type="application/json")
    finally:
        connection.close()


def test_queue_depths_count_ready_messages_and_name_no_depth_for_a_missing_queue(vhost_of_its_own: str) -> None:
    _dead_letters(vhost_of_its_own, "discharge", 3)
    connection = connect(vhost_of_its_own)
    try:
        depths = connection.queue_depths([DLQ, "rehab.no-such-queue", HOTLINE_DLQ, REFUSED_QUEUE])
        assert depths == {DLQ: 3, "rehab.no-such-queue": None, HOTLINE_DLQ: 0, REFUSED_QUEUE: 0}
        connection.process_events(0)  # the connection is still good after the refusal (a side channel was closed)
    finally:
        connection.close()
    assert queue_depth(vhost_of_its_own, DLQ) == 3  # counted, not taken


class EmptyStore:
    def outbound_count(self, _state: object) -> int:
        return 0

    def open_requests(self) -> Sequence[object]:
        return []

    def head(self) -> tuple[int, str]:
        return 0, ""


def test_the_refresher_sets_the_dead_letter_queue_gauge_from_the_broker(vhost_of_its_own: str) -> None:
    _dead_letters(vhost_of_its_own, "hotline", 2)
    connection = connect(vhost_of_its_own)
    try:
        GaugeRefresher(EmptyStore(), {}, 8, [HOTLINE_DLQ, REFUSED_QUEUE], lambda: FIXED_NOW)(connection)
    finally:
        connection.close()
    assert REGISTRY.get_sample_value("rehab_dead_letter_queue_messages", {"queue": HOTLINE_DLQ}) == 2
    assert REGISTRY.get_sample_value("rehab_dead_letter_queue_messages", {"queue": REFUSED_QUEUE}) == 0


def test_the_consumer_loop_refreshes_the_gauges_while_it_consumes(vhost_of_its_own: str, tmp_path: Path) -> None:
    _dead_letters(vhost_of_its_own, "discharge", 1)
    store = SqliteAuditStore(str(tmp_path / "audit.sqlite3"))
    refresher = GaugeRefresher(store, {}, 8, [DLQ], lambda: FIXED_NOW, inbound_queues=[INBOUND])
    try:
        with consumer(vhost_of_its_own, store, refresh=refresher, refresh_every=0.2) as service:
            wait_for(
                lambda: REGISTRY.get_sample_value("rehab_dead_letter_queue_messages", {"queue": DLQ}) == 1,
                30,
                "the dead-letter queue's gauge",
            )
            _dead_letters(vhost_of_its_own, "discharge", 1)
            wait_for(
                lambda: REGISTRY.get_sample_value("rehab_dead_letter_queue_messages", {"queue": DLQ}) == 2,
                30,
                "the gauge to follow the queue",
            )
            assert service.health.ready
        assert REGISTRY.get_sample_value("rehab_inbound_queue_messages", {"queue": INBOUND}) == 0
    finally:
        store.close()
