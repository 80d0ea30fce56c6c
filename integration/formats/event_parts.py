"""The parts our referring JSON contracts share (the hospital's discharge event, the GP's referral): reading
them after the schema checked their shape.

Each reader checks what a schema cannot say clearly: real dates in the plausible years (`domain.moment`), not
before the CPR birth date and not after the event; check digits; measured values as written (Decimal, never a
float); one primary diagnosis at most; an event not from the future. Errors are InvalidInput naming the field,
never repeating its value (payloads carry CPR numbers and names).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from integration.domain.identifiers import gs1_check_digit_ok
from integration.domain.moment import read_date
from integration.domain.records import Diagnosis, ExerciseTest, GeneralPractitioner, Patient
from integration.errors import InvalidInput
from integration.formats.patient_number import patient_number_of

# How far a sender's clock may run ahead of ours: an event stamped later than this after we received it is
# a clock or typing error (the schemas' descriptions: "not more than an hour after the event was received").
# The same skew as formats.hospital_closing.RECEIPT_SKEW.
RECEIPT_SKEW = timedelta(hours=1)


def care_date(value: str, field: str, born: date | None, event: datetime) -> date:
    """A date of the patient's care: real, in the plausible years (`moment.read_date`), not before the birth
    date the CPR number gives, and not after the event's own date as written (it reports what happened)."""
    when = read_date(value, field)
    if born is not None and when < born:
        raise InvalidInput(field, "is before the patient's birth date (from the CPR number)")
    if when > event.date():
        raise InvalidInput(field, "is after occurredAt: the event cannot report it yet")
    return when


def not_ahead_of_receipt(moment: datetime, received_at: datetime, field: str) -> datetime:
    """`moment` itself unless it is more than RECEIPT_SKEW after `received_at` (InvalidInput naming `field`):
    a message cannot report what has not happened when it arrives."""
    if moment - received_at > RECEIPT_SKEW:
        raise InvalidInput(field, "is more than an hour after the event was received")
    return moment


def measured(doc: dict[str, Any], key: str, *, whole: bool = False) -> int | Decimal | None:
    """`exerciseTest.<key>` as the sender wrote it: an int or a Decimal with its digits (`decode_json`), never
    a float. `whole`: the schema says integer, and only its plain form (`142`) is one here (not `142.0`,
    `1e2`). None when absent."""
    value = doc.get(key)
    if value is None or type(value) is int:
        return value
    if whole or not isinstance(value, Decimal):
        raise InvalidInput(f"exerciseTest.{key}", "must be a whole number written without a fraction or an exponent")
    return value


def checked_ean(value: str, field: str) -> str:
    """An EAN (GLN) location number with a right GS1 check digit, else InvalidInput naming `field`."""
    if not gs1_check_digit_ok(value):
        raise InvalidInput(field, "EAN location number has a wrong check digit")
    return value


def patient_of(doc: dict[str, Any], gp: GeneralPractitioner | None, *moments: datetime) -> Patient:
    """`patient` {cpr | replacementCpr, givenNames, familyName, municipalityCode} → Patient with `gp`; the
    CPR number's birth date not after any of `moments` (`patient_number_of`). A municipality code is kept as
    three digits (`0851` → `851`)."""
    return Patient(
        cpr=patient_number_of(doc, *moments),
        given_names=tuple(doc["givenNames"]),
        family_name=doc["familyName"],
        municipality_code=doc["municipalityCode"].lstrip("0").zfill(3),
        gp=gp,
    )


def diagnoses_of(items: list[dict[str, Any]]) -> tuple[Diagnosis, ...]:
    """`diagnoses` → Diagnosis records in the sender's order; more than one primary is refused."""
    diagnoses = tuple(Diagnosis(d["system"], d["code"], d.get("primary", False)) for d in items)
    if sum(d.primary for d in diagnoses) > 1:
        raise InvalidInput("diagnoses", "more than one primary diagnosis")
    return diagnoses


def exercise_test_of(doc: dict[str, Any] | None, born: date | None, event: datetime) -> ExerciseTest | None:
    """`exerciseTest` → ExerciseTest, or None when absent or not performed. Its date is a `care_date`; the
    workload (W) and METs as written, the peak heart rate (beats/min) as plain digits (`measured`)."""
    if doc is None or not doc["performed"]:
        return None
    peak = measured(doc, "peakHeartRate", whole=True)
    return ExerciseTest(
        date=care_date(doc["date"], "exerciseTest.date", born, event),
        conclusion=doc["conclusion"],
        max_workload_watt=measured(doc, "maxWorkloadWatt"),
        mets=measured(doc, "mets"),
        peak_heart_rate=peak if isinstance(peak, int) else None,
    )
