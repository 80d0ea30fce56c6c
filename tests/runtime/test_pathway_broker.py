"""The agreement's pathway end to end on the real broker: every scenario of tests/golden/pathway/ sent step by
step through RabbitMQ (each sender's own exchange, the consumers of every flow, the SQLite audit store) must
yield exactly what the in-memory run yields, its `expected.json` (tests/pathway_runs.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from integration.adapters.consumer import ConsumerService
from integration.adapters.rabbitmq import BrokerSettings
from integration.adapters.sql.stores import open_audit_store
from integration.bootstrap import build
from integration.config import Settings
from integration.service.processor import RetryPolicy
from integration.topology import DEAD_LETTER_EXCHANGE, FLOWS, SENDERS_BY_KIND, outbound_exchanges
from tests.pathway_runs import SCENARIOS, SENDER_OF_FLOW, Step, expected, patient, step_record, steps
from tests.runtime.broker_helpers import collector, connect, take_all, wait_for
from tests.runtime.conftest import broker_url


class Clock:
    def __init__(self) -> None:
        self.now: datetime | None = None

    def __call__(self) -> datetime:
        assert self.now is not None
        return self.now


@pytest.fixture
def outputs(vhost: str) -> Iterator[tuple[list[str], str]]:
    """Queues of this test's own that collect every outbound message and every dead letter."""
    dead = collector(vhost, DEAD_LETTER_EXCHANGE, FLOWS[0].name)
    connection = connect(vhost)
    try:
        for flow in FLOWS[1:]:
            connection.bind_queue(dead, DEAD_LETTER_EXCHANGE, flow.name)
    finally:
        connection.close()
    yield [collector(vhost, exchange) for exchange in outbound_exchanges()], dead


def _publish(vhost: str, step: Step) -> None:
    connection = connect(vhost)
    try:
        exchange = SENDERS_BY_KIND[SENDER_OF_FLOW[step.flow]].exchange
        connection.publish(exchange, step.flow, step.body, step.message_id, content_type=step.content_type)
    finally:
        connection.close()


def _settled(store: Any, message_id: str, before: int) -> bool:
    """The step's message was acked after its work, or dead-lettered (its audit record says so)."""
    return any(
        r.message_id == message_id and r.step in ("acked", "dead-lettered") for r in list(store.records())[before:]
    )


def _one_step(
    vhost: str, step: Step, store: Any, clock: Clock, queues: tuple[list[str], str], key: str
) -> dict[str, Any]:
    outbound, dead = queues
    clock.now = step.received_at
    before = len(list(store.records()))
    _publish(vhost, step)
    wait_for(lambda: _settled(store, step.message_id, before), 30, f"{step.path.name} settled")
    messages = [m for queue in outbound for m in take_all(vhost, queue)]
    published = [r.detail["outputId"] for r in list(store.records())[before:] if r.step == "published"]
    wait_for(lambda: len(messages) >= len(published), 5, "every output collected")
    letters = take_all(vhost, dead)
    refusal = dict(letters[0].raw_headers) if letters else None
    # one collector per exchange: put the outputs back in the order the processor published them
    order = {m.message_id: i for i, m in enumerate(messages)}
    ordered = sorted(messages, key=lambda m: _position(m, published, order))
    return step_record(
        step,
        [(m.routing_key, m.body) for m in ordered],
        refusal,
        list(store.records())[before:],
        store.course(key),
    )


def _position(message: Any, published: list[str], order: dict[str, int]) -> int:
    return (
        published.index(message.message_id)
        if message.message_id in published
        else len(published) + order[message.message_id]
    )


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda p: p.name)
def test_pathway_scenario_on_the_broker(
    scenario: Path, vhost: str, tmp_path: Path, outputs: tuple[list[str], str]
) -> None:
    dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    store = open_audit_store(dsn)
    reader = open_audit_store(dsn)  # a connection of the test's own: the consumer's is its thread's
    clock = Clock()
    clock.now = steps(scenario)[0].received_at
    wiring = build(Settings.from_env({}), store=store, clock=clock, retry=RetryPolicy(attempts=2, seconds=1))
    # one consumer, one step at a time: nothing earlier can be in flight, so an out-of-order step waits 0.3 s only
    service = ConsumerService(BrokerSettings(broker_url(vhost)), list(FLOWS), wiring.processor_on, wait_for_earlier=0.3)
    worker = threading.Thread(target=service.run, daemon=True)
    worker.start()
    try:
        records = [_one_step(vhost, step, reader, clock, outputs, patient(scenario)) for step in steps(scenario)]
    finally:
        service.stop()
        worker.join(timeout=30)
    assert records == expected(scenario)
