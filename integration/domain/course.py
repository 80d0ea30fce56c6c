"""What the flows remember between messages: each patient's rehabilitation course, open hotline
requests, the MedCom messages we received (with the ack each got) and the acks our own messages got."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any, Protocol

from integration.domain.missed_referral import DischargeSeen, WatchedEpisode, WatchKey


class _Value(StrEnum):
    """A state named by its text: stored, logged and shown (repr too, so a record reads as it always did) as
    the plain string, compared equal to it."""

    def __repr__(self) -> str:
        return repr(self.value)


class Responsible(_Value):
    """Who holds the medical responsibility for a patient's rehabilitation (the agreement's handover: the
    hospital until the municipality's closing report hands it to the GP, unless the hospital retains it)."""

    HOSPITAL = "hospital"
    GP = "gp"

    @classmethod
    def by_default(cls, course_open: bool) -> Responsible:
        """Who holds it when nothing else is said: the hospital while the course is open, the GP after it
        (the agreement: the hospital keeps medical responsibility during the municipal course; the closing
        status hands it to the GP)."""
        return cls.HOSPITAL if course_open else cls.GP


class ClosingPlace(_Value):
    """Where the closing conversation of a course took place (the closing report's `ClosingConversation/place`)."""

    MUNICIPALITY = "municipality"
    HOSPITAL = "hospital"


class OutboundState(_Value):
    """Where one of our MedCom messages stands in MedCom's reliable messaging: waiting for its ack, acked ok,
    acked with an error, or given up on after the last resend. The store keeps the value as text."""

    AWAITING = "awaiting"
    ACKNOWLEDGED = "acknowledged"
    FAILED = "failed"
    GAVE_UP = "gave-up"
    STOPPED = "stopped"  # awaiting its ack when the patient died (HospitalNotification MORS): never resent

    @classmethod
    def needing_a_person(cls) -> tuple[OutboundState, ...]:
        """The states nothing automatic will settle: no ack after the last resend, or an error ack (MedCom's
        reliable messaging ends there; a person must follow up), or stopped because the patient died (a
        person decides what the receiver must be told)."""
        return (cls.GAVE_UP, cls.FAILED, cls.STOPPED)


class Stage(_Value):
    """Where a patient's course stands on the agreement's pathway (the figure of the agreement, June 2021;
    `domain/course_sequence.py` holds the transitions between them, README: the pathway)."""

    AWAITING_VISITATION = "awaiting-visitation"  # discharged without a referral; the visitation talk decides
    SPECIALISED = "specialised"  # specialised rehabilitation at the hospital (a GOP to the hospital's unit)
    MUNICIPAL = "municipal"  # a municipal course: a general GOP and/or a municipal rehabilitation referral
    AWAITING_HOSPITAL_CLOSING = "awaiting-hospital-closing"  # the municipality's status came; the hospital closes
    HOSPITAL_FOLLOW_UP = "hospital-follow-up"  # the municipal course ended; the patient stays with the hospital
    CLOSED = "closed"  # the course is over and medical responsibility is the GP's
    NOT_REFERRED = "not-referred"  # the visitation talk decided on no rehabilitation (or cancelled the referral)
    CANCELLED = "cancelled"  # the hospital withdrew the discharge or admission (HL7 v2 ADT^A13/A11): closed

    @property
    def open(self) -> bool:
        """Whether a course at this stage is still running: from discharge until the municipal course (or the
        specialised one) has closed; `Course.open` as stored before stages existed. A patient who stays with the
        hospital after the municipal course (`hospital-follow-up`) has a closed course, the hospital responsible."""
        return self in (Stage.AWAITING_VISITATION, Stage.SPECIALISED, Stage.MUNICIPAL, Stage.AWAITING_HOSPITAL_CLOSING)


class Referrer(_Value):
    """Who referred the patient: the hospital (at discharge, the visitation talk or a step-down) or the
    patient's own GP ("ved senere opstået behov kan egen læge henvise til kommunal rehabilitering")."""

    HOSPITAL = "hospital"
    GP = "gp"


