"""The deadlines of the patients' courses, read from the audit store: which are coming, which have passed.

Each rule (`RULES`) is decided by the domain (`domain/deadlines.py`, `domain/course_sequence.py`,
`domain/hotline.py`); this module finds what each applies to in the store. Nothing here writes: a list of
deadlines is not an event (`integration pathway overdue` audits its read itself).

- `visitation`: a patient discharged without a referral, whose visitation talk is due `visitation_window_days`
  after the discharge (`heart_failure_visitation_window_days` for a heart-failure patient;
  `course_sequence.visitation_due`). Subject: the discharge event.
- `gop-contact`, `gop-start`: the referral in force is a GOP (specialised or general) and the course is at the
  receiver's stage (specialised rehabilitation, the municipal course): Region Nordjylland's rule, the receiver
  contacts the patient within 5 weekdays of receiving the GOP and training starts within 14 calendar days
  (pri.rn.dk/Sider/21829.aspx; `domain.deadlines`). We get no event for either, so whether the contact (or the
  start) happened we cannot know, and nothing could ever clear an overdue mark: these deadlines are shown
  (`passed` once due) but never overdue (`SHOWN_ONLY`: not in `overdue`, its counts, the alert or the exit
  status of `pathway overdue`), decision 23. *Received* is when the receiver's system acknowledged the GOP
  (MedCom's reliable messaging: the receiver answers every message with an Acknowledgement on receipt, so the
  positive ack is the receipt; the time our acknowledgement flow settled it, `outbound_message.settled_at`), or,
  while no positive ack has come, when we first sent it (`first_sent_at`: MedCom delivers within minutes).
  Subject: the referral's MessageHeader id. A referral no outbound row tracks (sent before tracking existed) has
  none.
- `ack-missing`: one of our MedCom messages without an ack. While it awaits its ack, due when the resend job
  will give up on it (the ack timeout after its last transmission, once per resend still to come;
  `ack_timeout_minutes`, `max_resends`), and overdue once that moment has passed, whether or not a resend job
  ran (the consumers may be down, or run without the process that resends). Once given up on (`gave-up`), due
  when it was, and overdue: a person must follow it up (`integration outbound pending` lists the same). Every
  message we sent, for any course, open or closed: it needs a person either way.
- `ack-error`: one of our MedCom messages answered with an error ack: due (and overdue) from when it came.
- `closing-report`: a municipal course without its closing report `closing_report_weeks` after its referral
  in force was sent (an update or re-route sends a new referral and restarts it). Subject: the referral's
  MessageHeader id.
- `hotline-hours`: an unanswered hotline request; overdue when `hotline.overdue_hours` says so (the rule
  `hotline_overdue.overdue_requests` applies, without noting anything), due when `hotline_overdue_hours`
  opening hours of its department will have passed (`domain.deadlines.opening_hours_reached`). Subject: the
  request id.
- `missed-referral`: a discharge home (MedCom HospitalNotification SLHJ) from a cardiology or cardiac-surgery
  unit (mappings/hospital-notifications.yaml) without a discharge event for that stay: due `missedReferralAfter`
  hours after the discharge, overdue from then until a discharge event matches it or the discharge is cancelled
  (domain/missed_referral.py). Subject: the episode of care.

Every `detail` is one line for an operator and holds no CPR number; `patient` is the course's key (a CPR
number or `system|value`) and must be masked wherever it is shown. Errors: what the store raises (Transient,
StoreDamaged); ConfigurationError when the mappings (the hotlines' opening hours) cannot be read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from integration.config import Settings
from integration.domain.course import Course, OutboundState, Stage
from integration.domain.course_sequence import visitation_due
from integration.domain.deadlines import (
    COPENHAGEN,
    GOP_CONTACT_WEEKDAYS,
    GOP_START_DAYS,
    ack_due,
    at_gop_receiver,
    closing_report_due,
    gop_contact_due,
    gop_start_due,
    is_gop,
    opening_hours_reached,
)
from integration.domain.hotline import Hotline, overdue_hours
from integration.domain.missed_referral import WatchedEpisode, is_overdue
from integration.fhir.ids import derived_id
from integration.log import one_line
from integration.mappings import load_mappings
from integration.service.ports import OutboundMessage, Store

RULES: tuple[str, ...] = (
    "visitation",
    "gop-contact",
    "gop-start",
    "ack-missing",
    "ack-error",
    "closing-report",
    "hotline-hours",
    "missed-referral",
)
# Rules whose deadlines are shown but never overdue: no event tells us they were met (module docstring).
SHOWN_ONLY = frozenset({"gop-contact", "gop-start"})
# The rules that can be overdue: what `overdue_counts` counts, the gauge and the alert.
OVERDUE_RULES: tuple[str, ...] = tuple(r for r in RULES if r not in SHOWN_ONLY)
OPEN_STAGES: tuple[Stage, ...] = tuple(s for s in Stage if s.open)


@dataclass(frozen=True, slots=True)
class Deadline:
    """One deadline of a course: `rule` one of RULES; `patient` the course's key (CPR number or
    system|value; None when not known), to be masked when shown; `due` aware UTC; `overdue` due <= the moment
    asked about while the rule's condition still holds (never for a rule of SHOWN_ONLY); `subject` what it is
    about (the referral's MessageHeader id, the hotline request id, the discharge event id); `detail` one line
    for an operator, no CPR number; `passed` due <= the moment asked about, overdue or not."""

    rule: str
    patient: str | None
    due: datetime
    overdue: bool
    subject: str
    detail: str
    passed: bool = False
    unit: str | None = None  # the hospital unit (SOR) it is about, where no course names one: missed-referral's


class WatchStore(Store, Protocol):
    """What the deadlines read of the audit store: the message lifecycle's store (courses, our messages) and
    the open hotline requests (`AuditStore` has it all)."""

    def open_requests(self) -> Sequence[Any]: ...

    def watched_episodes(self) -> Sequence[WatchedEpisode]: ...


def deadlines(store: WatchStore, settings: Settings, at: datetime) -> list[Deadline]:
    """Every known deadline (module docstring), overdue or not, the soonest first (then by rule, subject).
    `at` must carry an offset (ValueError otherwise)."""
    if at.utcoffset() is None:
        raise ValueError("a time without an offset")
    courses = store.courses_at(OPEN_STAGES)
    sent = store.outbound_sent([referral_header(c) for c in courses if c.referral is not None], bodies=False)
    found = [
        *_visitations(courses, settings, at),
        *_gops(courses, sent, at),
        *_closing_reports(courses, sent, settings, at),
        *_acks(store, settings, at),
        *_hotline(store, settings, at),
        *_missed_referrals(store, at),
    ]
    order = {rule: index for index, rule in enumerate(RULES)}
    dated = (replace(d, passed=d.due <= at) for d in found)
    return sorted(dated, key=lambda d: (d.due, order[d.rule], d.subject))


def overdue(store: WatchStore, settings: Settings, at: datetime) -> list[Deadline]:
    """The overdue deadlines only, the longest overdue first (the earliest due)."""
    return [d for d in deadlines(store, settings, at) if d.overdue]


def overdue_counts(store: WatchStore, settings: Settings, at: datetime) -> dict[str, int]:
    """How many deadlines of each rule are overdue: every rule of OVERDUE_RULES a key, 0 when none."""
    counts = dict.fromkeys(OVERDUE_RULES, 0)
    for one in overdue(store, settings, at):
        counts[one.rule] += 1
    return counts


def referral_header(course: Course) -> str:
    """The MessageHeader id of the message that sent the course's referral in force (the referral flow mints
    it from the event the referral was built from: `flows/referral.build_referral_message`)."""
    assert course.referral is not None
    return derived_id(course.referral.event_id, "MessageHeader")


def received_at(message: OutboundMessage) -> datetime:
    """When the receiver received our message: its positive ack's arrival, else its first transmission."""
    if message.state is OutboundState.ACKNOWLEDGED and message.settled_at is not None:
        return message.settled_at
    return message.first_sent_at


