"""Optimistic concurrency on the courses (decision 31), on both real databases: two store handles (two consumer
processes) that read one patient's course and both record a change — the second is a Conflict and nothing of
its transaction is kept; so is a second course created for a patient both read without one; a handle that
reads again after the conflict records its change; a course written without being read (the operator's tools)
is written as before; and the chain verifies after each."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from integration.adapters.sql import courses as course_rows
from integration.adapters.sql.stores import open_audit_store
from integration.cli.audit import audit
from integration.domain.course import Course, Responsible, Stage, StateChanges
from integration.errors import Conflict, StoreRefused
from integration.service.audit_chain import AuditEntry
from tests.runtime.conftest import postgres_schema

AT = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)
CPR = "2512489996"
OTHER_CPR = "0107729995"
AALBORG = "715541000016001"
VISITING = Course(CPR, AALBORG, "851", True, Responsible.HOSPITAL, Stage.AWAITING_VISITATION)


@pytest.fixture(params=["sqlite", "postgres"])
def dsn(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """One store's database: a SQLite file, or a PostgreSQL schema of this test's own (dropped after)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'audit.sqlite3'}"
        return
    with postgres_schema("ordering") as dsn:
        yield dsn


@pytest.fixture
def handles(dsn: str) -> Iterator[tuple[Any, Any]]:
    """Two handles on one store: what two consumer processes hold."""
    first = open_audit_store(dsn)
    second = open_audit_store(dsn)
    yield first, second
    first.close()
    second.close()


def record(store: Any, message_id: str, *courses: Course) -> None:
    """What a batch records: its audit entry, the message processed, the courses it changed."""
    store.record(
        [AuditEntry("transformed", "discharge", message_id, patient=courses[0].patient)],
        AT,
        processed=[("discharge", message_id, "sha256:" + message_id, [])],
        changes=StateChanges(courses=courses),
    )


def verified(dsn: str) -> None:
    result = CliRunner().invoke(audit, ["verify"], env={"INTEGRATION_AUDIT_DSN": dsn, "INTEGRATION_CONFIG": ""})
    assert result.exit_code == 0, result.output


def test_the_second_of_two_changes_to_a_course_both_read_is_a_conflict_and_keeps_nothing(
    dsn: str, handles: tuple[Any, Any]
) -> None:
    first, second = handles
    record(first, "m-0", VISITING)
    seen_by_first, seen_by_second = first.course(CPR), second.course(CPR)
    assert seen_by_first == seen_by_second == VISITING
    record(first, "m-1", replace(VISITING, stage=Stage.MUNICIPAL, heart_failure=True))
    head = first.head()
    with pytest.raises(Conflict) as refused:
        record(second, "m-2", replace(VISITING, stage=Stage.NOT_REFERRED, open=False))
    assert refused.value.table == "rehab_course" and refused.value.count == 1
    assert CPR not in str(refused.value)
    assert second.head() == head  # no record of the refused transaction
    assert second.processed("discharge", "m-2") is None  # nor its message marked processed
    assert second.course(CPR) == replace(VISITING, stage=Stage.MUNICIPAL, heart_failure=True)
    verified(dsn)


def test_after_a_conflict_the_change_planned_again_from_what_stands_is_recorded(
    dsn: str, handles: tuple[Any, Any]
) -> None:
    first, second = handles
    record(first, "m-0", VISITING)
    first.course(CPR), second.course(CPR)
    record(first, "m-1", replace(VISITING, heart_failure=True))
    with pytest.raises(Conflict):
        record(second, "m-2", replace(VISITING, stage=Stage.MUNICIPAL))
    now = second.course(CPR)  # planned again: read what stands now, change that
    assert now is not None
    record(second, "m-2", replace(now, stage=Stage.MUNICIPAL))
    assert first.course(CPR) == replace(VISITING, heart_failure=True, stage=Stage.MUNICIPAL)
    verified(dsn)


def test_a_course_created_by_another_for_a_patient_read_without_one_is_a_conflict_not_a_refusal(
    dsn: str, handles: tuple[Any, Any]
) -> None:
    first, second = handles
    assert first.course(CPR) is None and second.course(CPR) is None
    record(first, "m-1", VISITING)
    with pytest.raises(Conflict):
        record(second, "m-2", replace(VISITING, stage=Stage.MUNICIPAL))
    assert second.course(CPR) == VISITING
    verified(dsn)


