"""A patient's events in sequence: which event may follow which, what a later event changes in the referral
in force, and the stage the course moves to. Pure; the flows ask it and carry out what it says.

The pathway is the agreement's (Region Nordjylland, June 2021, the figure and "Uddybning af figuren"):

- at discharge the patient is stratified and referred at once, or not yet (`awaiting-visitation`);
- about two weeks later the visitation talk decides the referral, and may re-stratify "if the patient's
  condition has changed significantly": it refers a patient not yet referred, or changes the referral in
  force by an *update* to the same receiver, a *cancellation* and a new referral when the receiver changes,
  a cancellation when it decides on no rehabilitation, and nothing at all when it changes nothing;
- high-risk patients start at the hospital and "may afterwards move to municipal rehabilitation" (step-down);
- "if the need arises later, the patient's own GP can refer to municipal rehabilitation": the GP holds the
  medical responsibility for that course;
- the municipality's status to the GP hands responsibility to the GP when the closing conversation was in
  the municipality and the hospital does not keep the patient; when the closing conversation is at the
  hospital, the hospital's follow-up plan (*opfølgningsplan*) closes the course; a patient who stays with the
  hospital is handed to the GP when the hospital discharges them from its outpatient care.

`TRANSITIONS` lists every move, each named after the agreement; the README's state diagram is drawn from it
(`integration pathway diagram`), so the picture cannot drift from the rules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from types import MappingProxyType

from integration.domain.course import Course, Referrer, SentReferral, Stage, _Value
from integration.errors import InvalidInput


class Step(_Value):
    """The events of the pathway, by what they are in the agreement."""

    DISCHARGE = "discharge"  # udskrivelse: stratified, referred at once or not yet
    VISITATION = "visitation"  # visitationssamtale, about two weeks after discharge
    STEP_DOWN = "step-down"  # from specialised rehabilitation at the hospital to the municipality
    GP_REFERRAL = "gp-referral"  # egen læge henviser ved senere opstået behov
    MUNICIPAL_STATUS = "municipal-status"  # the municipality's closing report: its status to the GP
    FOLLOW_UP_PLAN = "follow-up-plan"  # the hospital's closing conversation: its opfølgningsplan to the GP
    OUTPATIENT_DISCHARGE = "outpatient-discharge"  # the hospital discharges a patient it kept from its care
    DISCHARGE_UPDATE = "discharge-update"  # the hospital changes a discharge it sent (HL7 v2 ADT^A08)
    DISCHARGE_CANCELLATION = "discharge-cancellation"  # it withdraws the discharge or admission (ADT^A13/A11)


class OutOfOrder(InvalidInput):
    """An event that cannot follow what this patient's course has seen (decision 18): refused, dead-lettered
    with this reason, and replayable (`integration dlq replay`) once the event it waits for has arrived. The
    consumer first holds it for a few seconds (decision 31): the event it waits for may be in another consumer
    process's hands."""

    reason = "out-of-order"
    awaits_earlier_message = True


class ReferralSettled(InvalidInput):
    """An update of a discharge (HL7 v2 ADT^A08) whose referral can no longer change: the municipality's status
    has arrived, the course has closed, or a later decision (a visitation talk, a step-down) has replaced what the
    discharge said. Refused and dead-lettered with this reason; unlike OutOfOrder, replaying it cannot help: the
    change must reach the receiver another way (the hotline, a visitation talk)."""

    reason = "referral-settled"


class ConflictsWithCourse(InvalidInput):
    """An event that would start a second, independent course beside one that is running (decision 18)."""

    reason = "conflicts-with-course"


@dataclass(frozen=True, slots=True)
class Transition:
    source: Stage | None  # None: no course yet (or none we know of)
    step: Step
    target: Stage
    label: str  # what happens, in the agreement's words


