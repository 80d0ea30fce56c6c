"""The hospital's closing event (JSON, schema `schemas/hospital-closing.schema.json`) → HospitalClosing.

The schema checks the shape; this module checks what a schema cannot say clearly, as the discharge event's
reader does (`formats.discharge_event`): occurredAt with a zone, in the years 1900-2199 (`domain.moment`) and
not more than RECEIPT_SKEW after the event was received; the CPR number's birth date not after occurredAt
nor the receipt (a replacement number in its system's format); closingDate a real date in the same years,
not before the CPR birth date and not after occurredAt's date; the hospital's EAN check digit. Errors are
InvalidInput naming the field, never a value.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from integration.domain.hospital_closing import HospitalClosing, HospitalClosingKind
from integration.domain.identifiers import gs1_check_digit_ok
from integration.domain.moment import fhir_date_time, read_date, read_moment
from integration.domain.records import GeneralPractitioner, Organisation, Patient
from integration.errors import InvalidInput
from integration.formats.json_contract import JsonContract
from integration.formats.patient_number import patient_number_of

SCHEMA_FILE = "hospital-closing.schema.json"  # in Settings.schemas_dir: `bootstrap.load_contract(dir, SCHEMA_FILE)`
EVENT_TYPES = frozenset(kind.value for kind in HospitalClosingKind)  # `eventType`s that make a hospital closing
# How far a sender's clock may run ahead of ours: an occurredAt later than the receipt by more is a clock or
# typing error, never a plan made in the future.
RECEIPT_SKEW = timedelta(hours=1)


def is_hospital_closing(document: Any) -> bool:
    """Whether a decoded JSON value says it is a hospital closing (its `eventType`), before any check."""
    return isinstance(document, dict) and document.get("eventType") in EVENT_TYPES


def _occurred(text: str, received_at: datetime) -> datetime:
    occurred = read_moment(text, "occurredAt")
    if occurred - received_at > RECEIPT_SKEW:
        raise InvalidInput("occurredAt", "is more than an hour after the event was received")
    return occurred


def _ean(value: str, field: str) -> str:
    if not gs1_check_digit_ok(value):
        raise InvalidInput(field, "EAN location number has a wrong check digit")
    return value


def _patient(doc: dict[str, Any], *moments: datetime) -> Patient:
    """The patient (CPR number or replacement number, `patient_number_of`) with the GP the schema requires."""
    gp = doc["gp"]
    return Patient(
        cpr=patient_number_of(doc, *moments),
        given_names=tuple(doc["givenNames"]),
        family_name=doc["familyName"],
        municipality_code=doc["municipalityCode"].lstrip("0").zfill(3),
        gp=GeneralPractitioner(sor=gp["sor"], ydernummer=gp["ydernummer"]),
    )


def _closing_date(text: str, born: date | None, occurred: datetime) -> date:
    """closingDate: real, in the plausible years, not before the CPR birth date, not after occurredAt's date
    as written (the plan reports a closing that has happened)."""
    when = read_date(text, "closingDate")
    if born is not None and when < born:
        raise InvalidInput("closingDate", "is before the patient's birth date (from the CPR number)")
    if when > occurred.date():
        raise InvalidInput("closingDate", "is after occurredAt: the closing cannot have happened yet")
    return when


def parse_hospital_closing(document: Any, contract: JsonContract, received_at: datetime) -> HospitalClosing:
    """Check `document` (a decoded JSON value, `json_contract.decode_json`) against `contract` (the compiled
    hospital-closing schema), then build the record. `received_at` (aware) is when the event came.

    Raises InvalidInput naming the field (never its value): the schema's first violation; occurredAt not a
    moment with a zone in 1900-2199, or more than RECEIPT_SKEW after `received_at`; patient.cpr with a
    birth date after occurredAt or `received_at`, or patient.replacementCpr.value out of its format;
    closingDate not a real date, before the birth date or after occurredAt's date; hospital.ean with a
    wrong GS1 check digit."""
    contract.check(document)
    occurred = _occurred(document["occurredAt"], received_at)
    patient = _patient(document["patient"], occurred, received_at)
    hospital = document["hospital"]
    author = document["author"]
    return HospitalClosing(
        event_id=document["eventId"].lower(),
        kind=HospitalClosingKind(document["eventType"]),
        occurred_at=occurred,
        occurred_at_text=fhir_date_time(document["occurredAt"], occurred),
        hospital=Organisation(sor=hospital["sor"], ean=_ean(hospital["ean"], "hospital.ean"), name=hospital["name"]),
        patient=patient,
        closing_date=_closing_date(document["closingDate"], patient.cpr.birth_date, occurred),
        plan=document["plan"],
        author=(author["name"], author["role"], author["phone"]),
    )