def test_one_conflicting_course_refuses_the_whole_batch(dsn: str, handles: tuple[Any, Any]) -> None:
    first, second = handles
    other = replace(VISITING, patient=OTHER_CPR)
    record(first, "m-0", VISITING)
    second.course(CPR), second.course(OTHER_CPR)
    record(first, "m-1", replace(VISITING, heart_failure=True))
    with pytest.raises(Conflict):
        record(second, "m-2", other, replace(VISITING, stage=Stage.MUNICIPAL))
    assert second.course(OTHER_CPR) is None  # the batch's other, unconflicted course is not kept either
    verified(dsn)


def test_a_handle_changes_its_own_course_again_and_again_without_conflict(dsn: str, handles: tuple[Any, Any]) -> None:
    first, _ = handles
    for step, stage in enumerate((Stage.AWAITING_VISITATION, Stage.MUNICIPAL, Stage.CLOSED)):
        first.course(CPR)
        record(first, f"m-{step}", replace(VISITING, stage=stage, open=stage.open))
    # two changes of one patient in one batch (a discharge and its visitation): the batch read it once
    first.course(CPR)
    record(first, "m-9", replace(VISITING, stage=Stage.AWAITING_VISITATION), replace(VISITING, stage=Stage.MUNICIPAL))
    # its own change spent the version it read: a further change without a read is not refused by its own
    record(first, "m-10", replace(VISITING, stage=Stage.CLOSED, open=False))
    assert first.course(CPR) == replace(VISITING, stage=Stage.CLOSED, open=False)
    verified(dsn)


def test_a_course_written_without_being_read_is_written_as_before(dsn: str, handles: tuple[Any, Any]) -> None:
    first, second = handles
    record(first, "m-0", VISITING)
    record(second, "m-1", replace(VISITING, stage=Stage.MUNICIPAL))  # never read through `second`: no version
    assert first.course(CPR) == replace(VISITING, stage=Stage.MUNICIPAL)
    verified(dsn)


def test_a_read_that_saw_the_same_row_again_is_no_conflict(dsn: str, handles: tuple[Any, Any]) -> None:
    """The version is the row as the chain records it: another handle's change that left the course exactly as it
    stood, stamp included, changed nothing this handle's decision rested on."""
    first, second = handles
    record(first, "m-0", VISITING)
    second.course(CPR)
    first.course(CPR)
    record(first, "m-1", VISITING)  # the same course at the same moment: the same row
    record(second, "m-2", replace(VISITING, stage=Stage.MUNICIPAL))
    verified(dsn)


def test_versions_remembered_are_bounded(dsn: str, handles: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = handles
    monkeypatch.setattr(course_rows, "SEEN_LIMIT", 3)
    record(first, "m-0", VISITING)
    second.course(CPR)  # the oldest read: forgotten after three more
    for n in range(3):
        second.course(f"01017{n}5557")
    record(first, "m-1", replace(VISITING, heart_failure=True))
    record(second, "m-2", replace(VISITING, stage=Stage.MUNICIPAL))  # written as one never read: no conflict
    verified(dsn)


def test_racing_writers_one_wins_the_other_conflicts_and_the_chain_stays_one(dsn: str) -> None:
    """Two handles in two threads read the course, wait for each other, and record at once: one commits, the
    other is a Conflict (whichever the database's lock lets in second); the chain verifies."""
    setup = open_audit_store(dsn)
    record(setup, "m-0", VISITING)
    setup.close()
    both_read = threading.Barrier(2, timeout=10)
    outcomes: list[str] = []

    def race(n: int) -> None:
        store = open_audit_store(dsn)
        try:
            course = store.course(CPR)
            assert course is not None
            both_read.wait()
            record(store, f"m-{n + 1}", replace(course, stage=Stage.MUNICIPAL, municipality_code=f"8{n}0"))
            outcomes.append("recorded")
        except Conflict:
            outcomes.append("conflict")
        finally:
            store.close()

    racers = [threading.Thread(target=race, args=(n,)) for n in range(2)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(timeout=30)
    assert sorted(outcomes) == ["conflict", "recorded"]
    verified(dsn)


def test_the_version_read_survives_a_transaction_that_failed(dsn: str, handles: tuple[Any, Any]) -> None:
    """A batch kept for a retry after an outage (the processor's `Held`) is recorded again from the same reads:
    a failed transaction must not spend the versions, or the retry would overwrite another's change unseen."""
    first, second = handles
    record(first, "m-0", VISITING)
    second.course(CPR)
    with pytest.raises(StoreRefused):  # fails inside the transaction, after the course was saved: m-0 is known
        record(second, "m-0", replace(VISITING, stage=Stage.MUNICIPAL))
    record(first, "m-1", replace(VISITING, heart_failure=True))
    with pytest.raises(Conflict):
        record(second, "m-2", replace(VISITING, stage=Stage.MUNICIPAL))
    verified(dsn)
