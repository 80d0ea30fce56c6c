"""A batch whose commit meets a Conflict (another process changed a course the batch read: decision 31) in the
processor, on one SQLite file shared by two store handles (two processes): another handle changes the course
between the flow's read and the batch's commit.

Today the processor treats the Conflict as a defect outside the flows: a batch of several is planned again one
delivery at a time (each reads afresh, which succeeds), but a lone delivery is counted as a failure of ours and
goes back to its queue. The lead's hook (the processor catching Conflict and planning the batch again at once,
spending no attempt) makes the lone delivery processed at once."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest

from integration.adapters.memory import InMemoryBroker
from integration.adapters.sql.sqlite import SqliteAuditStore
from integration.domain.course import Course, Responsible, Stage, State, StateChanges
from integration.errors import InvalidInput
from integration.flows.results import FlowResult
from integration.service.processor import Delivery, Disposition, Processor, RetryPolicy
from integration.topology import DEAD_LETTER_EXCHANGE
from tests.conftest import FIXED_NOW

CPR = "2512489996"
OTHER_CPR = "0107729995"
AALBORG = "715541000016001"
FAST = RetryPolicy(attempts=3, seconds=2, initial_wait=0.001, max_wait=0.01)
VISITING = Course(CPR, AALBORG, "851", True, Responsible.HOSPITAL, Stage.AWAITING_VISITATION)


class Interleaved:
    """A fake flow that marks the course as seen (heart_failure) on what it read; the first time it runs, another
    process (`other`, a second handle) moves the course on between this read and the batch's commit."""

    def __init__(self, other: SqliteAuditStore) -> None:
        self.other = other
        self.seen: list[Course | None] = []

    def __call__(self, body: bytes, _now: datetime, state: State) -> FlowResult:
        patient = body.decode()
        course = state.course(patient)
        self.seen.append(course)
        if patient == CPR and len([c for c in self.seen if c is not None and c.patient == CPR]) == 1:
            read = self.other.course(CPR)
            assert read is not None
            self.other.record([], FIXED_NOW, changes=StateChanges(courses=(replace(read, stage=Stage.MUNICIPAL),)))
        changed = replace(course or VISITING, patient=patient, heart_failure=True)
        return FlowResult((), (), patient, StateChanges(courses=(changed,)))


@pytest.fixture
def stores(tmp_path: Path) -> tuple[SqliteAuditStore, SqliteAuditStore]:
    path = str(tmp_path / "audit.sqlite3")
    first = SqliteAuditStore(path)
    first.record([], FIXED_NOW, changes=StateChanges(courses=(VISITING,)))
    return first, SqliteAuditStore(path)


def test_a_batch_of_several_that_conflicts_is_planned_again_and_no_change_is_lost(
    stores: tuple[SqliteAuditStore, SqliteAuditStore],
) -> None:
    mine, other = stores
    flow = Interleaved(other)
    processor = Processor({"discharge": flow}, mine, InMemoryBroker(), lambda: FIXED_NOW, FAST)
    outcomes = processor.process_batch(
        [Delivery("discharge", CPR.encode(), "m-1"), Delivery("discharge", b"0107729995", "m-2")]
    )
    assert [o.disposition for o in outcomes] == [Disposition.PROCESSED] * 2
    stored = mine.course(CPR)
    assert stored == replace(VISITING, stage=Stage.MUNICIPAL, heart_failure=True)  # both changes stand


def test_a_lone_delivery_that_conflicts_is_processed_at_once_spending_no_attempt(
    stores: tuple[SqliteAuditStore, SqliteAuditStore],
) -> None:
    mine, other = stores
    flow = Interleaved(other)
    processor = Processor({"discharge": flow}, mine, InMemoryBroker(), lambda: FIXED_NOW, FAST)
    outcome = processor.process(Delivery("discharge", CPR.encode(), "m-1"))
    assert outcome.disposition is Disposition.PROCESSED
    assert mine.deliveries([("discharge", "m-1")])[("discharge", "m-1")].failures == 0
    assert mine.course(CPR) == replace(VISITING, stage=Stage.MUNICIPAL, heart_failure=True)