def _local(moment: datetime) -> str:
    return moment.astimezone(COPENHAGEN).isoformat(timespec="minutes")


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def _visitations(courses: Iterable[Course], settings: Settings, at: datetime) -> list[Deadline]:
    window, heart_failure = settings.visitation_window_days, settings.heart_failure_visitation_window_days
    found = []
    for course in courses:
        due = visitation_due(course, timedelta(days=window), timedelta(days=heart_failure))
        if due is None or course.discharged_at is None:
            continue
        which = f"heart-failure window {heart_failure} d" if course.heart_failure else f"window {window} d"
        detail = (
            f"visitation talk after the discharge {_local(course.discharged_at)} ({which}) from "
            f"{one_line(course.referring_department, 40)}"
        )
        subject = one_line(course.discharge_event or "-", 80)
        found.append(Deadline("visitation", course.patient, _utc(due), due <= at, subject, detail))
    return found


def _gops(courses: Iterable[Course], sent: dict[str, OutboundMessage], at: datetime) -> list[Deadline]:
    found = []
    for course in courses:
        referral = course.referral
        if referral is None or not is_gop(referral) or not at_gop_receiver(course):
            continue
        header = referral_header(course)
        message = sent.get(header)
        if message is None:
            continue
        received = received_at(message)
        acked = message.state is OutboundState.ACKNOWLEDGED and message.settled_at is not None
        how = "acknowledged" if acked else "sent, no ack yet"
        said = f"{referral.category} to {one_line(referral.receiver, 40)} received {_local(received)} ({how})"
        unknown = "no event tells us whether it happened"
        contact, start = gop_contact_due(received), gop_start_due(received)
        found += [
            Deadline(
                "gop-contact",
                course.patient,
                contact,
                False,
                header,
                f"{said}: the receiver contacts the patient within {GOP_CONTACT_WEEKDAYS} weekdays; {unknown}",
            ),
            Deadline(
                "gop-start",
                course.patient,
                start,
                False,
                header,
                f"{said}: training starts within {GOP_START_DAYS} days; {unknown}",
            ),
        ]
    return found


