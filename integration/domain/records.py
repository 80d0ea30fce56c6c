"""Typed records of inbound messages, built by integration.formats after validation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import Enum

from integration.domain.identifiers import PatientNumber


class RiskGroup(Enum):
    """The agreement's three risk groups, ordered from low to high."""

    LOW = "low"
    MODERATE = "moderate"
    HIGH = "high"

    @property
    def rank(self) -> int:
        return _RISK_RANK[self]

    def __lt__(self, other: RiskGroup) -> bool:
        return self.rank < other.rank

    def __le__(self, other: RiskGroup) -> bool:
        return self.rank <= other.rank


_RISK_RANK = {RiskGroup.LOW: 0, RiskGroup.MODERATE: 1, RiskGroup.HIGH: 2}


class Setting(Enum):
    """Where something happens: at the hospital or in the patient's municipality."""

    HOSPITAL = "hospital"
    MUNICIPALITY = "municipality"


@dataclass(frozen=True, slots=True)
class Organisation:
    sor: str
    ean: str | None
    name: str


@dataclass(frozen=True, slots=True)
class GeneralPractitioner:
    sor: str
    ydernummer: str


@dataclass(frozen=True, slots=True)
class Patient:
    cpr: PatientNumber  # the CPR number, or a replacement number (X-eCPR, D-eCPR) for a patient without one
    given_names: tuple[str, ...]
    family_name: str
    municipality_code: str
    gp: GeneralPractitioner | None


@dataclass(frozen=True, slots=True)
class Diagnosis:
    system: str
    code: str
    primary: bool


@dataclass(frozen=True, slots=True)
class Procedure:
    """A procedure of the admission: its SKS procedure code (HL7 v2 PR1-3, e.g. `KFNG05`) and day, if given."""

    code: str
    date: date | None = None


@dataclass(frozen=True, slots=True)
class Surgery:
    sternotomy: bool
    date: date | None


@dataclass(frozen=True, slots=True)
class ExerciseTest:
    date: date
    conclusion: str
    # As the sender wrote them: an int, or a Decimal keeping its digits (7.50 stays 7.50), never a float.
    max_workload_watt: int | Decimal | None
    mets: int | Decimal | None
    peak_heart_rate: int | None


@dataclass(frozen=True, slots=True)
class ReferralRequest:
    """What the clinician decided about referral, as sent by the hospital."""

    decision: str  # municipal | hospital | none
    training_needed: bool
    rehab_elements: tuple[str, ...]
    ambulatory_control: bool
    ambulatory_control_at_end: bool
    note: str | None


@dataclass(frozen=True, slots=True)
class DischargeEvent:
    event_id: str
    event_type: str  # discharge | visitation | step-down | gp-referral | discharge-update (HL7 v2 ADT^A08)
    occurred_at: datetime
    hospital: Organisation  # the referring organisation: the hospital's department, or the GP's clinic for gp-referral
    patient: Patient
    admitted_at: datetime
    discharged_at: datetime
    diagnoses: tuple[Diagnosis, ...]
    surgery: Surgery | None
    risk_criteria: tuple[str, ...]
    clinician_risk_group: RiskGroup | None
    exercise_test: ExerciseTest | None
    referral: ReferralRequest
    # occurredAt and dischargedAt as the sender wrote them (FHIR dateTime form: `moment.fhir_date_time`),
    # carried to the referral unchanged; empty when the event was built without its text (then from the datetime).
    occurred_at_text: str = ""
    discharged_at_text: str = ""
    # The hospital's identifier of the admission (episode of care) the event is about: the HL7 v2 visit number
    # (PV1-19) or the JSON contract's `episodeOfCare`; joins a later update or cancellation of this discharge,
    # and a MedCom HospitalNotification, to it. None: the sender gave none.
    episode: str | None = None
    procedures: tuple[Procedure, ...] = ()  # SKS procedure codes: for suggestions to the clinician only


@dataclass(frozen=True, slots=True)
class DischargeCancellation:
    """The hospital withdrew a discharge (HL7 v2 ADT^A13, cancel discharge) or the admission itself (ADT^A11,
    cancel admit): a referral sent for that episode is cancelled, the course it opened closed as cancelled."""

    event_id: str  # this cancellation's own id (a UUID, lower case)
    episode: str  # the episode of care whose discharge is withdrawn (`DischargeEvent.episode`)
    patient: PatientNumber
    hospital_sor: str  # the department that sent it
    occurred_at: datetime  # with its zone
    trigger: str  # the HL7 v2 trigger event that said so: A13 | A11
    # The patient as the message names them (PID-5 name, PD1 GP, the municipality): the cancellation message of a
    # referral sent needs them (medcom-core-patient requires a name). None: not given.
    person: Patient | None = None
