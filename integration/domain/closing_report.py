"""The municipality's closing report as a record: what the course achieved, by the report's own words.

Pure data (no parsing): `formats.closing_report` reads the XML into it, the closing flow and the GP status
document read it. A measured value is a Decimal with the precision the report gave it (`85.00` stays
`85.00`); `sent_at_instant` is SentAt as written, already a FHIR instant.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from integration.domain.course import ClosingPlace
from integration.domain.cpr import Cpr
from integration.domain.hads import HadsResult


@dataclass(frozen=True, slots=True)
class CourseElement:
    """One element of the course (`physical-activity`, `diet`, `patient-education`, `smoking-cessation`):
    completed or not, and how many sessions when the report says."""

    code: str
    completed: bool
    sessions: int | None


@dataclass(frozen=True, slots=True)
class Measurement:
    """A measurement before and after the course (either may be absent), in its UCUM unit (`m`, `mm[Hg]`, …)."""

    code: str
    unit: str  # UCUM
    before: Decimal | None
    after: Decimal | None


@dataclass(frozen=True, slots=True)
class ClosingReport:
    """The report of schemas/closing-report.xsd, checked: the patient, the GP, the course and its effect."""

    report_id: str  # lower case
    sent_at: datetime  # to the microsecond
    sent_at_instant: str  # as written, white space collapsed: a FHIR instant with all its digits
    municipality_code: str
    municipality_sor: str
    municipality_ean: str
    municipality_name: str
    patient: Cpr
    given_names: tuple[str, ...]
    family_name: str
    gp_sor: str
    gp_ydernummer: str
    referral_ref: str | None
    course_start: date
    course_end: date
    elements: tuple[CourseElement, ...]
    closing_date: date
    closing_place: ClosingPlace  # where the closing conversation took place
    measurements: tuple[Measurement, ...]
    smoking: tuple[str, str] | None  # (before, after)
    hads_date: date | None
    hads: HadsResult | None
    summary: str
    follow_up: str | None
    hospital_retains_responsibility: bool
    author: tuple[str, str, str]  # name, role, phone
    # What the patient's course adds (the closing flow sets them): the GP referred the course and holds the
    # responsibility already; the hospital has closed its part already (its follow-up plan came first).
    gp_referred: bool = False
    hospital_done: bool = False

    @property
    def hands_over(self) -> bool:
        """Whether this status hands medical responsibility to the GP: when the closing conversation was in the
        municipality and the hospital does not keep the patient. When it was at the hospital, the hospital's
        follow-up plan hands it over; a patient who stays with the hospital is handed over when the hospital
        discharges them (the agreement, "Afslutning på hjerterehabilitering/genoptræning")."""
        if self.gp_referred:
            return False
        if self.hospital_done:
            return True
        return self.closing_place == ClosingPlace.MUNICIPALITY and not self.hospital_retains_responsibility