class ReadsTwice:
    """A fake flow that reads the course, lets another process change it, reads it again and decides from the
    first read (as a flow that reads the course in two places would): the commit must still see the change."""

    def __init__(self, other: SqliteAuditStore) -> None:
        self.other, self.runs = other, 0

    def __call__(self, body: bytes, _now: datetime, state: State) -> FlowResult:
        self.runs += 1
        first = state.course(CPR)
        assert first is not None
        if self.runs == 1:
            self.other.record([], FIXED_NOW, changes=StateChanges(courses=(replace(first, stage=Stage.MUNICIPAL),)))
        assert state.course(CPR) == first, "one plan sees one version of a course"
        return FlowResult((), (), CPR, StateChanges(courses=(replace(first, heart_failure=True),)))


def test_a_flow_reading_a_course_twice_decides_from_the_version_the_commit_checks(
    stores: tuple[SqliteAuditStore, SqliteAuditStore],
) -> None:
    """Found by the competing-consumers test: a second read of a course within one plan made the store remember
    the newer version, so a decision taken on the older one was committed over another process's change."""
    mine, other = stores
    flow = ReadsTwice(other)
    processor = Processor({"discharge": flow}, mine, InMemoryBroker(), lambda: FIXED_NOW, FAST)
    outcome = processor.process(Delivery("discharge", b"x", "m-1"))
    assert outcome.disposition is Disposition.PROCESSED and flow.runs == 2  # planned again after the Conflict
    assert mine.course(CPR) == replace(VISITING, stage=Stage.MUNICIPAL, heart_failure=True)


class RefusesOnce:
    """A fake flow: the course's patient is changed (and another process moves the course on, the first time);
    `b"other"` is refused the first time only — as a refusal that depends on the course might be."""

    def __init__(self, other: SqliteAuditStore) -> None:
        self.other, self.runs, self.plans = other, 0, 0

    def __call__(self, body: bytes, _now: datetime, state: State) -> FlowResult:
        if body == b"other":
            self.runs += 1
            if self.runs == 1:
                raise InvalidInput("eventType", "refused on the first plan")
            return FlowResult((), (), OTHER_CPR, StateChanges())
        course = state.course(CPR)
        assert course is not None
        self.plans += 1
        if self.plans == 1:
            self.other.record([], FIXED_NOW, changes=StateChanges(courses=(replace(course, stage=Stage.MUNICIPAL),)))
        return FlowResult((), (), CPR, StateChanges(courses=(replace(course, heart_failure=True),)))


def test_a_refusal_dead_lettered_before_a_conflict_stays_a_refusal_on_the_re_plan(
    stores: tuple[SqliteAuditStore, SqliteAuditStore],
) -> None:
    """The dead letters go out before the commit that meets the Conflict: a re-plan that then took the message
    would leave it processed and in the dead-letter queue at once (attack on issue #16)."""
    mine, other = stores
    broker = InMemoryBroker()
    flow = RefusesOnce(other)
    processor = Processor({"discharge": flow}, mine, broker, lambda: FIXED_NOW, FAST)
    outcomes = processor.process_batch([Delivery("discharge", b"x", "m-1"), Delivery("discharge", b"other", "m-2")])
    assert [o.disposition for o in outcomes] == [Disposition.PROCESSED, Disposition.DEAD_LETTERED]
    assert flow.plans == 2 and flow.runs == 1  # planned again after the Conflict, not run again on the refused one
    copies = [m for queue in broker.queues.values() for m in queue if m.message_id == "m-2"]
    assert len(copies) == 1 and copies[0].exchange == DEAD_LETTER_EXCHANGE  # dead-lettered once, nothing else
    earlier = mine.deliveries([("discharge", "m-2")]).get(("discharge", "m-2"))
    assert earlier is None or not earlier.processed
    rejected = [r for r in mine.records() if r.message_id == "m-2" and r.step == "rejected"]
    assert len(rejected) == 1
