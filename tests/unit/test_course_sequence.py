"""The pathway's rules, pure: what a later decision does to the referral in force, which event may follow
which stage, the visitation window (longer for heart failure), and the hotline on the new kinds of course."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from integration.domain.course import Course, Referrer, Responsible, SentReferral, Stage
from integration.domain.course_sequence import (
    TRANSITIONS,
    Change,
    ConflictsWithCourse,
    OutOfOrder,
    Step,
    admit_discharge,
    admit_gp_referral,
    admit_hospital_closing,
    admit_step_down,
    admit_visitation,
    compare,
    hospital_closing_target,
    targets,
    visitation_due,
)
from integration.domain.hotline import AdviceRequest, Hotline, Outcome, SenderKind, route
from integration.domain.opening_hours import OpeningHours

CPH = ZoneInfo("Europe/Copenhagen")
DISCHARGED = datetime(2026, 11, 20, 13, 30, tzinfo=CPH)
AALBORG = "715541000016001"
MUNICIPAL = SentReferral(
    "urn:uuid:a",
    "a",
    "municipality",
    "434751000016002",
    "gop-general",
    "moderate",
    ("diet", "physical-activity"),
    "municipality",
    True,
    "851",
)
HOSPITAL = replace(MUNICIPAL, performer="hospital", receiver="715561000016003", category="gop-specialised")


def course(stage: Stage | None, referral: SentReferral | None = MUNICIPAL, **changes: object) -> Course:
    base = Course(
        "2512489996",
        AALBORG,
        "851",
        True,
        Responsible.HOSPITAL,
        stage=stage,
        referral=referral,
        discharged_at=DISCHARGED,
    )
    return replace(base, **changes)


@pytest.mark.parametrize(
    ("in_force", "proposed", "change"),
    [
        (None, None, Change.NONE),
        (None, MUNICIPAL, Change.NEW),
        (MUNICIPAL, None, Change.CANCEL),
        (MUNICIPAL, replace(MUNICIPAL, service_request="urn:uuid:b", event_id="b"), Change.UNCHANGED),
        (MUNICIPAL, replace(MUNICIPAL, elements=("physical-activity", "diet")), Change.UNCHANGED),  # order is not news
        (MUNICIPAL, replace(MUNICIPAL, elements=("diet",)), Change.UPDATE),
        (MUNICIPAL, replace(MUNICIPAL, risk_group="low"), Change.UPDATE),
        (MUNICIPAL, replace(MUNICIPAL, category="municipal-rehabilitation"), Change.UPDATE),
        (MUNICIPAL, replace(MUNICIPAL, closing_place="hospital"), Change.UPDATE),
        (MUNICIPAL, replace(MUNICIPAL, ambulatory_control=False), Change.UPDATE),
        (MUNICIPAL, HOSPITAL, Change.RE_ROUTE),
        (MUNICIPAL, replace(MUNICIPAL, receiver="329551000016000", municipality_code="773"), Change.RE_ROUTE),
    ],
)
def test_what_a_later_decision_does_to_the_referral_in_force(
    in_force: SentReferral | None, proposed: SentReferral | None, change: Change
) -> None:
    assert compare(in_force, proposed) is change


def test_a_visitation_needs_its_discharge() -> None:
    with pytest.raises(OutOfOrder, match="before its discharge event") as refused:
        admit_visitation(None, DISCHARGED + timedelta(days=14))
    assert refused.value.field == "eventType" and refused.value.reason == "out-of-order"


def test_a_visitation_before_the_discharge_it_follows_is_out_of_order() -> None:
    with pytest.raises(OutOfOrder) as refused:
        admit_visitation(course(Stage.AWAITING_VISITATION, None), DISCHARGED - timedelta(minutes=1))
    assert refused.value.field == "occurredAt"


@pytest.mark.parametrize(
    "stage", [Stage.AWAITING_VISITATION, Stage.SPECIALISED, Stage.MUNICIPAL, Stage.NOT_REFERRED, None]
)
def test_a_visitation_may_follow_a_discharge_while_the_course_has_not_moved_on(stage: Stage | None) -> None:
    known = course(stage)
    assert admit_visitation(known, DISCHARGED + timedelta(days=14)) is known


@pytest.mark.parametrize(
    "known",
    [
        course(Stage.CLOSED),
        course(Stage.AWAITING_HOSPITAL_CLOSING),
        course(Stage.HOSPITAL_FOLLOW_UP),
        course(Stage.MUNICIPAL, referrer=Referrer.GP, responsible=Responsible.GP, gp="012345"),
        course(Stage.MUNICIPAL, specialised_referral="urn:uuid:s"),  # a step-down's course
    ],
    ids=["closed", "awaiting-hospital-closing", "hospital-follow-up", "gp-course", "step-down"],
)
def test_a_visitation_cannot_change_a_course_past_its_visitation(known: Course) -> None:
    with pytest.raises(OutOfOrder, match="cannot change this course"):
        admit_visitation(known, DISCHARGED + timedelta(days=14))


def test_a_step_down_needs_a_specialised_course() -> None:
    specialised = course(Stage.SPECIALISED, HOSPITAL)
    assert admit_step_down(specialised) is specialised
    for known in (None, course(Stage.MUNICIPAL), course(Stage.AWAITING_VISITATION, None)):
        with pytest.raises(OutOfOrder, match="needs a specialised course"):
            admit_step_down(known)


def test_a_gp_referral_beside_a_running_hospital_pathway_conflicts() -> None:
    gp_course = course(Stage.MUNICIPAL, referrer=Referrer.GP, responsible=Responsible.GP, gp="012345")
    for known in (None, course(Stage.CLOSED), course(Stage.NOT_REFERRED, None), gp_course):
        admit_gp_referral(known)  # a GP's own running course: its referral is changed, not doubled
    for stage in (Stage.AWAITING_VISITATION, Stage.SPECIALISED, Stage.MUNICIPAL, Stage.HOSPITAL_FOLLOW_UP):
        with pytest.raises(ConflictsWithCourse) as refused:
            admit_gp_referral(course(stage))
        assert refused.value.field == "patient" and refused.value.reason == "conflicts-with-course"


def test_the_hospitals_closing_follows_its_course_and_waits_for_the_visitation() -> None:
    plan, out = Step.FOLLOW_UP_PLAN, Step.OUTPATIENT_DISCHARGE
    for stage in (Stage.SPECIALISED, Stage.MUNICIPAL, Stage.AWAITING_HOSPITAL_CLOSING, Stage.HOSPITAL_FOLLOW_UP):
        admit_hospital_closing(plan, course(stage))
    for stage in (Stage.CLOSED, Stage.NOT_REFERRED):
        admit_hospital_closing(plan, course(stage))  # the GP gets the plan all the same
    admit_hospital_closing(plan, None)
    for stage in (Stage.HOSPITAL_FOLLOW_UP, Stage.AWAITING_HOSPITAL_CLOSING, Stage.MUNICIPAL):
        admit_hospital_closing(out, course(stage))
    admit_hospital_closing(out, None)
    for stage in (Stage.CLOSED, Stage.NOT_REFERRED):
        admit_hospital_closing(out, course(stage))  # delivered: the GP holds the responsibility already
    refused = [(plan, Stage.AWAITING_VISITATION), (out, Stage.AWAITING_VISITATION), (out, Stage.SPECIALISED)]
    for step, stage in refused:
        with pytest.raises(OutOfOrder):
            admit_hospital_closing(step, course(stage))


def test_a_running_municipal_course_stays_open_after_the_hospitals_closing() -> None:
    assert hospital_closing_target(course(Stage.MUNICIPAL)) is Stage.MUNICIPAL  # the hotline until it ends
    at_hospital = course(Stage.MUNICIPAL, replace(MUNICIPAL, closing_place="hospital"))
    assert hospital_closing_target(at_hospital) is Stage.CLOSED  # the plan after a closing talk at the hospital
    for stage in (Stage.SPECIALISED, Stage.AWAITING_HOSPITAL_CLOSING, Stage.HOSPITAL_FOLLOW_UP):
        assert hospital_closing_target(course(stage)) is Stage.CLOSED
    assert hospital_closing_target(None) is Stage.CLOSED


def test_a_discharge_from_before_the_last_course_ended_is_out_of_order() -> None:
    ended = course(Stage.CLOSED, closed_on=date(2027, 2, 15), open=False)
    with pytest.raises(OutOfOrder) as refused:
        admit_discharge(ended, DISCHARGED)
    assert refused.value.field == "admission.dischargedAt"
    admit_discharge(ended, datetime(2027, 3, 1, 10, tzinfo=CPH))  # a new admission after it: a new course
    admit_discharge(None, DISCHARGED)


WINDOW, HEART_FAILURE_WINDOW = timedelta(days=21), timedelta(days=56)


def test_the_visitation_is_due_three_weeks_after_discharge_and_later_for_heart_failure() -> None:
    waiting = course(Stage.AWAITING_VISITATION, None)
    assert visitation_due(waiting, WINDOW, HEART_FAILURE_WINDOW) == DISCHARGED + WINDOW
    assert visitation_due(replace(waiting, heart_failure=True), WINDOW, HEART_FAILURE_WINDOW) == (
        DISCHARGED + HEART_FAILURE_WINDOW
    )
    assert visitation_due(course(Stage.MUNICIPAL), WINDOW, HEART_FAILURE_WINDOW) is None
    assert visitation_due(replace(waiting, discharged_at=None), WINDOW, HEART_FAILURE_WINDOW) is None


def test_every_stage_is_reached_and_every_open_stage_can_be_left() -> None:
    reached = {t.target for t in TRANSITIONS}
    assert reached == set(Stage)
    for stage in Stage:
        if stage.open:
            assert any(t.source is stage for t in TRANSITIONS), stage
    assert targets(None, Step.DISCHARGE) == {Stage.AWAITING_VISITATION, Stage.SPECIALISED, Stage.MUNICIPAL}
    assert targets(Stage.CLOSED, Step.VISITATION) == frozenset()


def test_a_course_stored_before_stages_reads_as_municipal_or_closed() -> None:
    assert Course("2512489996", AALBORG, "851", True, Responsible.HOSPITAL).current is Stage.MUNICIPAL
    assert Course("2512489996", AALBORG, "851", False, Responsible.GP).current is Stage.CLOSED


# The hotline on the new kinds of course (re-checked against every stage).
HOURS = OpeningHours({d: (time(8), time(15)) for d in range(5)}, frozenset(), lambda _day: False)
HOTLINES = {AALBORG: Hotline(AALBORG, "Kardiologi", HOURS, "Bagvagt", "+45 97 66 00 00")}
MONDAY = datetime(2027, 5, 10, 10, tzinfo=CPH)


def _ask(known: Course | None, kind: SenderKind = SenderKind.MUNICIPALITY, acute: bool = False) -> tuple[Outcome, str]:
    sender = "434751000016002" if kind is SenderKind.MUNICIPALITY else "012345"
    request = AdviceRequest("r-1", kind, sender, "2512489996", "Spørgsmål", acute, MONDAY)
    decision = route(request, known, HOTLINES, MONDAY)
    return decision.outcome, decision.queue


GP_COURSE = course(
    Stage.MUNICIPAL, referrer=Referrer.GP, responsible=Responsible.GP, gp="012345", referring_department=""
)


@pytest.mark.parametrize(
    ("known", "kind", "acute", "expected"),
    [
        (GP_COURSE, SenderKind.MUNICIPALITY, False, (Outcome.TO_GP, "gp.012345")),
        (GP_COURSE, SenderKind.MUNICIPALITY, True, (Outcome.ACUTE_TO_GP, "gp.012345")),
        (GP_COURSE, SenderKind.GP, False, (Outcome.UNMATCHED, "unmatched")),  # the GP asks no hospital about it
        (
            course(Stage.MUNICIPAL, specialised_referral="urn:uuid:s"),
            SenderKind.MUNICIPALITY,
            False,
            (Outcome.TO_DEPARTMENT, f"department.{AALBORG}"),
        ),  # step-down: the hospital stays responsible
        (
            course(Stage.AWAITING_VISITATION, None),
            SenderKind.MUNICIPALITY,
            False,
            (Outcome.TO_DEPARTMENT, f"department.{AALBORG}"),
        ),
        (
            course(Stage.AWAITING_HOSPITAL_CLOSING, open=True),
            SenderKind.MUNICIPALITY,
            False,
            (Outcome.TO_DEPARTMENT, f"department.{AALBORG}"),
        ),
        (
            course(Stage.HOSPITAL_FOLLOW_UP, open=False),
            SenderKind.MUNICIPALITY,
            False,
            (Outcome.TO_DEPARTMENT, f"department.{AALBORG}"),
        ),  # the hospital keeps the patient
        (
            course(Stage.CLOSED, open=False, responsible=Responsible.GP),
            SenderKind.MUNICIPALITY,
            False,
            (Outcome.RESPONSIBILITY_WITH_GP, "unmatched"),
        ),
        (
            course(Stage.NOT_REFERRED, None, open=False, responsible=Responsible.GP),
            SenderKind.MUNICIPALITY,
            False,
            (Outcome.RESPONSIBILITY_WITH_GP, "unmatched"),
        ),
        (
            replace(GP_COURSE, stage=Stage.CLOSED, open=False),
            SenderKind.MUNICIPALITY,
            False,
            (Outcome.RESPONSIBILITY_WITH_GP, "unmatched"),
        ),
    ],
    ids=[
        "gp-course",
        "gp-course-acute",
        "gp-asks",
        "step-down",
        "awaiting-visitation",
        "awaiting-hospital-closing",
        "hospital-follow-up",
        "closed",
        "not-referred",
        "gp-course-closed",
    ],
)
def test_the_hotline_routes_by_who_is_responsible_at_each_stage(
    known: Course, kind: SenderKind, acute: bool, expected: tuple[Outcome, str]
) -> None:
    assert _ask(known, kind, acute) == expected