@dataclass(frozen=True, slots=True)
class SentReferral:
    """The referral in force on a course: what the last referral message we sent for it said, so that a later
    event can tell what it changes (`course_sequence.compare`)."""

    service_request: str  # the ServiceRequest's identifier value (`urn:uuid:<event id>`), what `replaces` names
    event_id: str  # the event it was built from
    performer: str  # `Setting` value: hospital | municipality
    receiver: str  # the receiver's SOR
    category: str  # gop-specialised | gop-general | municipal-rehabilitation
    risk_group: str  # `RiskGroup` value
    elements: tuple[str, ...]  # rehabilitation elements, as sent
    closing_place: str  # `Setting` value: where the closing conversation takes place
    ambulatory_control: bool
    municipality_code: str = ""  # the receiving municipality's code (a municipal referral)


@dataclass(frozen=True, slots=True)
class Course:
    """A patient's rehabilitation course: opened at discharge (or by a GP's referral), moved by each event of
    the pathway (`course_sequence`), closed when medical responsibility is handed to the GP.

    The five first fields are all a store written before stages existed holds; `stage` None reads as
    `municipal` for an open course and `closed` for a closed one (`current`)."""

    patient: str  # CPR
    referring_department: str  # SOR of the hospital department holding responsibility; "" for a GP's course
    municipality_code: str
    open: bool
    responsible: Responsible
    stage: Stage | None = None
    referral: SentReferral | None = None  # the referral in force, None before one was sent
    referrer: Referrer = Referrer.HOSPITAL
    gp: str | None = None  # the responsible GP's ydernummer, on a course the GP referred
    discharge_event: str | None = None  # the event id of the discharge that opened the course
    discharged_at: datetime | None = None  # with its zone
    heart_failure: bool = False  # visited later than others (agreement: "særligt ... patienter med hjertesvigt")
    specialised_referral: str | None = None  # a step-down's course: the specialised referral it follows
    municipal_status: bool = False  # the municipality's closing status has arrived
    hospital_done: bool = False  # the hospital has closed its part (follow-up plan or outpatient discharge)
    closed_on: date | None = None  # the day the course closed (closing date or event day)
    # From MedCom HospitalNotifications (flows/hospital_notification.py):
    deceased: bool = False  # the hospital notified the patient's death (MORS): closed, nothing more is sent
    admitted_to: str | None = None  # SOR of the unit the patient is admitted to during the course (paused)
    admitted_since: datetime | None = None  # the admission's Encounter.period.start, with its zone
    admission_episode: str | None = None  # the admission's episodeOfCare id: its discharge clears the pause

    @property
    def paused(self) -> bool:
        """An open course whose patient is back in hospital: the municipal course waits (the board shows it)."""
        return self.current.open and self.admitted_to is not None

    # The hospital's episode of care (HL7 v2 PV1-19, the contract's `episodeOfCare`) of the discharge that opened
    # the course or last changed it: what a discharge's update (ADT^A08) or cancellation (ADT^A13/A11) names.
    episode: str | None = None
    # When the hospital's last visitation talk that decided the referral took place (its `occurredAt`, zoned): an
    # older one arriving after it (competing consumers take them in any order) decides nothing (decision 31).
    decided_at: datetime | None = None

    @property
    def current(self) -> Stage:
        """The stage, for a course stored before stages existed too."""
        if self.stage is not None:
            return self.stage
        return Stage.MUNICIPAL if self.open else Stage.CLOSED


@dataclass(frozen=True, slots=True)
class OpenRequest:
    """An advice request waiting for the department's answer."""

    request_id: str
    thread_id: str | None  # a CareCommunication's thread; answers come back in it
    requester: str  # the sender's SOR or ydernummer
    department: str | None  # SOR of the department it went to, None for triage
    patient: str


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """One transmission of a MedCom message we received, and the ack it was first answered with."""

    header_id: str
    bundle_id: str
    code: str | None = None  # the ack's response code; None when this transmission added no new ack
    ack: Mapping[str, Any] | None = None
    content: str | None = None  # `acknowledging.content_digest` of the message; None: not known


