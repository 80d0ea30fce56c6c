"""The in-memory bus settles deliveries as the consumer on RabbitMQ does (`integration.adapters.consumer`): acked
only after the processor's durable work, a failure of ours returned to its queue redelivered until the processor
gives up on it, a delivery returned too often dead-lettered by the queue's delivery limit, and a delivery in hand
during an outage returned to its queue rather than lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from integration.adapters.memory import InMemoryBroker, drain_in_memory
from integration.adapters.sql.sqlite import SqliteAuditStore
from integration.bootstrap import build
from integration.config import Settings
from integration.errors import GivenUp, Transient
from integration.flows.dispatch import Pipeline
from integration.service.processor import FLOW_ATTEMPTS, RetryPolicy
from integration.topology import DELIVERY_LIMIT, FLOWS_BY_NAME, SENDERS_BY_KIND
from tests.conftest import FIXED_NOW, GOLDEN

EVENT = GOLDEN / "discharge" / "01-municipal-gop-general-sternotomy.event.json"
DISCHARGE = FLOWS_BY_NAME["discharge"]
HOSPITAL = SENDERS_BY_KIND["hospital"].exchange
FAST = RetryPolicy(attempts=2, seconds=1, initial_wait=0.001, max_wait=0.01)


@pytest.fixture
def store(tmp_path: Path) -> SqliteAuditStore:
    return SqliteAuditStore(str(tmp_path / "audit.sqlite3"))


@pytest.fixture
def broker() -> InMemoryBroker:
    b = InMemoryBroker()
    b.bind("rehab.referral", "sink", "#")
    return b


def _send(broker: InMemoryBroker, message_id: str = "m-1", body: bytes | None = None) -> None:
    broker.publish(HOSPITAL, "discharge", body or EVENT.read_bytes(), message_id, content_type="application/json")


def _failing(_body: bytes, _now: object, _state: object) -> object:
    raise ValueError("a defect of our flow")


class SwitchableStore:
    """The real store behind a switch: while off, every call fails as a database outage does."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.off = inner, False

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.off:
                raise Transient("audit store unavailable (test)")
            return attribute(*args, **kwargs)

        return call if callable(attribute) else attribute


def test_a_processed_delivery_is_acked_after_its_output_and_the_ack_audited(
    pipeline: Pipeline, store: SqliteAuditStore, broker: InMemoryBroker
) -> None:
    _send(broker)
    processor = build(
        Settings.from_env({}), bus=broker, store=store, clock=lambda: FIXED_NOW, pipeline=pipeline, retry=FAST
    ).processor
    assert drain_in_memory(broker, processor, [DISCHARGE]) == 1
    assert not broker.unacked and not broker.queues[DISCHARGE.queue]
    assert len(broker.queues["sink"]) == 1
    assert [r.step for r in store.records()][-2:] == ["published", "acked"]


def test_a_failure_of_ours_is_redelivered_until_the_processor_gives_up_and_dead_letters_it(
    store: SqliteAuditStore, broker: InMemoryBroker
) -> None:
    _send(broker)
    handlers = {"discharge": _failing}
    processor = build(
        Settings.from_env({}),
        bus=broker,
        store=store,
        clock=lambda: FIXED_NOW,
        handlers=handlers,
        retry=FAST,  # type: ignore[arg-type]
    ).processor
    assert drain_in_memory(broker, processor, [DISCHARGE]) == 1  # acked once, when dead-lettered
    received = [r for r in store.records() if r.step == "received"]
    assert [r.detail.get("redelivered", False) for r in received] == [False] + [True] * (FLOW_ATTEMPTS - 1)
    assert [r.step for r in store.records()].count("failed") == FLOW_ATTEMPTS - 1
    (dead,) = broker.queues[DISCHARGE.dead_letter_queue]
    assert dead.headers["x-rehab-reason-code"] == GivenUp.reason
    assert not broker.unacked and not broker.queues[DISCHARGE.queue]


def test_a_delivery_in_hand_during_an_outage_goes_back_to_its_queue_and_is_processed_after_it(
    pipeline: Pipeline, store: SqliteAuditStore, broker: InMemoryBroker
) -> None:
    _send(broker)
    switchable = SwitchableStore(store)
    switchable.off = True
    processor = build(
        Settings.from_env({}),
        bus=broker,
        store=switchable,
        clock=lambda: FIXED_NOW,
        pipeline=pipeline,
        retry=FAST,  # type: ignore[arg-type]
    ).processor
    with pytest.raises(Transient):
        drain_in_memory(broker, processor, [DISCHARGE])
    (back,) = broker.queues[DISCHARGE.queue]
    assert back.redelivered and not broker.unacked
    assert not broker.queues[DISCHARGE.dead_letter_queue] and not broker.queues["sink"]
    switchable.off = False
    assert drain_in_memory(broker, processor, [DISCHARGE]) == 1
    assert len(broker.queues["sink"]) == 1 and not broker.queues[DISCHARGE.queue]


def test_a_delivery_returned_past_the_delivery_limit_is_dead_lettered_by_the_queue(broker: InMemoryBroker) -> None:
    _send(broker)
    for returned in range(DELIVERY_LIMIT + 1):
        taken = broker.take(DISCHARGE.queue)
        assert taken is not None, f"dead-lettered after only {returned} returns"
        broker.requeue(taken[0])
    assert not broker.queues[DISCHARGE.queue] and not broker.unacked
    (dead,) = broker.queues[DISCHARGE.dead_letter_queue]
    (death,) = dead.headers["x-death"]
    assert death["reason"] == "delivery_limit" and death["queue"] == DISCHARGE.queue


def test_closing_returns_every_unacked_delivery_in_its_order(broker: InMemoryBroker) -> None:
    for message_id in ("m-1", "m-2", "m-3"):
        _send(broker, message_id)
    first, second = broker.take(DISCHARGE.queue), broker.take(DISCHARGE.queue)
    assert first is not None and second is not None
    broker.ack(first[0])
    broker.take(DISCHARGE.queue)
    broker.close()
    assert [(m.message_id, m.redelivered) for m in broker.queues[DISCHARGE.queue]] == [("m-2", True), ("m-3", True)]
    assert not broker.unacked
