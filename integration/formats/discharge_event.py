"""The discharge event (JSON, schema `schemas/discharge-event.schema.json`) → DischargeEvent.

The schema checks the shape; this module checks what a schema cannot say clearly: real
dates, CPR birth dates and centuries (a birth after the event is refused), replacement CPR
numbers in their system's format, check digits, timestamps with a zone, in the years 1900-2199
(`domain.moment`) and in order, and a municipal referral that asks for something.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from integration.domain.identifiers import gs1_check_digit_ok
from integration.domain.moment import read_moment
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


def _date(value: str, field: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(field, "not a real date") from None


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


def _surgery(doc: dict[str, Any] | None) -> Surgery | None:
    if doc is None:
        return None
    when = _date(doc["date"], "surgery.date") if "date" in doc else None
    return Surgery(sternotomy=doc["sternotomy"], date=when)


def _exercise_test(doc: dict[str, Any]) -> ExerciseTest | None:
    if not doc["performed"]:
        return None
    return ExerciseTest(
        date=_date(doc["date"], "exerciseTest.date"),
        conclusion=doc["conclusion"],
        max_workload_watt=doc.get("maxWorkloadWatt"),
        mets=doc.get("mets"),
        peak_heart_rate=doc.get("peakHeartRate"),
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
    moments = (occurred, admitted, *([received_at] if received_at else []))
    return DischargeEvent(
        event_id=document["eventId"].lower(),
        event_type=document["eventType"],
        occurred_at=occurred,
        hospital=Organisation(sor=hospital["sor"], ean=_ean(hospital["ean"], "hospital.ean"), name=hospital["name"]),
        patient=_patient(document["patient"], *moments),
        admitted_at=admitted,
        discharged_at=discharged,
        diagnoses=_diagnoses(document["diagnoses"]),
        surgery=_surgery(document.get("surgery")),
        risk_criteria=tuple(document["riskCriteria"]),
        clinician_risk_group=RiskGroup(clinician) if clinician else None,
        exercise_test=_exercise_test(document["exerciseTest"]),
        referral=_referral(document["referral"]),
    )