T = Transition
S = Stage
TRANSITIONS: tuple[Transition, ...] = (
    T(None, Step.DISCHARGE, S.AWAITING_VISITATION, "udskrevet uden henvisning endnu"),
    T(None, Step.DISCHARGE, S.SPECIALISED, "høj risiko: GOP til specialiseret genoptræning på hospital"),
    T(None, Step.DISCHARGE, S.MUNICIPAL, "henvist ved udskrivelsen (fx sternotomi): GOP/kommunehenvisning"),
    T(S.AWAITING_VISITATION, Step.VISITATION, S.SPECIALISED, "visitationssamtale: henvisning til hospital"),
    T(S.AWAITING_VISITATION, Step.VISITATION, S.MUNICIPAL, "visitationssamtale: henvisning til kommunen"),
    T(S.AWAITING_VISITATION, Step.VISITATION, S.NOT_REFERRED, "visitationssamtale: ingen henvisning"),
    T(S.NOT_REFERRED, Step.VISITATION, S.MUNICIPAL, "ny visitationssamtale: henvisning alligevel"),
    T(S.NOT_REFERRED, Step.VISITATION, S.SPECIALISED, "ny visitationssamtale: henvisning alligevel"),
    T(S.SPECIALISED, Step.DISCHARGE, S.SPECIALISED, "genindlæggelse: henvisningen i kraft opdateres"),
    T(S.MUNICIPAL, Step.DISCHARGE, S.MUNICIPAL, "genindlæggelse: henvisningen i kraft opdateres"),
    T(S.MUNICIPAL, Step.DISCHARGE, S.SPECIALISED, "genindlæggelse: ny modtager (annullering + ny henvisning)"),
    T(S.SPECIALISED, Step.DISCHARGE, S.MUNICIPAL, "genindlæggelse: ny modtager (annullering + ny henvisning)"),
    T(S.SPECIALISED, Step.VISITATION, S.SPECIALISED, "revurdering: opdatering (eller intet nyt)"),
    T(S.SPECIALISED, Step.VISITATION, S.MUNICIPAL, "revurdering: ny modtager (annullering + ny henvisning)"),
    T(S.MUNICIPAL, Step.VISITATION, S.MUNICIPAL, "revurdering: opdatering (eller intet nyt)"),
    T(S.MUNICIPAL, Step.VISITATION, S.SPECIALISED, "revurdering: ny modtager (annullering + ny henvisning)"),
    T(S.SPECIALISED, Step.VISITATION, S.NOT_REFERRED, "revurdering: henvisningen annulleres"),
    T(S.MUNICIPAL, Step.VISITATION, S.NOT_REFERRED, "revurdering: henvisningen annulleres"),
    T(S.SPECIALISED, Step.STEP_DOWN, S.MUNICIPAL, "overgår efterfølgende til kommunal genoptræning"),
    T(None, Step.GP_REFERRAL, S.MUNICIPAL, "egen læge henviser ved senere opstået behov"),
    T(S.NOT_REFERRED, Step.GP_REFERRAL, S.MUNICIPAL, "egen læge henviser ved senere opstået behov"),
    T(S.CLOSED, Step.GP_REFERRAL, S.MUNICIPAL, "egen læge henviser ved senere opstået behov"),
    T(S.MUNICIPAL, Step.GP_REFERRAL, S.MUNICIPAL, "egen læge ændrer sin henvisning (opdatering)"),
    T(S.MUNICIPAL, Step.MUNICIPAL_STATUS, S.CLOSED, "status til egen læge: ansvaret overgår til egen læge"),
    T(S.MUNICIPAL, Step.MUNICIPAL_STATUS, S.AWAITING_HOSPITAL_CLOSING, "kort status; afsluttende samtale på hospital"),
    T(S.MUNICIPAL, Step.MUNICIPAL_STATUS, S.HOSPITAL_FOLLOW_UP, "status; patienten fortsat knyttet til hospitalet"),
    T(S.AWAITING_HOSPITAL_CLOSING, Step.FOLLOW_UP_PLAN, S.CLOSED, "opfølgningsplan til egen læge: ansvaret overgår"),
    T(
        S.MUNICIPAL,
        Step.FOLLOW_UP_PLAN,
        S.MUNICIPAL,
        "opfølgningsplan før kommunens status: hotline indtil forløbet slutter",
    ),
    T(
        S.MUNICIPAL,
        Step.OUTPATIENT_DISCHARGE,
        S.MUNICIPAL,
        "afsluttet fra hospitalet under kommunalt forløb: hotline indtil det slutter",
    ),
    T(S.SPECIALISED, Step.FOLLOW_UP_PLAN, S.CLOSED, "specialiseret forløb afsluttet uden kommunalt forløb"),
    T(S.AWAITING_VISITATION, Step.DISCHARGE_UPDATE, S.AWAITING_VISITATION, "udskrivelsen ændret: stadig ikke henvist"),
    T(S.AWAITING_VISITATION, Step.DISCHARGE_UPDATE, S.SPECIALISED, "udskrivelsen ændret: henvisning til hospital"),
    T(S.AWAITING_VISITATION, Step.DISCHARGE_UPDATE, S.MUNICIPAL, "udskrivelsen ændret: henvisning til kommunen"),
    T(S.SPECIALISED, Step.DISCHARGE_UPDATE, S.SPECIALISED, "udskrivelsen ændret: opdatering (eller intet nyt)"),
    T(S.SPECIALISED, Step.DISCHARGE_UPDATE, S.MUNICIPAL, "udskrivelsen ændret: annullering + ny henvisning"),
    T(S.SPECIALISED, Step.DISCHARGE_UPDATE, S.AWAITING_VISITATION, "udskrivelsen ændret: henvisningen annulleres"),
    T(S.MUNICIPAL, Step.DISCHARGE_UPDATE, S.MUNICIPAL, "udskrivelsen ændret: opdatering (eller intet nyt)"),
    T(S.MUNICIPAL, Step.DISCHARGE_UPDATE, S.SPECIALISED, "udskrivelsen ændret: annullering + ny henvisning"),
    T(S.MUNICIPAL, Step.DISCHARGE_UPDATE, S.AWAITING_VISITATION, "udskrivelsen ændret: henvisningen annulleres"),
    T(S.AWAITING_VISITATION, Step.DISCHARGE_CANCELLATION, S.CANCELLED, "udskrivelsen annulleret: intet at annullere"),
    T(S.SPECIALISED, Step.DISCHARGE_CANCELLATION, S.CANCELLED, "udskrivelsen annulleret: henvisningen annulleres"),
    T(S.MUNICIPAL, Step.DISCHARGE_CANCELLATION, S.CANCELLED, "udskrivelsen annulleret: henvisningen annulleres"),
    T(S.CANCELLED, Step.GP_REFERRAL, S.MUNICIPAL, "egen læge henviser ved senere opstået behov"),
    T(S.HOSPITAL_FOLLOW_UP, Step.FOLLOW_UP_PLAN, S.CLOSED, "opfølgningsplan til egen læge: ansvaret overgår"),
    T(S.HOSPITAL_FOLLOW_UP, Step.OUTPATIENT_DISCHARGE, S.CLOSED, "afsluttet fra hospitalet: ansvaret til egen læge"),
    T(
        S.AWAITING_HOSPITAL_CLOSING,
        Step.OUTPATIENT_DISCHARGE,
        S.CLOSED,
        "afsluttet fra hospitalet: ansvaret til egen læge",
    ),
)
del T, S

