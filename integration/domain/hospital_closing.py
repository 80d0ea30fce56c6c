"""The hospital's own closing of a cardiac rehabilitation course, as a record: the follow-up plan for the GP.

Pure data (no parsing): `formats.hospital_closing` reads the JSON event (schemas/hospital-closing.schema.json)
into it; `flows.hospital_closing` builds the GP's document and CareCommunication from it.

The agreement (Region Nordjylland, June 2021, "Afslutning på hjerterehabilitering og opfølgningsplan til
almen praksis") names two such closings, and in both the medical responsibility passes to the GP:

- after specialised rehabilitation at a hospital with no municipal course after it, or after a municipal
  course whose closing conversation was at the hospital, "afholder hospitalet den afsluttende samtale, og
  sender efterfølgende en opfølgningsplan til patientens egen læge" (`FOLLOW_UP_PLAN`);
- a patient (often with heart failure) who stayed attached to the hospital after the municipal course:
  "Når patienten på et senere tidspunkt afsluttes fra hospitalet, overgives behandleransvaret herfra til
  egen læge" (`OUTPATIENT_DISCHARGE`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from types import MappingProxyType

from integration.domain.course import Responsible
from integration.domain.records import GeneralPractitioner, Organisation, Patient


class HospitalClosingKind(StrEnum):
    """Which of the agreement's two hospital closings an event reports (its `eventType`)."""

    FOLLOW_UP_PLAN = "follow-up-plan"  # the closing conversation was at the hospital; its opfølgningsplan
    OUTPATIENT_DISCHARGE = "outpatient-discharge"  # discharged from the hospital's outpatient care at last


class Handover(StrEnum):
    """What the hospital's closing does to the medical responsibility, by where the patient's course stands
    (`course_sequence.hospital_closing_target`): hands it to the GP now; hands it over with the municipality's
    status, since the municipal course still runs and the hospital's hotline stays open until it ends (the
    agreement: "selvom en borger fortsat er i et kommunalt rehabiliteringsforløb, når vedkommende afsluttes
    fra hospitalet, så kan hotline til hospitalet fortsat benyttes indtil rehabiliteringsforløbet er
    afsluttet"); or nothing, since the GP holds it already (a course the GP referred, or one handed over)."""

    NOW = "now"
    AT_MUNICIPAL_STATUS = "at-municipal-status"
    ALREADY_GP = "already-gp"
    EARLIER_COURSE = "earlier-course"  # it closes a course before the patient's present one, which goes on


# Who holds the medical responsibility after the closing, by what it does to it.
RESPONSIBLE_AFTER: Mapping[Handover, Responsible] = MappingProxyType(
    {
        Handover.NOW: Responsible.GP,
        Handover.AT_MUNICIPAL_STATUS: Responsible.HOSPITAL,
        Handover.ALREADY_GP: Responsible.GP,
        Handover.EARLIER_COURSE: Responsible.HOSPITAL,
    }
)


@dataclass(frozen=True, slots=True)
class HospitalClosing:
    """A hospital department closes a patient's course and sends its follow-up plan to the patient's GP.

    `event_id` is lower case; `occurred_at` has a zone, `occurred_at_text` is occurredAt as the sender wrote
    it in FHIR dateTime form (`moment.fhir_date_time`: seconds added when left out); `hospital` is the
    department that closes (SOR, EAN, name); `patient.gp` is required (ValueError otherwise: the plan has
    no receiver without it); `closing_date` is the day of the closing conversation or of the outpatient
    discharge; `plan` is the follow-up plan's text; `author` is (name, role, phone)."""

    event_id: str
    kind: HospitalClosingKind
    occurred_at: datetime
    occurred_at_text: str
    hospital: Organisation
    patient: Patient
    closing_date: date
    plan: str
    author: tuple[str, str, str]
    handover: Handover = Handover.NOW  # set by the flow from the patient's course

    def __post_init__(self) -> None:
        if self.patient.gp is None:
            raise ValueError("a hospital closing names the patient's GP: the follow-up plan goes there")

    @property
    def gp(self) -> GeneralPractitioner:
        """The patient's GP, who receives the plan (always set: see `__post_init__`)."""
        gp = self.patient.gp
        if gp is None:  # pragma: no cover - refused when the record was made
            raise ValueError("a hospital closing names the patient's GP")
        return gp

    @property
    def responsible_after(self) -> Responsible:
        """Who holds the medical responsibility once the closing is sent (`RESPONSIBLE_AFTER`)."""
        return RESPONSIBLE_AFTER[self.handover]

    @property
    def responsibility_transferred(self) -> bool:
        """Whether this closing itself hands the medical responsibility from the hospital to the GP."""
        return self.handover is Handover.NOW
