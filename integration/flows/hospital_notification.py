"""A MedCom HospitalNotification → what it means for the patient's rehabilitation course.

Every notice is recorded (the `hospital-notification` fact) and acked `ok` by the acknowledger when this
returns. On the course the patient has, three rules act (issue #15):

    deceased (MORS, not a cancellation)    the course closes (stage closed, `deceased` marked; a patient
                                           without a course gets a closed one, so that the mark is kept);
                                           our messages for the patient awaiting an ack are stopped for a
                                           person (`StateChanges.stopped`); from then on nothing is sent
                                           for the patient (`withhold_for_the_deceased`, in the dispatch)
    admission (STIN, STAA, RE_ of either)  an open course is paused: it shows the admitting unit (the
                                           Encounter's serviceProvider), since when, and the episode
    discharge (SLHJ, RE_SLHJ) of the       the pause ends; so does the cancellation (AN_STIN, AN_STAA)
    episode that paused it                 of that admission

An admission of the stay the course began with (the course's own episode, or begun before its discharge) is
late or out of order: it is recorded (`admission-not-taken`, saying why) and pauses nothing.

Leave (STOR, SLOR) changes nothing: the patient is still admitted.

A discharge home (SLHJ, RE_SLHJ; inpatient or emergency) from a unit of mappings/hospital-notifications.yaml is
watched for its discharge event (`StateChanges.watched`; a possible missed referral, domain/missed_referral.py);
one whose discharge event came before it is watched as matched already. AN_SLHJ withdraws the same patient's
watch of that episode. A death withdraws the patient's watches (the store, for `StateChanges.stopped`), and a
patient whose death was notified is not watched.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from integration.domain.course import Course, Responsible, Stage, State, StateChanges
from integration.domain.missed_referral import (
    NOT_WATCHING,
    DischargeSeen,
    MissedReferralWatch,
    WatchedEpisode,
    WatchKey,
    matches,
    watch,
)
from integration.flows.results import AuditFact, FlowResult
from integration.formats.hospital_notification import Change, HospitalNotification, Movement

STAYING = (Change.NEW, Change.REVISION)  # what says a stay (or a death) is so; a cancellation withdraws it


def notice_fact(notice: HospitalNotification) -> AuditFact:
    """The `hospital-notification` fact: what the hospital said, without the patient (the audit keys by it)."""
    return AuditFact(
        "hospital-notification",
        {
            "header": notice.header_id,
            "activity": notice.activity.code,
            "letters": notice.letters,
            "encounterStatus": notice.encounter_status,
            "encounterClass": notice.encounter_class,
            "unit": notice.unit,
            "sender": notice.sender,
            "episode": notice.episode,
        },
    )


def _deceased(notice: HospitalNotification, course: Course | None) -> tuple[Course, AuditFact]:
    """The course closed for a death (a closed course made for a patient who had none)."""
    died = (notice.ended_at or notice.sent_at).date()
    closed = Course(notice.patient.key, "", "", False, Responsible.GP) if course is None else course
    fact = AuditFact(
        "patient-deceased",
        {"header": notice.header_id, "stageBefore": None if course is None else course.current.value},
    )
    marked = replace(
        closed,
        open=False,
        stage=Stage.CLOSED,
        deceased=True,
        closed_on=closed.closed_on if course is not None and not course.current.open else died,
        admitted_to=None,
        admitted_since=None,
        admission_episode=None,
    )
    return marked, fact


def _paused(notice: HospitalNotification, course: Course) -> tuple[Course, AuditFact]:
    paused = replace(
        course, admitted_to=notice.unit, admitted_since=notice.started_at, admission_episode=notice.episode
    )
    return paused, AuditFact(
        "course-paused", {"header": notice.header_id, "unit": notice.unit, "episode": notice.episode}
    )


def _resumed(notice: HospitalNotification, course: Course) -> tuple[Course, AuditFact]:
    resumed = replace(course, admitted_to=None, admitted_since=None, admission_episode=None)
    why = "cancelled" if notice.activity.change is Change.CANCELLATION else "discharged"
    return resumed, AuditFact("course-resumed", {"header": notice.header_id, "episode": notice.episode, "why": why})


def _course_change(notice: HospitalNotification, course: Course | None) -> tuple[Course, AuditFact] | None:
    """What the notice does to the course, if anything (see the module's table)."""
    movement, change = notice.activity.movement, notice.activity.change
    if notice.deceased and change in STAYING:
        return None if course is not None and course.deceased else _deceased(notice, course)
    if course is None or course.deceased or stale_admission(notice, course) is not None:
        return None
    ends_pause = (movement is Movement.DISCHARGE and change in STAYING) or (
        movement is Movement.ADMISSION and change is Change.CANCELLATION
    )
    if ends_pause and course.admission_episode == notice.episode:
        return _resumed(notice, course)
    if movement is Movement.ADMISSION and change in STAYING and course.current.open:
        return _paused(notice, course)
    return None


# Why an admission does not pause the course: it is of the stay the course began with, not a new one.
STALE_ADMISSION = {
    "own-episode": "the admission is of the stay whose discharge opened the course",
    "before-discharge": "the admission began before the discharge that opened the course",
}


def stale_admission(notice: HospitalNotification, course: Course | None) -> str | None:
    """Why an admission (STIN, STAA, RE_ of either) is not taken as the patient back in hospital (a key of
    STALE_ADMISSION), None when it is or the notice is no admission. A notice that comes late or out of order
    for the stay that was just discharged names the course's own episode (`Course.episode`) or began before its
    `discharged_at` (Encounter.period.start); pausing on it would send hotline copies to a ward the patient
    has left (the second attack on issue #15)."""
    if course is None or notice.activity.movement is not Movement.ADMISSION or notice.activity.change not in STAYING:
        return None
    if course.episode is not None and notice.episode == course.episode:
        return "own-episode"
    if course.discharged_at is not None and notice.started_at < course.discharged_at:
        return "before-discharge"
    return None


def _not_taken(notice: HospitalNotification, why: str) -> AuditFact:
    """The `admission-not-taken` fact: an admission recorded but not pausing the course, and why."""
    return AuditFact(
        "admission-not-taken",
        {
            "header": notice.header_id,
            "unit": notice.unit,
            "episode": notice.episode,
            "since": notice.started_at.isoformat(),
            "why": STALE_ADMISSION[why],
        },
    )


def handle_hospital_notification(
    notice: HospitalNotification,
    course: Course | None,
    now: datetime,
    missed_referral: MissedReferralWatch = NOT_WATCHING,
) -> FlowResult:
    """The facts and state changes of one notice for the patient's course (None: the patient has none), and
    the watch of a discharge home from a unit `missed_referral` names."""
    watching, watch_facts = _watch(notice, course, missed_referral)
    stale = stale_admission(notice, course) if course is not None and not course.deceased else None
    facts = (notice_fact(notice), *watch_facts, *(() if stale is None else (_not_taken(notice, stale),)))
    changed = _course_change(notice, course)
    if changed is None:
        return FlowResult((), facts, notice.patient.key, watching)
    new, fact = changed
    stopped = (new.patient,) if new.deceased and not (course is not None and course.deceased) else ()
    return FlowResult((), (*facts, fact), notice.patient.key, StateChanges(courses=(new,), stopped=stopped) + watching)


def _watch(
    notice: HospitalNotification, course: Course | None, rule: MissedReferralWatch
) -> tuple[StateChanges, tuple[AuditFact, ...]]:
    """A discharge home from a watched unit → the episode watched (matched already when the course's discharge
    event is its); its cancellation (AN_SLHJ) → the watch withdrawn. Anything else → nothing."""
    if notice.activity.movement is not Movement.DISCHARGE or notice.deceased or notice.unit not in rule.units:
        return StateChanges(), ()
    if notice.activity.change is Change.CANCELLATION:
        fact = AuditFact(
            "discharge-unwatched", {"header": notice.header_id, "unit": notice.unit, "episode": notice.episode}
        )
        return StateChanges(unwatched=(WatchKey(notice.patient.key, notice.episode),)), (fact,)
    if course is not None and course.deceased:  # a dead patient is no missed referral (MORS came first)
        return StateChanges(), ()
    discharged = notice.ended_at or notice.sent_at
    watched = watch(notice.episode, notice.patient.key, notice.unit, discharged, notice.header_id, rule)
    assert watched is not None  # the unit is watched
    earlier = _earlier_discharge_event(watched, course)
    watched = replace(watched, matched_by=earlier)
    fact = AuditFact(
        "discharge-watched",
        {
            "header": notice.header_id,
            "unit": notice.unit,
            "episode": notice.episode,
            "dischargedAt": discharged.isoformat(),
            "due": watched.due.isoformat(),
            "matchedBy": earlier,
        },
    )
    return StateChanges(watched=(watched,)), (fact,)


def _earlier_discharge_event(watched: WatchedEpisode, course: Course | None) -> str | None:
    """The discharge event already received for the watched stay (the one that opened the patient's course), if
    it matches (by the episode of care the course keeps, else by patient, unit and time); None otherwise."""
    if course is None or course.discharge_event is None or course.discharged_at is None:
        return None
    seen = DischargeSeen(
        course.discharge_event, course.patient, course.referring_department, course.episode, course.discharged_at
    )
    return seen.event_id if matches(watched, seen) else None


def withhold_for_the_deceased(result: FlowResult, state: State) -> FlowResult:
    """A flow's result for a patient whose death was notified: processed and audited, but nothing is sent and
    the course is not moved (its outgoing messages, course changes and new hotline requests are dropped; the
    `sending-withheld` fact says what was held back). The one place every flow's output passes (the dispatch)."""
    course = state.course(result.patient) if result.patient else None
    if course is None or not course.deceased:
        return result
    changes = result.state
    if not (result.outgoing or changes.courses or changes.opened):
        return result
    fact = AuditFact(
        "sending-withheld",
        {
            "why": "the patient's death was notified (HospitalNotification MORS)",
            "messages": len(result.outgoing),
            "routingKeys": sorted({o.route.routing_key for o in result.outgoing}),
        },
    )
    kept = replace(changes, courses=(), opened=())
    return FlowResult((), (*result.facts, fact), result.patient, kept)
