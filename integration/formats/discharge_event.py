"""The discharge event (JSON, schema `schemas/discharge-event.schema.json`) → DischargeEvent.

The schema checks the shape; this module checks what a schema cannot say clearly: real dates, CPR birth
dates and centuries (a birth after the event is refused), replacement CPR numbers in their system's format,
check digits, timestamps with a zone, in the years 1900-2199 (`domain.moment`) and in order (admission ≤
discharge, admission ≤ occurredAt, both within FROM_ADMISSION of admission), the dates of surgery and
exercise test in the same years, not before the CPR birth date and not after occurredAt, measured values as
written (Decimal, never a float; a whole number as plain digits), and a municipal referral that asks for
something. The readers shared with the GP's referral are `formats.event_parts`'.

Four kinds of event come on this contract (`eventType`): a discharge, a visitation talk, a step-down
(the agreement: high-risk patients start at the hospital and "may afterwards move to municipal
rehabilitation"). A step-down is sent by the hospital's rehabilitation unit after the specialised course,
long after the admission: its `admission` is optional, and without it the step-down's own time stands for
both (`admitted_at` = `discharged_at` = `occurred_at`, the risk assessment dated when the step-down was
decided). The schema allows a step-down only a municipal referral. The fourth, `discharge-update`, changes a
discharge already sent (HL7 v2 ADT^A08 after ADT^A03): it names the episode (`episodeOfCare`) whose discharge
it changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from integration.domain.moment import fhir_date_time, read_moment
from integration.domain.records import (
    DischargeEvent,
    GeneralPractitioner,
    Organisation,
    Patient,
    Procedure,
    ReferralRequest,
    RiskGroup,
    Surgery,
)
from integration.errors import InvalidInput
from integration.formats.event_parts import (
    care_date,
    checked_ean,
    diagnoses_of,
    exercise_test_of,
    not_ahead_of_receipt,
    patient_of,
)
from integration.formats.json_contract import JsonContract

# How long after admission a discharge, or the event referring the patient (a discharge, or a visitation
# conversation weeks after it), can be: a cardiac admission and its rehabilitation referral take weeks, so
# a time a year or more away is a typing error (2099 for 2026), never a fact.
FROM_ADMISSION = timedelta(days=365)


def _patient(doc: dict[str, Any], *moments: datetime) -> Patient:
    gp = doc.get("gp")
    return patient_of(doc, GeneralPractitioner(sor=gp["sor"], ydernummer=gp["ydernummer"]) if gp else None, *moments)


def _surgery(doc: dict[str, Any] | None, born: date | None, event: datetime) -> Surgery | None:
    if doc is None:
        return None
    when = care_date(doc["date"], "surgery.date", born, event) if "date" in doc else None
    return Surgery(sternotomy=doc["sternotomy"], date=when)


def _procedures(items: list[dict[str, Any]], born: date | None, event: datetime) -> tuple[Procedure, ...]:
    return tuple(
        Procedure(
            item["code"],
            care_date(item["date"], f"procedures[{i}].date", born, event) if "date" in item else None,
        )
        for i, item in enumerate(items)
    )


def _referral(doc: dict[str, Any]) -> ReferralRequest:
    request = ReferralRequest(
        decision=doc["decision"],
        training_needed=doc["trainingNeeded"],
        rehab_elements=tuple(doc["rehabElements"]),
        ambulatory_control=doc["ambulatoryControl"],
        ambulatory_control_at_end=doc["ambulatoryControlAtEndOfRehab"],
        note=doc.get("note") or None,
    )
    if request.decision == "municipal" and not (request.training_needed or request.rehab_elements):
        raise InvalidInput("referral", "a municipal referral needs trainingNeeded or at least one rehabElement")
    if request.ambulatory_control_at_end and not request.ambulatory_control:
        raise InvalidInput("referral.ambulatoryControlAtEndOfRehab", "is true but referral.ambulatoryControl is false")
    return request


@dataclass(frozen=True, slots=True)
class _Times:
    occurred: datetime
    admitted: datetime
    discharged: datetime
    occurred_text: str  # occurredAt and dischargedAt as FHIR dateTimes, as written (`moment.fhir_date_time`)
    discharged_text: str


def _times(document: dict[str, Any]) -> _Times:
    """The event's moments, read and checked in order (admission ≤ discharge, admission ≤ occurredAt, both
    within FROM_ADMISSION); without `admission` (a step-down may leave it out) occurredAt stands for all."""
    admission = document.get("admission")
    if admission is None:
        occurred = read_moment(document["occurredAt"], "occurredAt")
        text = fhir_date_time(document["occurredAt"], occurred)
        return _Times(occurred, occurred, occurred, text, text)
    admitted = read_moment(admission["admittedAt"], "admission.admittedAt")
    discharged = read_moment(admission["dischargedAt"], "admission.dischargedAt")
    if discharged < admitted:
        raise InvalidInput("admission.dischargedAt", "is before admission.admittedAt")
    occurred = read_moment(document["occurredAt"], "occurredAt")
    if occurred < admitted:
        raise InvalidInput("occurredAt", "is before admission.admittedAt")
    for moment, field in ((discharged, "admission.dischargedAt"), (occurred, "occurredAt")):
        if moment - admitted > FROM_ADMISSION:
            raise InvalidInput(field, f"is more than {FROM_ADMISSION.days} days after admission.admittedAt")
    return _Times(
        occurred,
        admitted,
        discharged,
        fhir_date_time(document["occurredAt"], occurred),
        fhir_date_time(admission["dischargedAt"], discharged),
    )


def parse_discharge_event(
    document: Any, contract: JsonContract, *, received_at: datetime | None = None
) -> DischargeEvent:
    """Validate against the contract, then build the typed record (raises InvalidInput naming the field). A
    CPR number's birth date may not be after the event's times, nor after `received_at` (when the referral
    is made), and occurredAt and dischargedAt not more than an hour after it (a clock or typing error: a message
    cannot report what had not happened when it arrived). A step-down without `admission` has admitted_at =
    discharged_at = occurred_at."""
    contract.check(document)
    times = _times(document)
    occurred = times.occurred
    hospital = document["hospital"]
    clinician = document.get("clinicianRiskGroup")
    moments = (occurred, times.admitted, *([received_at] if received_at else []))
    patient = _patient(document["patient"], *moments)
    if received_at is not None:  # the schema's promise: not more than an hour after the event was received
        not_ahead_of_receipt(times.occurred, received_at, "occurredAt")
        not_ahead_of_receipt(times.discharged, received_at, "admission.dischargedAt")
    born = patient.cpr.birth_date
    return DischargeEvent(
        event_id=document["eventId"].lower(),
        event_type=document["eventType"],
        occurred_at=occurred,
        hospital=Organisation(
            sor=hospital["sor"], ean=checked_ean(hospital["ean"], "hospital.ean"), name=hospital["name"]
        ),
        patient=patient,
        admitted_at=times.admitted,
        discharged_at=times.discharged,
        diagnoses=diagnoses_of(document["diagnoses"]),
        surgery=_surgery(document.get("surgery"), born, occurred),
        risk_criteria=tuple(document["riskCriteria"]),
        clinician_risk_group=RiskGroup(clinician) if clinician else None,
        exercise_test=exercise_test_of(document["exerciseTest"], born, occurred),
        referral=_referral(document["referral"]),
        occurred_at_text=times.occurred_text,
        discharged_at_text=times.discharged_text,
        episode=document.get("episodeOfCare"),
        procedures=_procedures(document.get("procedures", ()), born, occurred),
    )
