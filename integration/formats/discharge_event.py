"""The discharge event (JSON, schema `schemas/discharge-event.schema.json`) → DischargeEvent.

The schema checks the shape; this module checks what a schema cannot say clearly: real
dates, CPR birth dates and centuries (a birth after the event is refused), replacement CPR
numbers in their system's format, check digits, timestamps with a zone, in the years 1900-2199
(`domain.moment`) and in order (admission ≤ discharge, admission ≤ occurredAt, both within
FROM_ADMISSION of admission), the dates of surgery and exercise test in the same years, not before
the CPR birth date and not after occurredAt, measured values as written (Decimal, never a float; a
whole number as plain digits), and a municipal referral that asks for something.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from integration.domain.identifiers import gs1_check_digit_ok
from integration.domain.moment import fhir_date_time, read_date, read_moment
from integration.domain.records import (
    Diagnosis,
    DischargeEvent,
    ExerciseTest,
    GeneralPractitioner,
    Organisation,
    Patient,
    ReferralRequest,
    RiskGroup,
    Surgery,
)
from integration.errors import InvalidInput
from integration.formats.json_contract import JsonContract
from integration.formats.patient_number import patient_number_of

# How long after admission a discharge, or the event referring the patient (a discharge, or a visitation
# conversation weeks after it), can be: a cardiac admission and its rehabilitation referral take weeks, so
# a time a year or more away is a typing error (2099 for 2026), never a fact.
FROM_ADMISSION = timedelta(days=365)


def _date(value: str, field: str, born: date | None, event: datetime) -> date:
    """A date of the patient's care: real, in the plausible years (`moment.read_date`), not before the birth
    date the CPR number gives, and not after the event's own date as written (it reports what happened)."""
    when = read_date(value, field)
    if born is not None and when < born:
        raise InvalidInput(field, "is before the patient's birth date (from the CPR number)")
    if when > event.date():
        raise InvalidInput(field, "is after occurredAt: the event cannot report it yet")
    return when


def _measured(doc: dict[str, Any], key: str, *, whole: bool = False) -> int | Decimal | None:
    """A measured value as the sender wrote it: an int or a Decimal with its digits (`decode_json`), never a
    float. `whole`: the schema says integer, and only its plain form (`142`) is one here (not `142.0`, `1e2`)."""
    value = doc.get(key)
    if value is None or type(value) is int:
        return value
    if whole or not isinstance(value, Decimal):
        raise InvalidInput(f"exerciseTest.{key}", "must be a whole number written without a fraction or an exponent")
    return value


def _ean(value: str, field: str) -> str:
    if not gs1_check_digit_ok(value):
        raise InvalidInput(field, "EAN location number has a wrong check digit")
    return value


def _patient(doc: dict[str, Any], *moments: datetime) -> Patient:
    number = patient_number_of(doc, *moments)
    gp = doc.get("gp")
    return Patient(
        cpr=number,
        given_names=tuple(doc["givenNames"]),
        family_name=doc["familyName"],
        municipality_code=doc["municipalityCode"].lstrip("0").zfill(3),
        gp=GeneralPractitioner(sor=gp["sor"], ydernummer=gp["ydernummer"]) if gp else None,
    )


def _diagnoses(items: list[dict[str, Any]]) -> tuple[Diagnosis, ...]:
    diagnoses = tuple(Diagnosis(d["system"], d["code"], d.get("primary", False)) for d in items)
    if sum(d.primary for d in diagnoses) > 1:
        raise InvalidInput("diagnoses", "more than one primary diagnosis")
    return diagnoses


def _surgery(doc: dict[str, Any] | None, born: date | None, event: datetime) -> Surgery | None:
    if doc is None:
        return None
    when = _date(doc["date"], "surgery.date", born, event) if "date" in doc else None
    return Surgery(sternotomy=doc["sternotomy"], date=when)


def _exercise_test(doc: dict[str, Any], born: date | None, event: datetime) -> ExerciseTest | None:
    if not doc["performed"]:
        return None
    peak = _measured(doc, "peakHeartRate", whole=True)
    return ExerciseTest(
        date=_date(doc["date"], "exerciseTest.date", born, event),
        conclusion=doc["conclusion"],
        max_workload_watt=_measured(doc, "maxWorkloadWatt"),
        mets=_measured(doc, "mets"),
        peak_heart_rate=peak if isinstance(peak, int) else None,
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


def parse_discharge_event(
    document: Any, contract: JsonContract, *, received_at: datetime | None = None
) -> DischargeEvent:
    """Validate against the contract, then build the typed record (raises InvalidInput). A CPR number's birth
    date may not be after the event's times, nor after `received_at` (when the referral is made)."""
    contract.check(document)
    admission = document["admission"]
    admitted = read_moment(admission["admittedAt"], "admission.admittedAt")
    discharged = read_moment(admission["dischargedAt"], "admission.dischargedAt")
    if discharged < admitted:
        raise InvalidInput("admission.dischargedAt", "is before admission.admittedAt")
    hospital = document["hospital"]
    clinician = document.get("clinicianRiskGroup")
    occurred = read_moment(document["occurredAt"], "occurredAt")
    if occurred < admitted:
        raise InvalidInput("occurredAt", "is before admission.admittedAt")
    for moment, field in ((discharged, "admission.dischargedAt"), (occurred, "occurredAt")):
        if moment - admitted > FROM_ADMISSION:
            raise InvalidInput(field, f"is more than {FROM_ADMISSION.days} days after admission.admittedAt")
    moments = (occurred, admitted, *([received_at] if received_at else []))
    patient = _patient(document["patient"], *moments)
    born = patient.cpr.birth_date
    return DischargeEvent(
        event_id=document["eventId"].lower(),
        event_type=document["eventType"],
        occurred_at=occurred,
        hospital=Organisation(sor=hospital["sor"], ean=_ean(hospital["ean"], "hospital.ean"), name=hospital["name"]),
        patient=patient,
        admitted_at=admitted,
        discharged_at=discharged,
        diagnoses=_diagnoses(document["diagnoses"]),
        surgery=_surgery(document.get("surgery"), born, occurred),
        risk_criteria=tuple(document["riskCriteria"]),
        clinician_risk_group=RiskGroup(clinician) if clinician else None,
        exercise_test=_exercise_test(document["exerciseTest"], born, occurred),
        referral=_referral(document["referral"]),
        occurred_at_text=fhir_date_time(document["occurredAt"], occurred),
        discharged_at_text=fhir_date_time(admission["dischargedAt"], discharged),
    )
