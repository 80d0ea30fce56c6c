"""Hotline routing (the agreement's advice during a municipal course), pure and table-driven.

A routine question goes to the inbox of the department that holds medical responsibility (the
referring department while the patient's course is open); outside opening hours the sender is told
when it will be answered. An acute question goes to that department's on-call doctor at once. A course the
patient's GP referred is the GP's: a municipality's question on it goes to the GP's inbox. Once the
municipality's closing status has handed responsibility to the GP, a municipality's question is sent
to manual triage and the sender is told. Nothing is dropped: what cannot be placed goes to triage, and
an acute question placed there is answered with the region's on-call contact (whoever asks acutely is
always given someone to ring).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from integration.domain.course import Course, Referrer, Responsible
from integration.domain.opening_hours import OpeningHours, open_hours_between


class SenderKind(Enum):
    MUNICIPALITY = "municipality"
    GP = "gp"


@dataclass(frozen=True, slots=True)
class AdviceRequest:
    request_id: str
    sender_kind: SenderKind
    sender_id: str  # SOR, or the GP's ydernummer
    patient: str  # the CPR number, or a replacement number as `system|value` (identifiers.ReplacementCpr.key)
    text: str
    acute: bool
    sent_at: datetime
    addressed_department: str | None = None  # SOR, when the sender named one
    thread_id: str | None = None  # a CareCommunication's thread (Communication.identifier)


@dataclass(frozen=True, slots=True)
class Hotline:
    department: str  # SOR
    name: str
    hours: OpeningHours
    on_call_name: str
    on_call_phone: str


@dataclass(frozen=True, slots=True)
class OnCall:
    """Someone to ring at once: a department's on-call doctor, or the region's when no department is known."""

    name: str
    phone: str


class Outcome(Enum):
    ACUTE_TO_ON_CALL = "acute-to-on-call"
    ACUTE_TO_TRIAGE = "acute-to-triage"  # no department to give it to: triage, and the region's on-call replies
    TO_DEPARTMENT = "to-department"
    TO_DEPARTMENT_AFTER_HOURS = "to-department-after-hours"
    RESPONSIBILITY_WITH_GP = "responsibility-with-gp"
    TO_GP = "to-gp"  # a course the GP referred: the GP is responsible, and answers
    ACUTE_TO_GP = "acute-to-gp"  # the same, acute: the GP's inbox, and the region's on-call replies
    UNMATCHED = "unmatched"


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    queue: str  # oncall.<SOR> | department.<SOR> | gp.<ydernummer> | unmatched
    department: Hotline | None
    answer_from: datetime | None = None  # when an after-hours request will be answered

    @property
    def replies(self) -> bool:
        """Whether the sender gets an automatic reply."""
        return self.outcome in REPLYING


REPLYING = frozenset(
    {
        Outcome.ACUTE_TO_ON_CALL,
        Outcome.ACUTE_TO_TRIAGE,
        Outcome.TO_DEPARTMENT_AFTER_HOURS,
        Outcome.RESPONSIBILITY_WITH_GP,
        Outcome.TO_GP,
        Outcome.ACUTE_TO_GP,
    }
)


def responsible_department(request: AdviceRequest, course: Course | None) -> str | None:
    """Who should answer: the department a GP addressed, else the one that referred the patient."""
    if request.sender_kind is SenderKind.GP and request.addressed_department:
        return request.addressed_department
    if course is not None:
        return course.referring_department
    return request.addressed_department


def gp_course(request: AdviceRequest, course: Course | None) -> str | None:
    """The ydernummer of the GP who referred the patient and holds the medical responsibility for the running
    course ("ved senere opstået behov kan egen læge henvise til kommunal rehabilitering": the hospital has no
    part in that course), when a municipality asks about it; None otherwise."""
    if request.sender_kind is not SenderKind.MUNICIPALITY or course is None or not course.open:
        return None
    return course.gp if course.referrer == Referrer.GP and course.responsible == Responsible.GP else None


def route(
    request: AdviceRequest, course: Course | None, hotlines: Mapping[str, Hotline], received_at: datetime
) -> Decision:
    """Where an advice request goes (see the module's docstring); a municipality's question on a course the GP
    referred goes to that GP, acute or not (an acute one is also answered with the region's on-call)."""
    if gp := gp_course(request, course):
        return Decision(Outcome.ACUTE_TO_GP if request.acute else Outcome.TO_GP, f"gp.{gp}", None)
    municipality_after_handover = (  # a course the hospital keeps responsibility for stays the department's
        request.sender_kind is SenderKind.MUNICIPALITY
        and course is not None
        and not course.open
        and course.responsible == Responsible.GP
    )
    if municipality_after_handover and not request.acute:
        return Decision(Outcome.RESPONSIBILITY_WITH_GP, "unmatched", None)
    sor = responsible_department(request, course)
    hotline = hotlines.get(sor) if sor else None
    if hotline is None:  # no course, no department named, or one without a hotline
        return Decision(Outcome.ACUTE_TO_TRIAGE if request.acute else Outcome.UNMATCHED, "unmatched", None)
    if request.acute:
        return Decision(Outcome.ACUTE_TO_ON_CALL, f"oncall.{hotline.department}", hotline)
    if hotline.hours.is_open(received_at):
        return Decision(Outcome.TO_DEPARTMENT, f"department.{hotline.department}", hotline)
    return Decision(
        Outcome.TO_DEPARTMENT_AFTER_HOURS,
        f"department.{hotline.department}",
        hotline,
        answer_from=hotline.hours.next_opening(received_at),
    )


def overdue_hours(
    hotlines: Mapping[str, Hotline], department: str | None, received_at: datetime, moment: datetime, limit: float
) -> float | None:
    """The opening hours an unanswered request has waited at `moment` when that is at least `limit` (it is
    overdue), None while it is not. Hours are counted in the opening hours of the department it went to (SOR,
    a key of `hotlines`), in the hotline's zone with daylight saving; a request in triage (`department` None,
    or one without a hotline) counts every hour. Both times need an offset (ValueError otherwise).

    The agreement has the responsible department advise the municipality and the GP (DCS 2019) but names no
    time to answer: `limit` is the operator's (`hotline_overdue_hours`), counting in opening hours is decision
    8 (docs/decisions/0008-hotline.md)."""
    desk = hotlines.get(department or "")
    waited = open_hours_between(desk.hours if desk else None, received_at, moment)
    return waited if waited >= limit else None