# Stage sets the flows ask about, beside the table they belong with.
# The stages whose referral in force a later decision (a visitation, a readmission) changes rather than replaces.
REFERRAL_IN_FORCE = frozenset({Stage.SPECIALISED, Stage.MUNICIPAL})
# The stage a municipality's status moves (hands over, or waits for the hospital); at any other it only notes it.
MOVED_BY_STATUS = frozenset({Stage.MUNICIPAL})
# The stages at which the hospital holds the patient whatever a municipality's status says (its GP status says so).
HOSPITAL_HOLDS = frozenset(
    {Stage.AWAITING_VISITATION, Stage.SPECIALISED, Stage.AWAITING_HOSPITAL_CLOSING, Stage.HOSPITAL_FOLLOW_UP}
)


def targets(source: Stage | None, step: Step) -> frozenset[Stage]:
    """The stages `step` may move a course at `source` to (empty: the step cannot follow that stage)."""
    return _TARGETS.get((source, step), frozenset())


def _targets() -> Mapping[tuple[Stage | None, Step], frozenset[Stage]]:
    table: dict[tuple[Stage | None, Step], set[Stage]] = {}
    for t in TRANSITIONS:
        table.setdefault((t.source, t.step), set()).add(t.target)
    return MappingProxyType({key: frozenset(value) for key, value in table.items()})


_TARGETS = _targets()


class Change(Enum):
    """What an event means for the referral in force (the visitation talk's re-stratification)."""

    NEW = "new"  # no referral in force: a new referral
    UNCHANGED = "unchanged"  # nothing the referral says changes: nothing is sent (audited)
    UPDATE = "update"  # same receiver, something changed: an update that replaces the referral
    RE_ROUTE = "re-route"  # another receiver: a cancellation to the old one, a new referral to the new one
    CANCEL = "cancel"  # no rehabilitation after all: a cancellation to the receiver
    NONE = "none"  # neither before nor now a referral


