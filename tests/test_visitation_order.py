"""Two visitation talks of one patient taken in the wrong order (competing consumers: attack on issue #16): the older
one, arriving after the newer decided the referral, decides nothing and sends nothing (decision 31) — whether the
newer one changed the referral or confirmed it unchanged."""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from integration.adapters.memory import InMemoryBroker
from integration.adapters.sql.stores import open_audit_store
from integration.bootstrap import build
from integration.config import Settings
from integration.domain.course import Stage
from integration.service.processor import Delivery, Disposition
from tests.support.events import distinct_referral_events

NOW = datetime.now(UTC)


def _visitation(discharge: dict[str, Any], after: timedelta, change: bool) -> tuple[str, bytes]:
    event = copy.deepcopy(discharge)
    event["eventId"] = str(uuid.uuid4())
    event["eventType"] = "visitation"
    event["occurredAt"] = (datetime.fromisoformat(discharge["occurredAt"]) + after).isoformat()
    if change:
        referral = event["referral"]
        referral["ambulatoryControl"] = not referral.get("ambulatoryControl", False)
        referral["ambulatoryControlAtEndOfRehab"] = False
    return event["eventId"], orjson.dumps(event)


def _referral_in_force(store: Any, patient_events: list[str]) -> str | None:
    course = next(c for c in store.courses_at(list(Stage)) if c.discharge_event == patient_events[0])
    return course.referral.service_request if course.referral else None


@pytest.mark.parametrize("newer_changes", [True, False], ids=["newer-changes", "newer-changes-nothing"])
def test_an_older_visitation_after_a_newer_one_decides_nothing(tmp_path: Path, newer_changes: bool) -> None:
    event_id, body = distinct_referral_events(1)[0]
    discharge = orjson.loads(body)
    older = _visitation(discharge, timedelta(hours=1), change=True)
    newer = _visitation(discharge, timedelta(hours=2), change=newer_changes)
    store = open_audit_store(f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    processor = build(Settings.from_env({}), store=store, clock=lambda: NOW).processor_on(InMemoryBroker())

    def process(message: tuple[str, bytes]) -> Any:
        return processor.process(Delivery("discharge", message[1], message[0], source="rehab-hospital"))

    assert process((event_id, body)).disposition is Disposition.PROCESSED
    in_force = _referral_in_force(store, [event_id])
    assert process(newer).disposition is Disposition.PROCESSED
    after_newer = _referral_in_force(store, [event_id])
    assert after_newer == (f"urn:uuid:{newer[0]}" if newer_changes else in_force)
    late = process(older)
    assert late.disposition is Disposition.PROCESSED and late.outputs == 0
    assert _referral_in_force(store, [event_id]) == after_newer
    facts = [r.step for r in store.records() if r.message_id == older[0] and r.step.startswith("fact:")]
    assert facts == ["fact:visitation-superseded"]
    store.close()


def test_visitations_in_order_still_each_decide(tmp_path: Path) -> None:
    event_id, body = distinct_referral_events(1)[0]
    discharge = orjson.loads(body)
    first = _visitation(discharge, timedelta(hours=1), change=True)
    second = _visitation(discharge, timedelta(hours=2), change=False)  # the discharge's referral again: an update
    store = open_audit_store(f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    processor = build(Settings.from_env({}), store=store, clock=lambda: NOW).processor_on(InMemoryBroker())
    for message in [(event_id, body), first]:
        processor.process(Delivery("discharge", message[1], message[0], source="rehab-hospital"))
    outcome = processor.process(Delivery("discharge", second[1], second[0], source="rehab-hospital"))
    assert outcome.disposition is Disposition.PROCESSED and outcome.outputs == 1
    store.close()
