"""Hotline routing: every outcome, opening hours at their edges, weekends, holidays, the handover to the GP."""

from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo

import holidays
import pytest

from integration.domain.course import Course
from integration.domain.hotline import AdviceRequest, Hotline, Outcome, SenderKind, route
from integration.domain.opening_hours import OpeningHours

CPH = ZoneInfo("Europe/Copenhagen")
AALBORG, THISTED = "715541000016001", "715581000016005"
MUNICIPALITY_SOR, YDERNUMMER = "434751000016002", "012345"
DK = holidays.country_holidays("DK")
WEEKDAYS_8_TO_15 = {d: (time(8), time(15)) for d in range(5)}


def hotline(sor: str) -> Hotline:
    hours = OpeningHours(WEEKDAYS_8_TO_15, frozenset({(12, 24)}), lambda day: day in DK)
    return Hotline(sor, f"dept {sor}", hours, "Bagvagt", "+45 97 66 00 00")


HOTLINES = {AALBORG: hotline(AALBORG), THISTED: hotline(THISTED)}
OPEN_COURSE = Course("2512489996", AALBORG, "851", open=True, responsible="hospital")
CLOSED_COURSE = Course("2512489996", AALBORG, "851", open=False, responsible="gp")
RETAINED_COURSE = Course("2512489996", AALBORG, "851", open=False, responsible="hospital")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=CPH)


def request(
    kind: SenderKind = SenderKind.MUNICIPALITY, acute: bool = False, addressed: str | None = None
) -> AdviceRequest:
    sender = MUNICIPALITY_SOR if kind is SenderKind.MUNICIPALITY else YDERNUMMER
    return AdviceRequest(
        "r-1", kind, sender, "2512489996", "Må hun træne med puls 140?", acute, at("2026-11-23T09:00"), addressed
    )


M, GP = SenderKind.MUNICIPALITY, SenderKind.GP
CASES = [
    # id, sender, acute, addressed, course, received at → outcome, queue, answer from
    ("acute", M, True, None, OPEN_COURSE, "2026-11-23T10:00", Outcome.ACUTE_TO_ON_CALL, f"oncall.{AALBORG}", None),
    (
        "acute-at-night",
        M,
        True,
        None,
        OPEN_COURSE,
        "2026-11-23T23:30",
        Outcome.ACUTE_TO_ON_CALL,
        f"oncall.{AALBORG}",
        None,
    ),
    (
        "acute-after-handover",
        M,
        True,
        None,
        CLOSED_COURSE,
        "2026-11-23T10:00",
        Outcome.ACUTE_TO_ON_CALL,
        f"oncall.{AALBORG}",
        None,
    ),
    (
        "open-hours",
        M,
        False,
        None,
        OPEN_COURSE,
        "2026-11-23T10:00",
        Outcome.TO_DEPARTMENT,
        f"department.{AALBORG}",
        None,
    ),
    (
        "opening-minute",
        M,
        False,
        None,
        OPEN_COURSE,
        "2026-11-23T08:00",
        Outcome.TO_DEPARTMENT,
        f"department.{AALBORG}",
        None,
    ),
    ("14:59", M, False, None, OPEN_COURSE, "2026-11-23T14:59", Outcome.TO_DEPARTMENT, f"department.{AALBORG}", None),
    (
        "15:00",
        M,
        False,
        None,
        OPEN_COURSE,
        "2026-11-23T15:00",
        Outcome.TO_DEPARTMENT_AFTER_HOURS,
        f"department.{AALBORG}",
        "2026-11-24T08:00",
    ),
    (
        "before-opening",
        M,
        False,
        None,
        OPEN_COURSE,
        "2026-11-24T07:59",
        Outcome.TO_DEPARTMENT_AFTER_HOURS,
        f"department.{AALBORG}",
        "2026-11-24T08:00",
    ),
    (
        "friday-evening",
        M,
        False,
        None,
        OPEN_COURSE,
        "2026-11-27T16:00",
        Outcome.TO_DEPARTMENT_AFTER_HOURS,
        f"department.{AALBORG}",
        "2026-11-30T08:00",
    ),
    (
        "saturday",
        M,
        False,
        None,
        OPEN_COURSE,
        "2026-11-28T10:00",
        Outcome.TO_DEPARTMENT_AFTER_HOURS,
        f"department.{AALBORG}",
        "2026-11-30T08:00",
    ),
    (
        "maundy-thursday-to-after-easter",
        M,
        False,
        None,
        OPEN_COURSE,
        "2026-04-01T15:30",
        Outcome.TO_DEPARTMENT_AFTER_HOURS,
        f"department.{AALBORG}",
        "2026-04-07T08:00",
    ),
    (
        "easter-monday",
        M,
        False,
        None,
        OPEN_COURSE,
        "2026-04-06T10:00",
        Outcome.TO_DEPARTMENT_AFTER_HOURS,
        f"department.{AALBORG}",
        "2026-04-07T08:00",
    ),
    (
        "former-great-prayer-day-is-a-working-day",
        M,
        False,
        None,
        OPEN_COURSE,
        "2026-05-01T10:00",
        Outcome.TO_DEPARTMENT,
        f"department.{AALBORG}",
        None,
    ),
    (
        "christmas-eve-extra-closed-day",
        M,
        False,
        None,
        OPEN_COURSE,
        "2026-12-24T10:00",
        Outcome.TO_DEPARTMENT_AFTER_HOURS,
        f"department.{AALBORG}",
        "2026-12-28T08:00",
    ),
    (
        "course-closed-municipality",
        M,
        False,
        None,
        CLOSED_COURSE,
        "2026-11-23T10:00",
        Outcome.RESPONSIBILITY_WITH_GP,
        "unmatched",
        None,
    ),
    (
        "course-closed-hospital-retains-responsibility",
        M,
        False,
        None,
        RETAINED_COURSE,
        "2026-11-23T10:00",
        Outcome.TO_DEPARTMENT,
        f"department.{AALBORG}",
        None,
    ),
    ("no-course-no-department", M, False, None, None, "2026-11-23T10:00", Outcome.UNMATCHED, "unmatched", None),
    (
        "no-course-department-addressed",
        M,
        False,
        THISTED,
        None,
        "2026-11-23T10:00",
        Outcome.TO_DEPARTMENT,
        f"department.{THISTED}",
        None,
    ),
    (
        "unknown-department-addressed",
        M,
        False,
        "999991000016001",
        None,
        "2026-11-23T10:00",
        Outcome.UNMATCHED,
        "unmatched",
        None,
    ),
    (
        "gp-addressed-department",
        GP,
        False,
        THISTED,
        OPEN_COURSE,
        "2026-11-23T10:00",
        Outcome.TO_DEPARTMENT,
        f"department.{THISTED}",
        None,
    ),
    (
        "gp-referring-department",
        GP,
        False,
        None,
        OPEN_COURSE,
        "2026-11-23T10:00",
        Outcome.TO_DEPARTMENT,
        f"department.{AALBORG}",
        None,
    ),
    (
        "gp-after-handover-still-answered",
        GP,
        False,
        None,
        CLOSED_COURSE,
        "2026-11-23T10:00",
        Outcome.TO_DEPARTMENT,
        f"department.{AALBORG}",
        None,
    ),
    ("gp-no-course-no-department", GP, False, None, None, "2026-11-23T10:00", Outcome.UNMATCHED, "unmatched", None),
]