def _closing_reports(
    courses: Iterable[Course], sent: dict[str, OutboundMessage], settings: Settings, at: datetime
) -> list[Deadline]:
    weeks = settings.closing_report_weeks
    found = []
    for course in courses:
        if course.referral is None:
            continue
        header = referral_header(course)
        message = sent.get(header)
        due = None if message is None else closing_report_due(course, message.first_sent_at, weeks)
        if message is None or due is None:
            continue
        detail = (
            f"municipal course referred to {one_line(course.referral.receiver, 40)} "
            f"{_local(message.first_sent_at)}: no closing report within {weeks} weeks"
        )
        found.append(Deadline("closing-report", course.patient, due, due <= at, header, detail))
    return found


def _acks(store: WatchStore, settings: Settings, at: datetime) -> list[Deadline]:
    timeout, most = timedelta(minutes=settings.ack_timeout_minutes), settings.max_resends
    found = []
    states = (OutboundState.AWAITING, OutboundState.GAVE_UP, OutboundState.FAILED, OutboundState.STOPPED)
    for message in store.outbound_messages(states, bodies=False):
        to = one_line(message.output.routing_key, 80)
        first = _local(message.first_sent_at)
        if message.state is OutboundState.STOPPED:  # the patient died: a person decides what the receiver is told
            due = _utc(message.settled_at or message.last_sent_at)
            detail = f"{message.flow} message to {to} (sent {first}) stopped: the patient died, a person follows it up"
            found.append(Deadline("ack-missing", message.patient or None, due, due <= at, message.header_id, detail))
            continue
        if message.state is OutboundState.FAILED:
            due = _utc(message.settled_at or message.last_sent_at)
            detail = f"{message.flow} message to {to} (sent {first}) was answered with an error ack"
            found.append(Deadline("ack-error", message.patient or None, due, due <= at, message.header_id, detail))
            continue
        stopped = message.settled_at if message.state is OutboundState.GAVE_UP else None
        if stopped is not None:
            due, late = _utc(stopped), stopped <= at
            detail = (
                f"{message.flow} message to {to} (sent {first}): no ack after {message.resends} resend(s); "
                "resending stopped, a person must follow it up"
            )
        else:  # still awaiting: late once the resend job would have given up, whether or not one ran
            due = ack_due(message.last_sent_at, message.resends, timeout, most)
            late = due <= at
            detail = f"{message.flow} message to {to} (sent {first}): no ack after {message.resends} resend(s); " + (
                "past the time the resend job gives up (it runs every minute in `integration run`)"
                if late
                else "given up on at the due time if none comes"
            )
        found.append(Deadline("ack-missing", message.patient or None, due, late, message.header_id, detail))
    return found


def _hotline(store: WatchStore, settings: Settings, at: datetime) -> list[Deadline]:
    pending = store.open_requests()
    if not pending:
        return []
    hotlines: Mapping[str, Hotline] = load_mappings(settings.mappings_dir).hotlines
    limit = settings.hotline_overdue_hours
    found = []
    for one in pending:
        request = one.request
        desk = hotlines.get(request.department or "")
        due = opening_hours_reached(desk.hours if desk else None, one.received_at, limit)
        late = overdue_hours(hotlines, request.department, one.received_at, at, limit) is not None
        where = one_line(request.department or "triage", 40)
        detail = (
            f"advice request to {where} from {one_line(request.requester, 40)} received "
            f"{_local(one.received_at)}: unanswered after {limit} opening hour(s)"
        )
        subject = one_line(request.request_id, 80)
        found.append(Deadline("hotline-hours", request.patient or None, due, late, subject, detail))
    return found


def _missed_referrals(store: WatchStore, at: datetime) -> list[Deadline]:
    found = []
    for watched in store.watched_episodes():
        hours = watched.window.total_seconds() / 3600
        detail = (
            f"discharged home from {one_line(watched.unit, 40)} {_local(watched.discharged_at)} "
            f"(HospitalNotification): no discharge event within {hours:g} h; a possible missed referral"
        )
        subject = one_line(watched.episode, 80)
        found.append(
            Deadline(
                "missed-referral",
                watched.patient,
                _utc(watched.due),
                is_overdue(watched, at),
                subject,
                detail,
                unit=watched.unit,
            )
        )
    return found