def _substance(referral: SentReferral) -> tuple[object, ...]:
    """What a re-stratification may change: the risk group, the pathway, the elements, the closing place (the
    issue's list) and the ambulatory control the referral also states."""
    return (
        referral.risk_group,
        referral.category,
        frozenset(referral.elements),
        referral.closing_place,
        referral.ambulatory_control,
    )


def compare(in_force: SentReferral | None, proposed: SentReferral | None) -> Change:
    """What a later decision (`proposed`, None: no referral) does to the referral in force (None: none yet)."""
    if in_force is None:
        return Change.NONE if proposed is None else Change.NEW
    if proposed is None:
        return Change.CANCEL
    if (in_force.performer, in_force.receiver) != (proposed.performer, proposed.receiver):
        return Change.RE_ROUTE
    return Change.UNCHANGED if _substance(in_force) == _substance(proposed) else Change.UPDATE


def _stage_text(course: Course) -> str:
    return f"the patient's course is {course.current.value}"


def admit_visitation(course: Course | None, occurred_at: datetime) -> Course:
    """The course a visitation event belongs to. Raises OutOfOrder (naming `eventType`) when no discharge is
    known for the patient, or the course is past the point a visitation can change it (a GP's course, a
    step-down's, or after its closing status), and (naming `occurredAt`) when it happened before the discharge."""
    if course is None:
        raise OutOfOrder(
            "eventType",
            "a visitation before its discharge event: no discharge is known for this patient; "
            "replay it from the dead-letter queue once the discharge event has been processed",
        )
    if course.referrer is Referrer.GP or course.specialised_referral or Step.VISITATION not in _steps(course):
        raise OutOfOrder("eventType", f"a visitation cannot change this course: {_stage_text(course)}")
    if course.discharged_at is not None and occurred_at < course.discharged_at:
        raise OutOfOrder("occurredAt", "the visitation took place before the discharge it follows")
    return course


def admit_discharge(course: Course | None, discharged_at: datetime) -> None:
    """A discharge from before the end of the patient's last course arrived after that end: out of order
    (naming `admission.dischargedAt`); otherwise a discharge always starts a course. A cancelled course never
    ended anything: the discharge the hospital sends again after withdrawing one may be dated before the
    withdrawal."""
    ended = course is not None and course.closed_on is not None and course.current is not Stage.CANCELLED
    if ended and course is not None and course.closed_on is not None and discharged_at.date() < course.closed_on:
        raise OutOfOrder(
            "admission.dischargedAt",
            "a discharge from before the end of the patient's last course (closed "
            f"{course.closed_on.isoformat()}) arrived after it: not referred again",
        )


# The stages a municipality's status moves a course to (it arrived, whatever the course was).
STATUS_ARRIVED = frozenset({Stage.AWAITING_HOSPITAL_CLOSING, Stage.HOSPITAL_FOLLOW_UP})
# Why the referral of a course can no longer change by an update of its discharge, checked in this order.
_SETTLED: tuple[tuple[Callable[[Course], bool], str], ...] = (
    (lambda c: c.current is Stage.CANCELLED, "the discharge was cancelled"),
    (lambda c: c.current is Stage.NOT_REFERRED, "the visitation talk decided on no rehabilitation"),
    (lambda c: c.municipal_status or c.current in STATUS_ARRIVED, "the municipality's status has arrived"),
    (lambda c: not c.current.open, "the course has closed"),
    (lambda c: c.hospital_done, "the hospital has closed its part of the course"),
    (lambda c: c.specialised_referral is not None, "the patient has moved on from specialised rehabilitation"),
    (
        lambda c: c.referral is not None and c.referral.event_id != c.discharge_event,
        "a later decision (the visitation talk, or a later discharge) replaced what the discharge said",
    ),
)


def admit_discharge_update(course: Course | None, episode: str | None) -> Course:
    """The course whose discharge an update (HL7 v2 ADT^A08) changes: the patient's course for that episode
    of care, while its referral can still change (awaiting the visitation talk, or referred by this discharge
    and neither the municipality's status nor a later decision has come). Raises OutOfOrder (naming
    `episodeOfCare`) when the patient has no course for the episode (its discharge not processed yet: replay
    once it is), ReferralSettled (naming `eventType`, saying why) when the referral can no longer change."""
    if course is None or episode is None or course.episode != episode:
        raise OutOfOrder(
            "episodeOfCare",
            "an update of a discharge not known: the patient has no course for this episode of care (none, or a "
            "later discharge replaced it); replay it from the dead-letter queue once its discharge has been processed",
        )
    why = next((text for settled, text in _SETTLED if settled(course)), None)
    if why is not None or Step.DISCHARGE_UPDATE not in _steps(course):
        raise ReferralSettled("eventType", f"the referral can no longer change: {why or _stage_text(course)}")
    return course


