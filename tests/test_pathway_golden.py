"""The agreement's pathway, one patient at a time, on the in-memory bus: every sequence and branch of
tests/golden/pathway/ through the processor, the real audit store and the real flows (tests/pathway_runs.py
says what a scenario holds). `--update-golden` rewrites the expected files; review their diff."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from integration.adapters.memory import InMemoryBroker, drain_in_memory
from integration.adapters.sql.sqlite import SqliteAuditStore
from integration.bootstrap import build
from integration.config import Settings
from integration.flows.dispatch import Pipeline
from integration.service.processor import RetryPolicy
from integration.topology import DEAD_LETTER_EXCHANGE, FLOWS, FLOWS_BY_NAME, SENDERS_BY_KIND, outbound_exchanges
from tests.pathway_runs import (
    SCENARIOS,
    SENDER_OF_FLOW,
    Step,
    expected,
    patient,
    step_record,
    steps,
    write_expected,
)

FAST = RetryPolicy(attempts=2, seconds=1, initial_wait=0.001, max_wait=0.01)


class Clock:
    def __init__(self) -> None:
        self.now: Any = None

    def __call__(self) -> Any:
        return self.now


def _run(scenario: Path, pipeline: Pipeline, tmp_path: Path) -> list[dict[str, Any]]:
    broker = InMemoryBroker()
    for exchange in outbound_exchanges():
        broker.bind(exchange, "out", "#")
    for flow in FLOWS:
        broker.bind(DEAD_LETTER_EXCHANGE, "dead", flow.name)
    store = SqliteAuditStore(str(tmp_path / "audit.sqlite3"))
    clock = Clock()
    processor = build(
        Settings.from_env({}), bus=broker, store=store, clock=clock, pipeline=pipeline, retry=FAST
    ).processor
    records = []
    for step in steps(scenario):
        records.append(_one_step(step, broker, processor, store, clock, patient(scenario)))
    return records


def _one_step(
    step: Step, broker: InMemoryBroker, processor: Any, store: SqliteAuditStore, clock: Clock, key: str
) -> dict:
    clock.now = step.received_at
    seen = len(list(store.records()))
    broker.user_id = step.sender_user
    exchange = SENDERS_BY_KIND[SENDER_OF_FLOW[step.flow]].exchange
    broker.publish(exchange, step.flow, step.body, step.message_id, content_type=step.content_type)
    drain_in_memory(broker, processor, list(FLOWS))
    outputs = []
    while (message := broker.get("out")) is not None:
        outputs.append((message.routing_key, message.body))
    dead = broker.get("dead")
    return step_record(step, outputs, dead.headers if dead else None, list(store.records())[seen:], store.course(key))


def test_every_flow_a_scenario_uses_exists() -> None:
    assert {s.flow for scenario in SCENARIOS for s in steps(scenario)} <= set(FLOWS_BY_NAME)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda p: p.name)
def test_pathway_scenario(scenario: Path, pipeline: Pipeline, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    records = _run(scenario, pipeline, tmp_path)
    if request.config.getoption("--update-golden"):
        write_expected(scenario, records)
    assert records == expected(scenario)


def test_a_cancellation_says_why_and_asks_for_nothing(pipeline: Pipeline, tmp_path: Path) -> None:
    """The cancellation carries the referral as it was sent, revoked, with one note: why (no training
    sentence, no closing place); the new referral that replaces it carries the referral's own notes."""
    scenario = next(s for s in SCENARIOS if s.name.startswith("04-"))
    broker = InMemoryBroker()
    broker.bind("rehab.referral", "out", "#")
    store = SqliteAuditStore(str(tmp_path / "audit.sqlite3"))
    clock = Clock()
    processor = build(
        Settings.from_env({}), bus=broker, store=store, clock=clock, pipeline=pipeline, retry=FAST
    ).processor
    bodies = []
    for step in steps(scenario):
        clock.now = step.received_at
        broker.user_id = step.sender_user
        broker.publish(SENDERS_BY_KIND["hospital"].exchange, step.flow, step.body, step.message_id)
        drain_in_memory(broker, processor, list(FLOWS))
        while (message := broker.get("out")) is not None:
            bodies.append(json.loads(message.body))
    first, cancel, new = (
        [e["resource"] for e in b["entry"] if e["resource"]["resourceType"] == "ServiceRequest"][0] for b in bodies
    )
    assert cancel["status"] == "revoked" and cancel["identifier"] == first["identifier"]
    assert [n["text"] for n in cancel["note"]] == [
        "Henvisningen annulleres: henvisningen er erstattet af en ny henvisning til en anden modtager."
    ]
    assert new["replaces"] == [{"identifier": first["identifier"][0]}] and len(new["note"]) > 1
