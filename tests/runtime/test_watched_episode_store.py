"""The watched discharges (schema 7, `watched_episode`) on SQLite and PostgreSQL: written through StateChanges
with the message's audit records, read back exactly, settled by a matching discharge event, withdrawn by a
cancellation, covered by the audit chain, and the `missed-referral` deadline read from them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from integration.adapters.sql.stores import open_audit_store
from integration.config import Settings
from integration.domain.course import StateChanges
from integration.domain.missed_referral import DischargeSeen, WatchedEpisode, WatchKey
from integration.log import cpr_numbers_in
from integration.service.audit_chain import AuditEntry
from integration.service.pathway_watch import deadlines, overdue, overdue_counts
from tests.runtime.test_course_store import sql, verify

CPR, OTHER_CPR = "2512489996", "0107729995"
CARDIOLOGY, SURGERY = "715541000016001", "715581000016005"
CET = timezone(timedelta(hours=1))
ENDED = datetime(2026, 11, 20, 9, 45, 30, tzinfo=CET)
WINDOW = timedelta(hours=48)
DUE = ENDED + WINDOW
WATCHED = WatchedEpisode("ep-1", CPR, CARDIOLOGY, ENDED, DUE, "header-1")
SECOND = WatchedEpisode("ep-2", OTHER_CPR, SURGERY, ENDED + timedelta(hours=1), DUE + timedelta(hours=1), "header-2")
SETTINGS = Settings.from_env({})


@pytest.fixture(params=["sqlite", "postgres"])
def dsn(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    return str(request.getfixturevalue("postgres_dsn"))


@pytest.fixture
def store(dsn: str) -> Iterator[Any]:
    opened = open_audit_store(dsn)
    yield opened
    opened.close()


def record(store: Any, changes: StateChanges, patient: str = CPR) -> None:
    store.record([AuditEntry("transformed", "discharge", "m-1", patient=patient)], ENDED, changes=changes)


def test_a_watched_discharge_round_trips_exactly(store: Any) -> None:
    record(store, StateChanges(watched=(WATCHED, SECOND)))
    assert store.watched_episodes() == [WATCHED, SECOND]
    assert store.watched_episode(CPR, "ep-1") == WATCHED
    assert store.watched_episode(CPR, "ep-1").discharged_at.utcoffset() == timedelta(hours=1)  # its zone kept


def test_a_revision_moves_the_discharge_and_keeps_a_match(store: Any) -> None:
    record(store, StateChanges(watched=(WATCHED,)))
    later = replace(WATCHED, discharged_at=ENDED + timedelta(hours=3), due=DUE + timedelta(hours=3), header="h-2")
    record(store, StateChanges(watched=(later,)))
    assert store.watched_episodes() == [later]
    record(store, StateChanges(discharges=(DischargeSeen("event-1", CPR, CARDIOLOGY, "ep-1", ENDED),)))
    record(store, StateChanges(watched=(WATCHED,)))  # revised again: still matched
    assert store.watched_episodes() == [] and store.watched_episode(CPR, "ep-1").matched_by == "event-1"


def test_a_matching_discharge_event_settles_it_and_another_does_not(store: Any) -> None:
    record(store, StateChanges(watched=(WATCHED, SECOND)))
    record(
        store,
        StateChanges(
            discharges=(
                DischargeSeen("event-x", CPR, CARDIOLOGY, "another-stay", ENDED),  # another episode
                DischargeSeen("event-y", CPR, SURGERY, None, ENDED),  # another unit
                DischargeSeen("event-z", CPR, CARDIOLOGY, None, ENDED + WINDOW + timedelta(seconds=1)),  # too late
            )
        ),
    )
    assert store.watched_episodes() == [WATCHED, SECOND]
    record(store, StateChanges(discharges=(DischargeSeen("event-1", CPR, CARDIOLOGY, None, ENDED + WINDOW),)))
    assert store.watched_episodes() == [SECOND]
    record(store, StateChanges(discharges=(DischargeSeen("event-2", OTHER_CPR, CARDIOLOGY, "ep-2", ENDED),)))
    assert store.watched_episodes() == []
    assert store.watched_episode(OTHER_CPR, "ep-2").matched_by == "event-2"


def test_a_cancelled_discharge_is_no_longer_watched_until_revised(store: Any) -> None:
    record(store, StateChanges(watched=(WATCHED,)))
    record(store, StateChanges(unwatched=(WatchKey(CPR, "ep-1"), WatchKey(CPR, "never-watched"))))
    assert store.watched_episodes() == [] and store.watched_episode(CPR, "never-watched") is None
    record(store, StateChanges(watched=(WATCHED,)))
    assert store.watched_episodes() == [WATCHED]


def test_the_rows_are_covered_by_the_audit_chain(dsn: str, store: Any) -> None:
    record(store, StateChanges(watched=(WATCHED,)))
    record(store, StateChanges(discharges=(DischargeSeen("event-1", CPR, CARDIOLOGY, "ep-1", ENDED),)))
    assert verify(dsn).exit_code == 0
    sql(dsn, "UPDATE watched_episode SET matched_by = NULL, matched_at = NULL")  # someone hides the match
    done = verify(dsn)
    assert done.exit_code == 1 and "watched_episode" in done.stderr and CPR not in done.stderr


def test_missed_referral_is_due_after_the_window_and_overdue_from_then(store: Any) -> None:
    record(store, StateChanges(watched=(WATCHED,)))
    (before,) = [d for d in deadlines(store, SETTINGS, DUE - timedelta(seconds=1)) if d.rule == "missed-referral"]
    assert not before.overdue and before.due == DUE.astimezone(UTC) and before.subject == "ep-1"
    assert before.patient == CPR and not cpr_numbers_in(before.detail)
    assert before.unit == CARDIOLOGY  # the board's department for a patient without a course
    assert CARDIOLOGY in before.detail and "2026-11-20T09:45+01:00" in before.detail and "48 h" in before.detail
    (late,) = overdue(store, SETTINGS, DUE)
    assert late.rule == "missed-referral" and late.overdue
    assert overdue_counts(store, SETTINGS, DUE)["missed-referral"] == 1
    record(store, StateChanges(discharges=(DischargeSeen("event-1", CPR, CARDIOLOGY, None, ENDED),)))
    assert overdue_counts(store, SETTINGS, DUE + timedelta(days=9))["missed-referral"] == 0
    assert [d for d in deadlines(store, SETTINGS, DUE) if d.rule == "missed-referral"] == []


def test_a_cancelled_discharge_is_never_overdue(store: Any) -> None:
    record(store, StateChanges(watched=(WATCHED,)))
    record(store, StateChanges(unwatched=(WatchKey(CPR, "ep-1"),)))
    assert overdue_counts(store, SETTINGS, DUE + timedelta(days=9))["missed-referral"] == 0


# -- the second attack on issue #15: watches keyed by the episode alone --------------------------------------
def test_another_patients_discharge_with_the_same_episode_value_keeps_the_first_watch(store: Any) -> None:
    # M12: patient S's SLHJ carried Q's episode value and overwrote Q's watch, and Q's missed referral vanished
    other = replace(WATCHED, patient=OTHER_CPR, discharged_at=ENDED + timedelta(days=3), due=DUE + timedelta(days=3))
    record(store, StateChanges(watched=(WATCHED,)))
    record(store, StateChanges(watched=(other,)), patient=OTHER_CPR)
    assert store.watched_episodes() == [WATCHED, other]
    assert store.watched_episode(CPR, "ep-1") == WATCHED and store.watched_episode(OTHER_CPR, "ep-1") == other
    assert overdue_counts(store, SETTINGS, DUE)["missed-referral"] == 1  # Q's is overdue; S's not yet


def test_a_cancellation_or_a_discharge_event_of_another_patient_leaves_the_watch(store: Any) -> None:
    # M11: an AN_SLHJ for anyone withdrew it
    record(store, StateChanges(watched=(WATCHED,)))
    record(store, StateChanges(unwatched=(WatchKey(OTHER_CPR, "ep-1"),)), patient=OTHER_CPR)
    record(store, StateChanges(discharges=(DischargeSeen("event-s", OTHER_CPR, CARDIOLOGY, "ep-1", ENDED),)))
    assert store.watched_episodes() == [WATCHED]
    record(store, StateChanges(unwatched=(WatchKey(CPR, "ep-1"),)))
    assert store.watched_episodes() == []


def test_a_discharge_event_settles_only_its_patients_watch_of_a_shared_episode_value(store: Any) -> None:
    other = replace(WATCHED, patient=OTHER_CPR, header="header-s")
    record(store, StateChanges(watched=(WATCHED, other)))
    record(store, StateChanges(discharges=(DischargeSeen("event-q", CPR, CARDIOLOGY, "ep-1", ENDED),)))
    assert store.watched_episodes() == [other]
    assert store.watched_episode(CPR, "ep-1").matched_by == "event-q"


def test_a_notified_death_withdraws_the_patients_open_watches(dsn: str, store: Any) -> None:
    matched = WatchedEpisode("ep-3", CPR, CARDIOLOGY, ENDED, DUE, "header-3", matched_by="event-3")
    record(store, StateChanges(watched=(WATCHED, SECOND, matched)))
    record(store, StateChanges(stopped=(CPR,)))  # MORS: the flow stops the patient's messages
    assert store.watched_episodes() == [SECOND]
    assert store.watched_episode(CPR, "ep-3") == matched  # a settled one stays as it was
    assert overdue_counts(store, SETTINGS, DUE + timedelta(days=9))["missed-referral"] == 1  # the other patient
    assert verify(dsn).exit_code == 0
