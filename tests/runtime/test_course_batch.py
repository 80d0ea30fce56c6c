"""A flow sees the courses earlier messages of its own batch changed (`_BatchState.course`): a discharge and
its visitation consumed in one batch see each other, the last change of a patient's course wins, and a
patient the batch did not touch is read from the store."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from integration.adapters.memory import InMemoryBroker
from integration.adapters.sql.sqlite import SqliteAuditStore
from integration.domain.course import Course, Responsible, Stage, State, StateChanges
from integration.flows.results import FlowResult
from integration.service.processor import Delivery, Processor, RetryPolicy
from tests.conftest import FIXED_NOW

CPR = "2512489996"
OTHER_CPR = "0107729995"
AALBORG = "715541000016001"
FAST = RetryPolicy(attempts=3, seconds=2, initial_wait=0.001, max_wait=0.01)
NEXT = {None: Stage.AWAITING_VISITATION, Stage.AWAITING_VISITATION: Stage.MUNICIPAL, Stage.MUNICIPAL: Stage.CLOSED}


class Pathway:
    """A fake flow: each message (`<patient>`) moves the patient's course one stage on, from what it sees."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Stage | None]] = []

    def __call__(self, body: bytes, _now: datetime, state: State) -> FlowResult:
        patient = body.decode()
        course = state.course(patient)
        stage = None if course is None else course.stage
        self.seen.append((patient, stage))
        moved = Course(patient, AALBORG, "851", NEXT[stage] is not Stage.CLOSED, Responsible.HOSPITAL, NEXT[stage])
        return FlowResult((), (), patient, StateChanges(courses=(moved,)))


@pytest.fixture
def store(tmp_path: Path) -> SqliteAuditStore:
    return SqliteAuditStore(str(tmp_path / "audit.sqlite3"))


def test_a_later_message_of_the_batch_sees_the_course_an_earlier_one_changed(store: SqliteAuditStore) -> None:
    flow = Pathway()
    processor = Processor({"discharge": flow}, store, InMemoryBroker(), lambda: FIXED_NOW, FAST)
    deliveries = [Delivery("discharge", patient.encode(), f"m-{i}") for i, patient in enumerate([CPR, CPR, CPR])]
    outcomes = processor.process_batch(deliveries)
    assert [o.disposition for o in outcomes] == ["processed"] * 3
    assert flow.seen == [(CPR, None), (CPR, Stage.AWAITING_VISITATION), (CPR, Stage.MUNICIPAL)]
    stored = store.course(CPR)
    assert stored is not None and stored.stage is Stage.CLOSED and not stored.open


def test_a_patient_the_batch_did_not_touch_is_read_from_the_store(store: SqliteAuditStore) -> None:
    stored = Course(OTHER_CPR, AALBORG, "851", True, Responsible.HOSPITAL, Stage.AWAITING_VISITATION)
    store.record([], FIXED_NOW, changes=StateChanges(courses=(stored,)))
    flow = Pathway()
    processor = Processor({"discharge": flow}, store, InMemoryBroker(), lambda: FIXED_NOW, FAST)
    processor.process_batch([Delivery("discharge", CPR.encode(), "m-1"), Delivery("discharge", b"0107729995", "m-2")])
    assert flow.seen == [(CPR, None), (OTHER_CPR, Stage.AWAITING_VISITATION)]
    moved = store.course(OTHER_CPR)
    assert moved is not None and moved.stage is Stage.MUNICIPAL
