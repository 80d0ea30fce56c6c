"""The pathway rules a HospitalNotification drives (flows/hospital_notification.py), through the dispatch
with the course given up front: a death closes the course and stops what awaits an ack, and nothing more is
sent for the patient; an admission pauses an open course, the discharge (or cancellation) of that stay ends
the pause."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from integration.domain.course import Course, FixedState, Responsible, Stage
from integration.flows.dispatch import Pipeline, transform
from integration.flows.results import FlowResult
from integration.web.auth import Role
from integration.web.pages import Viewer, stage_text
from tests.hospital_notifications import as_new_message, example, for_patient, with_episode

NOW = datetime.fromisoformat("2026-11-28T10:00:00+01:00")
PATIENT = "2512489996"
EPISODE = "82873e50-325e-4016-8a68-2934bdb2f66d"  # STIN_A's
UNIT = "265161000016000"
OPEN = Course(PATIENT, "333333333333333", "851", True, Responsible.HOSPITAL, Stage.MUNICIPAL)


def _run(bundle: dict[str, Any], pipeline: Pipeline, course: Course | None = None) -> FlowResult:
    state = FixedState(courses={PATIENT: course} if course else {})
    result = transform(json.dumps(bundle).encode(), pipeline, NOW, "discharge", state)
    assert isinstance(result, FlowResult)
    return result


def _kinds(result: FlowResult) -> list[str]:
    return [f.kind for f in result.facts]


def _notice(shared: Path, name: str, seed: str = "", episode: str | None = None) -> dict[str, Any]:
    bundle = for_patient(example(shared, name), PATIENT)
    bundle = with_episode(bundle, episode) if episode else bundle
    return as_new_message(bundle, seed) if seed else bundle


def test_a_death_closes_the_open_course_and_stops_what_awaits_an_ack(shared: Path, pipeline: Pipeline) -> None:
    result = _run(_notice(shared, "MORS_K"), pipeline, OPEN)
    (course,) = result.state.courses
    assert course.deceased and course.current is Stage.CLOSED and not course.open
    assert course.closed_on is not None and course.closed_on.isoformat() == "2023-03-04"
    assert result.state.stopped == (PATIENT,)
    assert _kinds(result) == ["hospital-notification", "patient-deceased", "acknowledged"]


def test_a_death_of_a_patient_without_a_course_is_kept_on_a_closed_one(shared: Path, pipeline: Pipeline) -> None:
    result = _run(_notice(shared, "MORS_K"), pipeline)
    (course,) = result.state.courses
    assert course.deceased and course.current is Stage.CLOSED and course.patient == PATIENT
    assert result.state.stopped == (PATIENT,)


def test_a_second_death_notice_changes_nothing(shared: Path, pipeline: Pipeline) -> None:
    dead = replace(OPEN, open=False, stage=Stage.CLOSED, deceased=True)
    result = _run(_notice(shared, "MORS_K"), pipeline, dead)
    assert result.state.courses == () and result.state.stopped == ()


def test_an_admission_pauses_an_open_course_and_its_discharge_ends_the_pause(shared: Path, pipeline: Pipeline) -> None:
    admitted = _run(_notice(shared, "STIN_A"), pipeline, OPEN)
    (paused,) = admitted.state.courses
    assert paused.paused and paused.admitted_to == UNIT and paused.admission_episode == EPISODE
    assert paused.admitted_since is not None and paused.admitted_since.isoformat() == "2023-03-01T12:00:00+01:00"
    assert "course-paused" in _kinds(admitted)
    discharged = _run(_notice(shared, "SLHJ_H", episode=EPISODE), pipeline, paused)
    (resumed,) = discharged.state.courses
    assert not resumed.paused and resumed.admitted_to is None and resumed.current is Stage.MUNICIPAL
    assert "course-resumed" in _kinds(discharged)


STIN_SINCE = datetime.fromisoformat("2023-03-01T12:00:00+01:00")  # STIN_A's Encounter.period.start


def _not_taken(result: FlowResult) -> list[dict[str, Any]]:
    return [dict(f.detail) for f in result.facts if f.kind == "admission-not-taken"]


def test_an_admission_begun_before_the_courses_discharge_does_not_pause_it(shared: Path, pipeline: Pipeline) -> None:
    # R20 of the second attack: "since 2023-03-01" on a course discharged 2026-12-01 paused it and sent hotline
    # copies to a ward the patient had left
    discharged = replace(OPEN, discharged_at=datetime.fromisoformat("2026-12-01T10:00:00+01:00"), episode="stay-1")
    for name in ("STIN_A", "RE_STIN_O"):
        result = _run(_notice(shared, name, episode="an-older-stay"), pipeline, discharged)
        assert result.state.courses == (), name
        (fact,) = _not_taken(result)
        assert fact["why"] == "the admission began before the discharge that opened the course"
        assert fact["episode"] == "an-older-stay" and PATIENT not in json.dumps(fact)
        assert _kinds(result)[-1] == "acknowledged"  # recorded, acked ok


def test_a_late_admission_of_the_stay_just_discharged_does_not_pause_the_course(
    shared: Path, pipeline: Pipeline
) -> None:
    # T01 of the second attack: the STIN of the stay whose discharge opened the course, sent after it
    own = replace(OPEN, discharged_at=STIN_SINCE.replace(year=2022), episode=EPISODE)
    result = _run(_notice(shared, "STIN_A"), pipeline, own)
    assert result.state.courses == ()
    (fact,) = _not_taken(result)
    assert fact["why"] == "the admission is of the stay whose discharge opened the course"


def test_an_admission_of_a_new_stay_from_the_discharge_on_pauses_the_course(shared: Path, pipeline: Pipeline) -> None:
    for discharged_at in (STIN_SINCE, STIN_SINCE.replace(month=2)):  # at the discharge's moment, or after it
        course = replace(OPEN, discharged_at=discharged_at, episode="stay-1")
        result = _run(_notice(shared, "STIN_A"), pipeline, course)
        (paused,) = result.state.courses
        assert paused.paused and paused.admission_episode == EPISODE and _not_taken(result) == []


def test_the_discharge_of_the_courses_own_stay_does_not_end_a_later_pause(shared: Path, pipeline: Pipeline) -> None:
    # the other direction: only the discharge of the admission's own episode ends the pause
    paused = replace(OPEN, episode="stay-1", admitted_to=UNIT, admitted_since=NOW, admission_episode=EPISODE)
    assert _run(_notice(shared, "SLHJ_H", episode="stay-1"), pipeline, paused).state.courses == ()


def test_the_discharge_of_another_stay_leaves_the_pause(shared: Path, pipeline: Pipeline) -> None:
    paused = replace(OPEN, admitted_to=UNIT, admitted_since=NOW, admission_episode=EPISODE)
    result = _run(_notice(shared, "SLHJ_H"), pipeline, paused)
    assert result.state.courses == ()


def test_the_cancellation_of_the_admission_ends_the_pause(shared: Path, pipeline: Pipeline) -> None:
    episode = "5a6c371c-cc13-417e-a5c5-f65ee8bad8e1"  # AN_STIN_N's
    paused = replace(OPEN, admitted_to=UNIT, admitted_since=NOW, admission_episode=episode)
    (resumed,) = _run(_notice(shared, "AN_STIN_N"), pipeline, paused).state.courses
    assert resumed.admitted_to is None


def test_an_admission_without_an_open_course_changes_nothing(shared: Path, pipeline: Pipeline) -> None:
    closed = replace(OPEN, open=False, stage=Stage.CLOSED)
    assert _run(_notice(shared, "STIN_A"), pipeline, closed).state.courses == ()
    assert _run(_notice(shared, "STIN_A"), pipeline).state.courses == ()


def test_leave_changes_nothing(shared: Path, pipeline: Pipeline) -> None:
    paused = replace(OPEN, admitted_to=UNIT, admitted_since=NOW, admission_episode=EPISODE)
    assert _run(_notice(shared, "STOR_F", episode=EPISODE), pipeline, paused).state.courses == ()


def test_after_a_death_a_discharge_event_is_processed_but_nothing_is_sent(
    pipeline: Pipeline, golden_discharge: bytes
) -> None:
    dead = replace(OPEN, open=False, stage=Stage.CLOSED, deceased=True)
    alive = transform(golden_discharge, pipeline, NOW, "discharge", FixedState(courses={}))
    assert isinstance(alive, FlowResult) and alive.outgoing  # the same event sends a referral for the living
    result = transform(golden_discharge, pipeline, NOW, "discharge", FixedState(courses={PATIENT: dead}))
    assert isinstance(result, FlowResult)
    assert result.outgoing == () and result.state.courses == ()
    (withheld,) = [f for f in result.facts if f.kind == "sending-withheld"]
    assert withheld.detail["messages"] == len(alive.outgoing)


def test_the_board_marks_a_paused_course_and_a_death() -> None:
    viewer = Viewer("nurse", Role.CLINICAL)
    since = datetime.fromisoformat("2026-11-27T08:00:00+01:00")
    paused = replace(OPEN, admitted_to=UNIT, admitted_since=since, admission_episode=EPISODE)
    assert stage_text(paused, viewer).startswith(f"municipal: paused, admitted to {UNIT} since ")
    assert stage_text(OPEN, viewer) == "municipal"
    assert (
        stage_text(replace(paused, open=False, stage=Stage.CLOSED), viewer) == "closed"
    )  # a closed course is not paused
    assert stage_text(replace(OPEN, open=False, stage=Stage.CLOSED, deceased=True), viewer) == "closed (deceased)"