@dataclass(frozen=True, slots=True)
class EarlierMessage:
    """What we know of a MessageHeader id seen before: its transmissions, the first ack, and the digests of
    the content its transmissions carried (`acknowledging.content_digest`; empty when none is known: those
    received before the store kept them)."""

    bundle_ids: frozenset[str]
    code: str | None
    ack: Mapping[str, Any] | None
    contents: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class AckReceived:
    """An ack for one of our own messages."""

    header_id: str  # our MessageHeader id, the ack's response.identifier
    code: str
    issues: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class Addressee:
    """One end of a MedCom message as its MessageHeader names it: the Organization's SOR id and EAN (GLN) id,
    and the endpoint (`destination.endpoint` for a receiver, `source.endpoint` for a sender); None where the
    message names none."""

    sor: str | None
    ean: str | None
    endpoint: str | None


@dataclass(frozen=True, slots=True)
class OutboundStatus:
    header_id: str
    state: OutboundState
    resends: int
    patient: str | None = None
    # Whom we sent it to, as its MessageHeader named them: the only party that may acknowledge it (None: our
    # record names no receiver with a SOR id and an endpoint, so no ack can be matched to it)
    receiver: Addressee | None = None


@dataclass(frozen=True, slots=True)
class StateChanges:
    """What a flow asks to be recorded, in the same transaction as the message's audit records."""

    courses: tuple[Course, ...] = ()
    opened: tuple[OpenRequest, ...] = ()
    answered: tuple[str, ...] = ()  # thread ids whose request the department has answered
    received: tuple[ReceivedMessage, ...] = ()
    acks: tuple[AckReceived, ...] = ()
    stopped: tuple[str, ...] = ()  # patients (course keys) who died: their messages awaiting an ack are stopped
    # A possible missed referral (domain/missed_referral.py): discharges home to watch, the patients' episodes
    # whose discharge was cancelled (AN_SLHJ), and the hospital's discharge events that may settle a watched one.
    # A patient in `stopped` (dead) has every open watch withdrawn too: a dead patient is no missed referral.
    watched: tuple[WatchedEpisode, ...] = ()
    unwatched: tuple[WatchKey, ...] = ()
    discharges: tuple[DischargeSeen, ...] = ()

    def __add__(self, other: StateChanges) -> StateChanges:
        return StateChanges(
            self.courses + other.courses,
            self.opened + other.opened,
            self.answered + other.answered,
            self.received + other.received,
            self.acks + other.acks,
            self.stopped + other.stopped,
            self.watched + other.watched,
            self.unwatched + other.unwatched,
            self.discharges + other.discharges,
        )


class State(Protocol):
    def course(self, patient: str) -> Course | None: ...

    def requester(self, thread_id: str) -> str | None: ...

    def received(self, header_id: str) -> EarlierMessage | None: ...

    def bundle_header(self, bundle_id: str) -> str | None: ...

    def outbound(self, header_id: str) -> OutboundStatus | None: ...


@dataclass(frozen=True, slots=True)
class FixedState:
    """State given up front (tests, `integration transform --state`)."""

    courses: Mapping[str, Course] = field(default_factory=dict)
    threads: Mapping[str, str] = field(default_factory=dict)
    messages: Mapping[str, EarlierMessage] = field(default_factory=dict)
    sent: Mapping[str, OutboundStatus] = field(default_factory=dict)

    def course(self, patient: str) -> Course | None:
        return self.courses.get(patient)

    def courses_at(self, stages: Collection[Stage]) -> list[Course]:
        """The courses at one of these stages (`Course.current`), ordered by patient: the store's listing."""
        return [self.courses[p] for p in sorted(self.courses) if self.courses[p].current in stages]

    def requester(self, thread_id: str) -> str | None:
        return self.threads.get(thread_id)

    def received(self, header_id: str) -> EarlierMessage | None:
        return self.messages.get(header_id)

    def bundle_header(self, bundle_id: str) -> str | None:
        return next((h for h, m in self.messages.items() if bundle_id in m.bundle_ids), None)

    def outbound(self, header_id: str) -> OutboundStatus | None:
        return self.sent.get(header_id)


NO_STATE = FixedState()