def cancellable(course: Course | None, episode: str) -> Course | None:
    """The course a withdrawn discharge or admission (HL7 v2 ADT^A13/A11) closes as cancelled: the patient's
    course for that episode of care while it runs (awaiting the visitation talk, or with its referral in
    force); None when there is none, it is another episode's, or it has moved past where a cancellation
    changes anything (the municipality's status moved it on, it closed): then nothing is cancelled."""
    if course is None or course.episode != episode:
        return None
    return course if Step.DISCHARGE_CANCELLATION in _steps(course) else None


def admit_step_down(course: Course | None) -> Course:
    """The specialised course a step-down follows. Raises OutOfOrder (naming `eventType`) when the patient has
    none running (a step-down before the referral to the hospital, or after that course moved on)."""
    if course is None or course.current is not Stage.SPECIALISED or course.referral is None:
        what = "no course is known for this patient" if course is None else _stage_text(course)
        raise OutOfOrder("eventType", f"a step-down needs a specialised course at the hospital; {what}")
    return course


def admit_gp_referral(course: Course | None) -> None:
    """A GP's referral starts a course unless one is running, or changes the GP's own running course. Raises
    ConflictsWithCourse (naming `patient`): the hospital's pathway holds the patient, and a second referral
    beside it would be an independent one."""
    gp_course = course is not None and course.referrer is Referrer.GP and course.current is Stage.MUNICIPAL
    if course is not None and not gp_course and (course.current.open or Step.GP_REFERRAL not in _steps(course)):
        raise ConflictsWithCourse(
            "patient",
            f"{_stage_text(course)}: the hospital's pathway holds the patient, so a GP's referral would be a "
            "second referral (ask the responsible department through the hotline)",
        )


def admit_hospital_closing(step: Step, course: Course | None) -> None:
    """The hospital's own closing (its follow-up plan, or the outpatient discharge of a patient it kept) may
    come for no known course, a course already closed (the GP needs the plan all the same), or a stage the
    table lets it follow. Raises OutOfOrder (naming `eventType`) before the visitation talk has decided the
    referral, or for an outpatient discharge of a patient the hospital does not hold."""
    handed_over = course is not None and course.current in (Stage.CLOSED, Stage.NOT_REFERRED, Stage.CANCELLED)
    if course is None or handed_over or step in _steps(course):
        return
    raise OutOfOrder("eventType", f"the hospital's {step.value} cannot close this course yet: {_stage_text(course)}")


def hospital_closing_target(course: Course | None, step: Step = Step.FOLLOW_UP_PLAN) -> Stage:
    """Where the hospital's closing leaves the course: a municipal course that closes in the municipality stays
    open until the municipality's status (the agreement: "selvom en borger fortsat er i et kommunalt
    rehabiliteringsforløb, når vedkommende afsluttes fra hospitalet, så kan hotline til hospitalet fortsat
    benyttes indtil rehabiliteringsforløbet er afsluttet"); every other course closes (with the closing
    conversation at the hospital, the hospital's follow-up plan is the handover; an outpatient discharge never is
    while the municipal course runs)."""
    closes_in_municipality = course is not None and (
        step is Step.OUTPATIENT_DISCHARGE or course.referral is None or course.referral.closing_place == "municipality"
    )
    if course is not None and course.current is Stage.MUNICIPAL and closes_in_municipality:
        return Stage.MUNICIPAL
    return Stage.CLOSED


def _steps(course: Course) -> frozenset[Step]:
    return frozenset(step for source, step in _TARGETS if source is course.current)


def visitation_due(course: Course, window: timedelta, heart_failure_window: timedelta) -> datetime | None:
    """When the visitation talk of a patient discharged without a referral is late: `window` after the
    discharge, or `heart_failure_window` for a heart-failure patient ("efter en vurdering af patientens
    kliniske tilstand kan det i visse tilfælde ske, at en patient først skal visiteres og testes senere end
    efter 2 uger. Dette kan særligt gøre sig gældende i forhold til patienter med hjertesvigt"). None for a
    course not awaiting its visitation, or one whose discharge time is not known."""
    if course.current is not Stage.AWAITING_VISITATION or course.discharged_at is None:
        return None
    return course.discharged_at + (heart_failure_window if course.heart_failure else window)