@pytest.mark.parametrize(
    ("sender", "acute", "addressed", "course", "received", "outcome", "queue", "answer_from"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_route(sender, acute, addressed, course, received, outcome, queue, answer_from) -> None:
    decision = route(request(sender, acute, addressed), course, HOTLINES, at(received))
    assert (decision.outcome, decision.queue) == (outcome, queue)
    assert decision.answer_from == (at(answer_from) if answer_from else None)
    assert decision.replies is (
        outcome in {Outcome.ACUTE_TO_ON_CALL, Outcome.TO_DEPARTMENT_AFTER_HOURS, Outcome.RESPONSIBILITY_WITH_GP}
    )


def test_the_switch_of_responsibility_when_the_course_closes() -> None:
    before = route(request(), OPEN_COURSE, HOTLINES, at("2026-11-23T10:00"))
    after = route(request(), CLOSED_COURSE, HOTLINES, at("2026-11-23T10:00"))
    assert before.outcome is Outcome.TO_DEPARTMENT and after.outcome is Outcome.RESPONSIBILITY_WITH_GP


def test_opening_hours_follow_summer_time() -> None:
    hours = HOTLINES[AALBORG].hours
    assert hours.is_open(at("2026-06-15T14:59")) and not hours.is_open(at("2026-06-15T15:00"))
    assert hours.next_opening(at("2026-03-27T16:00")) == at("2026-03-30T08:00")  # across the switch to summer time


@pytest.mark.parametrize(
    ("start", "end", "hours"),
    [
        ("2026-11-23T09:00", "2026-11-23T11:30", 2.5),
        ("2026-11-23T14:00", "2026-11-24T09:00", 2.0),  # one hour on Monday, one on Tuesday
        ("2026-11-27T14:00", "2026-11-30T09:00", 2.0),  # the weekend does not count
        ("2026-04-01T14:00", "2026-04-07T09:00", 2.0),  # nor Easter
        ("2026-11-23T16:00", "2026-11-23T20:00", 0.0),
    ],
)
def test_open_hours_between(start: str, end: str, hours: float) -> None:
    from integration.domain.opening_hours import open_hours_between

    assert open_hours_between(HOTLINES[AALBORG].hours, at(start), at(end)) == hours


def test_without_opening_hours_every_hour_counts() -> None:
    from integration.domain.opening_hours import open_hours_between

    assert open_hours_between(None, at("2026-11-28T10:00"), at("2026-11-29T10:00")) == 24.0
