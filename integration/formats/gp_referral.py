"""The GP's referral (JSON, schema `schemas/gp-referral.schema.json`) → DischargeEvent with event_type
"gp-referral".

The agreement (Region Nordjylland, June 2021): "Ved senere opstået behov kan egen læge henvise til kommunal
rehabilitering", and the referral to municipal rehabilitation comes "fra både hospital og almen praksis". So
a GP's referral is read into the record a hospital's event is, to go the same way to the municipality:

- `hospital` is the referring organisation, here the GP's clinic (its SOR id, its EAN when given, its name),
  and the patient's GP is that clinic (its SOR id and ydernummer);
- there is no admission: `admitted_at` = `discharged_at` = `occurred_at`, and the risk assessment is dated
  when the GP referred (both texts are occurredAt's as written);
- the referral is municipal with the elements the GP asks for: no training need of its own, no ambulatory
  control at the hospital, no surgery.

The schema checks the shape; this module checks what it cannot say clearly, with the discharge event's
readers (`formats.event_parts`): CPR birth dates (not after occurredAt nor the receipt), occurredAt in the
years 1900-2199 with a zone and not more than an hour after the referral was received, the exercise test's
date and measured values, the EAN's check digit.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from integration.domain.moment import fhir_date_time, read_moment
from integration.domain.records import DischargeEvent, GeneralPractitioner, Organisation, ReferralRequest, RiskGroup
from integration.formats.event_parts import (
    checked_ean,
    diagnoses_of,
    exercise_test_of,
    not_ahead_of_receipt,
    patient_of,
)
from integration.formats.json_contract import JsonContract

EVENT_TYPE = "gp-referral"


def _clinic(gp: dict[str, Any]) -> Organisation:
    """The referring clinic as an organisation: its EAN is optional (a clinic may have none), checked when given."""
    ean = checked_ean(gp["ean"], "gp.ean") if "ean" in gp else None
    return Organisation(sor=gp["sor"], ean=ean, name=gp["name"])


def _referral(doc: dict[str, Any]) -> ReferralRequest:
    """The GP's referral: always to the municipality, for the elements asked (the schema wants at least one)."""
    return ReferralRequest(
        decision="municipal",
        training_needed=False,
        rehab_elements=tuple(doc["rehabElements"]),
        ambulatory_control=False,
        ambulatory_control_at_end=False,
        note=doc.get("note") or None,
    )


def parse_gp_referral(document: Any, contract: JsonContract, received_at: datetime) -> DischargeEvent:
    """A decoded GP's referral (`decode_json`) → DischargeEvent (event_type "gp-referral"; see the module's
    docstring for how its fields are filled). `received_at` (aware) is when the referral came: occurredAt may
    be at most `event_parts.RECEIPT_SKEW` (an hour) after it, and a CPR birth date not after either.

    Raises InvalidInput naming the field (never its value): the contract's shape, occurredAt not a real moment
    or ahead of its receipt, a CPR number not valid or born after occurredAt, a replacement CPR number not in
    its system's format, a wrong EAN check digit, an exercise test date before the birth or after occurredAt,
    a measured value not as the schema says, more than one primary diagnosis."""
    contract.check(document)
    occurred = not_ahead_of_receipt(read_moment(document["occurredAt"], "occurredAt"), received_at, "occurredAt")
    text = fhir_date_time(document["occurredAt"], occurred)
    gp = document["gp"]
    clinic = _clinic(gp)
    patient = patient_of(
        document["patient"], GeneralPractitioner(sor=gp["sor"], ydernummer=gp["ydernummer"]), occurred, received_at
    )
    clinician = document.get("clinicianRiskGroup")
    return DischargeEvent(
        event_id=document["eventId"].lower(),
        event_type=EVENT_TYPE,
        occurred_at=occurred,
        hospital=clinic,
        patient=patient,
        admitted_at=occurred,
        discharged_at=occurred,
        diagnoses=diagnoses_of(document["diagnoses"]),
        surgery=None,
        risk_criteria=tuple(document["riskCriteria"]),
        clinician_risk_group=RiskGroup(clinician) if clinician else None,
        exercise_test=exercise_test_of(document.get("exerciseTest"), patient.cpr.birth_date, occurred),
        referral=_referral(document["referral"]),
        occurred_at_text=text,
        discharged_at_text=text,
    )
