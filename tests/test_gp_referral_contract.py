"""The GP's referral (schemas/gp-referral.schema.json) and the hospital's step-down (on the discharge-event
contract) read into the DischargeEvent a referral is made from; every bad input refused naming its field.

The agreement: "Ved senere opstået behov kan egen læge henvise til kommunal rehabilitering"; high-risk
patients start at the hospital and may afterwards move to municipal rehabilitation (the step-down).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from integration.config import PROJECT_ROOT
from integration.domain.cpr import parse_cpr
from integration.domain.records import (
    Diagnosis,
    DischargeEvent,
    ExerciseTest,
    GeneralPractitioner,
    Organisation,
    Patient,
    ReferralRequest,
    RiskGroup,
)
from integration.errors import InvalidInput
from integration.formats.discharge_event import parse_discharge_event
from integration.formats.gp_referral import parse_gp_referral
from integration.formats.json_contract import JsonContract, decode_json
from tests.conftest import GOLDEN

CPH = ZoneInfo("Europe/Copenhagen")
GP_SAMPLE = GOLDEN / "gp-referral" / "01-gp-referral.event.json"
STEP_DOWN_SAMPLE = GOLDEN / "pathway-inputs" / "step-down.event.json"
GP_REFERRAL: dict[str, Any] = json.loads(GP_SAMPLE.read_text(encoding="utf-8"))
STEP_DOWN: dict[str, Any] = json.loads(STEP_DOWN_SAMPLE.read_text(encoding="utf-8"))
DISCHARGE: dict[str, Any] = json.loads(
    (GOLDEN / "discharge" / "04-high-risk-hospital.event.json").read_text(encoding="utf-8")
)
RECEIVED = datetime(2027, 2, 1, 9, 50, tzinfo=CPH)  # five minutes after the GP's referral
AFTER_STEP_DOWN = datetime(2027, 1, 15, 10, 31, tzinfo=CPH)
BORN_2050 = "0101505678"  # 7th digit 5 and year 50: born 2050-01-01 by the century rule


def _contract(name: str) -> JsonContract:
    return JsonContract(json.loads((PROJECT_ROOT / "schemas" / name).read_text(encoding="utf-8")))


GP_CONTRACT = _contract("gp-referral.schema.json")
DISCHARGE_CONTRACT = _contract("discharge-event.schema.json")

Change = Callable[[dict[str, Any]], None]


def changed(document: dict[str, Any], *changes: Change) -> dict[str, Any]:
    copied = copy.deepcopy(document)
    for change in changes:
        change(copied)
    return copied


def setting(path: str, value: Any) -> Change:
    def change(document: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = document
        for part in parents:
            node = node[part]
        node[last] = value

    return change


def removing(path: str) -> Change:
    def change(document: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = document
        for part in parents:
            node = node[part]
        del node[last]

    return change


# -- the GP's referral ---------------------------------------------------------------------------------------

OCCURRED = datetime.fromisoformat("2027-02-01T09:45:00+01:00")
EXPECTED = DischargeEvent(
    event_id="6c1f2a8e-3b4d-4f5a-9e6b-7d8c9a0b1c2d",
    event_type="gp-referral",
    occurred_at=OCCURRED,
    hospital=Organisation("391281000016002", "5790002408519", "Frederikshavn Lægecenter"),
    patient=Patient(
        cpr=parse_cpr("2911829996"),
        given_names=("Kirsten",),
        family_name="Berggren",
        municipality_code="813",
        gp=GeneralPractitioner("391281000016002", "067890"),
    ),
    admitted_at=OCCURRED,
    discharged_at=OCCURRED,
    diagnoses=(Diagnosis("ICD-10", "I25.1", True),),
    surgery=None,
    risk_criteria=(),
    clinician_risk_group=RiskGroup.LOW,
    exercise_test=None,
    referral=ReferralRequest(
        decision="municipal",
        training_needed=False,
        rehab_elements=("physical-activity", "patient-education"),
        ambulatory_control=False,
        ambulatory_control_at_end=False,
        note="Tiltagende angina ved anstrengelse; ønsker hjælp til at komme i gang med træning.",
    ),
    occurred_at_text="2027-02-01T09:45:00+01:00",
    discharged_at_text="2027-02-01T09:45:00+01:00",
)


def test_the_sample_gp_referral_reads_into_the_expected_event() -> None:
    """From the bytes, as the queue gives them: the clinic refers and is the patient's GP; the referral is municipal."""
    event = parse_gp_referral(decode_json(GP_SAMPLE.read_bytes()), GP_CONTRACT, RECEIVED)
    assert event == EXPECTED


def test_a_clinic_without_an_ean_a_padded_municipality_code_and_a_written_time_are_read_as_such() -> None:
    document = changed(
        GP_REFERRAL,
        removing("gp.ean"),
        removing("clinicianRiskGroup"),
        removing("referral.note"),
        setting("patient.municipalityCode", "0813"),
        setting("occurredAt", "2027-02-01T08:45Z"),
        setting("riskCriteria", ["heart-failure"]),
    )
    event = parse_gp_referral(document, GP_CONTRACT, RECEIVED)
    assert event.hospital == Organisation("391281000016002", None, "Frederikshavn Lægecenter")
    assert event.patient.municipality_code == "813" and event.clinician_risk_group is None
    assert event.referral.note is None and event.risk_criteria == ("heart-failure",)
    assert event.occurred_at_text == event.discharged_at_text == "2027-02-01T08:45:00Z"
    assert event.admitted_at == event.discharged_at == event.occurred_at == OCCURRED


def test_an_exercise_test_the_gp_knows_of_keeps_its_values_as_written() -> None:
    test = {"performed": True, "date": "2027-01-20", "mets": 7.5, "peakHeartRate": 142, "conclusion": "Normal."}
    raw = json.dumps(changed(GP_REFERRAL, setting("exerciseTest", test))).encode().replace(b"7.5", b"7.50")
    event = parse_gp_referral(decode_json(raw), GP_CONTRACT, RECEIVED)
    assert event.exercise_test == ExerciseTest(date(2027, 1, 20), "Normal.", None, Decimal("7.50"), 142)


def test_a_replacement_cpr_number_names_the_patient() -> None:
    replacement = {"system": "urn:oid:1.2.208.176.1.6.1.3.179", "value": "0101900AB1"}
    document = changed(GP_REFERRAL, removing("patient.cpr"), setting("patient.replacementCpr", replacement))
    assert parse_gp_referral(document, GP_CONTRACT, RECEIVED).patient.cpr.birth_date is None


def test_a_sender_clock_up_to_an_hour_ahead_is_accepted() -> None:
    document = changed(GP_REFERRAL, setting("occurredAt", "2027-02-01T10:50:00+01:00"))  # received 09:50
    assert parse_gp_referral(document, GP_CONTRACT, RECEIVED).occurred_at.hour == 10


# (the GP's referral changed, the field named, words in the problem)
BAD_GP_REFERRALS = [
    pytest.param(changed(GP_REFERRAL, removing("gp")), "gp", "required", id="missing-gp"),
    pytest.param(
        changed(GP_REFERRAL, removing("gp.ydernummer")), "gp.ydernummer", "required", id="gp-without-ydernummer"
    ),
    pytest.param(
        changed(GP_REFERRAL, setting("gp.ydernummer", "06789")), "gp.ydernummer", "format", id="ydernummer-five-digits"
    ),
    pytest.param(
        changed(GP_REFERRAL, setting("gp.ydernummer", "06789x")), "gp.ydernummer", "format", id="ydernummer-letters"
    ),
    pytest.param(
        changed(GP_REFERRAL, setting("gp.ean", "5790002408518")), "gp.ean", "check digit", id="ean-check-digit"
    ),
    pytest.param(changed(GP_REFERRAL, setting("gp.ean", "579000240851")), "gp.ean", "format", id="ean-twelve-digits"),
    pytest.param(
        changed(GP_REFERRAL, setting("patient.gp", GP_REFERRAL["gp"])), "patient.gp", "unknown", id="gp-inside-patient"
    ),
    pytest.param(
        changed(GP_REFERRAL, setting("referral.rehabElements", [])),
        "referral.rehabElements",
        "at least 1",
        id="rehab-elements-empty",
    ),
    pytest.param(
        changed(GP_REFERRAL, removing("referral.rehabElements")),
        "referral.rehabElements",
        "required",
        id="rehab-elements-missing",
    ),
    pytest.param(
        changed(GP_REFERRAL, setting("referral.rehabElements", ["yoga"])),
        "referral.rehabElements[0]",
        "unknown value",
        id="unknown-element",
    ),
    pytest.param(
        changed(GP_REFERRAL, setting("referral.decision", "hospital")),
        "referral.decision",
        "unknown field",
        id="a-decision",
    ),
    pytest.param(
        changed(GP_REFERRAL, setting("eventType", "discharge")), "eventType", "must be 'gp-referral'", id="event-type"
    ),
    pytest.param(
        changed(GP_REFERRAL, setting("admission", DISCHARGE["admission"])),
        "admission",
        "unknown field",
        id="an-admission",
    ),
    pytest.param(
        changed(GP_REFERRAL, setting("patient.cpr", BORN_2050)),
        "patient.cpr",
        "after",
        id="cpr-born-after-the-referral",
    ),
    pytest.param(
        changed(
            GP_REFERRAL,
            setting("patient.replacementCpr", {"system": "urn:oid:1.2.208.176.1.6.1.1", "value": "0101901AB1"}),
        ),
        "patient.cpr",
        "violates the schema",
        id="cpr-and-replacement",
    ),
    pytest.param(
        changed(GP_REFERRAL, setting("occurredAt", "2027-02-01T10:51:00+01:00")),
        "occurredAt",
        "hour",
        id="occurred-beyond-an-hour-ahead",
    ),
    pytest.param(
        changed(GP_REFERRAL, setting("occurredAt", "2099-02-01T09:45:00+01:00")),
        "occurredAt",
        "hour",
        id="occurred-years-ahead",
    ),
    pytest.param(
        changed(GP_REFERRAL, setting("occurredAt", "2027-02-01T09:45:00")),
        "occurredAt",
        "format",
        id="occurred-without-a-zone",
    ),
    pytest.param(
        changed(GP_REFERRAL, setting("occurredAt", "2027-02-30T09:45:00+01:00")),
        "occurredAt",
        "not a real date",
        id="occurred-not-a-date",
    ),
    pytest.param(
        changed(GP_REFERRAL, setting("diagnoses", [{"system": "ICD-10", "code": "I25.1", "primary": True}] * 2)),
        "diagnoses",
        "more than one primary",
        id="two-primary-diagnoses",
    ),
    pytest.param(changed(GP_REFERRAL, setting("diagnoses", [])), "diagnoses", "at least 1", id="no-diagnosis"),
    pytest.param(
        changed(GP_REFERRAL, setting("exerciseTest", {"performed": True, "date": "2027-02-02", "conclusion": "x"})),
        "exerciseTest.date",
        "after occurredAt",
        id="test-after-the-referral",
    ),
    pytest.param(
        changed(GP_REFERRAL, setting("exerciseTest", {"performed": True, "date": "1981-01-02", "conclusion": "x"})),
        "exerciseTest.date",
        "birth date",
        id="test-before-the-birth",
    ),
    pytest.param(
        changed(
            GP_REFERRAL,
            setting(
                "exerciseTest",
                {"performed": True, "date": "2027-01-20", "conclusion": "x", "peakHeartRate": Decimal("142.0")},
            ),
        ),
        "exerciseTest.peakHeartRate",
        "whole number",
        id="heart-rate-with-a-fraction",
    ),
    pytest.param(
        changed(GP_REFERRAL, setting("riskCriteria", ["obesity"])),
        "riskCriteria[0]",
        "unknown value",
        id="unknown-criterion",
    ),
    pytest.param(changed(GP_REFERRAL, removing("riskCriteria")), "riskCriteria", "required", id="criteria-missing"),
]


@pytest.mark.parametrize(("document", "field", "words"), BAD_GP_REFERRALS)
def test_a_bad_gp_referral_is_refused_naming_its_field_never_the_value(document: Any, field: str, words: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_gp_referral(document, GP_CONTRACT, RECEIVED)
    assert refused.value.field == field and words in refused.value.problem, str(refused.value)
    assert "2911829996" not in str(refused.value) and BORN_2050 not in str(refused.value)


def test_a_key_twice_is_refused_where_the_referral_is_decoded_naming_it() -> None:
    raw = GP_SAMPLE.read_bytes().replace(b'"ydernummer": "067890",', b'"ydernummer": "067890", "ydernummer": "012345",')
    with pytest.raises(InvalidInput) as refused:
        decode_json(raw)
    assert refused.value.field == "gp.ydernummer" and "twice" in refused.value.problem


# -- the hospital's step-down, on the discharge-event contract --------------------------------------------------


def test_a_step_down_without_admission_takes_its_own_time_for_admission_and_discharge() -> None:
    event = parse_discharge_event(
        decode_json(STEP_DOWN_SAMPLE.read_bytes()), DISCHARGE_CONTRACT, received_at=AFTER_STEP_DOWN
    )
    stepped = datetime.fromisoformat("2027-01-15T10:30:00+01:00")
    assert event.event_type == "step-down" and event.referral.decision == "municipal"
    assert event.admitted_at == event.discharged_at == event.occurred_at == stepped
    assert event.occurred_at_text == event.discharged_at_text == "2027-01-15T10:30:00+01:00"
    assert event.hospital == Organisation("715561000016003", "5790001382452", "Aalborg UH, Hjerterehabilitering")
    assert event.patient.gp == GeneralPractitioner("485621000016007", "045678")
    assert event.exercise_test is not None and event.exercise_test.max_workload_watt == 140


def test_a_step_down_with_its_admission_reads_it_as_a_discharge_does() -> None:
    admission = {"admittedAt": "2026-11-14T09:12:00+01:00", "dischargedAt": "2026-11-20T13:30+01:00"}
    event = parse_discharge_event(changed(STEP_DOWN, setting("admission", admission)), DISCHARGE_CONTRACT)
    assert event.admitted_at == datetime.fromisoformat("2026-11-14T09:12:00+01:00")
    assert event.discharged_at_text == "2026-11-20T13:30:00+01:00"
    assert event.occurred_at_text == "2027-01-15T10:30:00+01:00"


BAD_STEP_DOWNS = [
    pytest.param(
        changed(STEP_DOWN, setting("referral.decision", "hospital")),
        "referral.decision",
        "must be 'municipal'",
        id="decision-hospital",
    ),
    pytest.param(
        changed(STEP_DOWN, setting("referral.decision", "none")),
        "referral.decision",
        "must be 'municipal'",
        id="decision-none",
    ),
    pytest.param(
        changed(
            STEP_DOWN,
            setting(
                "admission", {"admittedAt": "2027-01-16T09:00:00+01:00", "dischargedAt": "2027-01-17T09:00:00+01:00"}
            ),
        ),
        "occurredAt",
        "before admission.admittedAt",
        id="admission-after-the-step-down",
    ),
    pytest.param(
        changed(STEP_DOWN, setting("referral.trainingNeeded", False), setting("referral.rehabElements", [])),
        "referral",
        "needs trainingNeeded",
        id="municipal-asking-nothing",
    ),
    pytest.param(changed(DISCHARGE, removing("admission")), "admission", "required", id="discharge-without-admission"),
    pytest.param(
        changed(DISCHARGE, setting("eventType", "visitation"), removing("admission")),
        "admission",
        "required",
        id="visitation-without-admission",
    ),
]


@pytest.mark.parametrize(("document", "field", "words"), BAD_STEP_DOWNS)
def test_a_bad_step_down_is_refused_and_only_a_step_down_may_leave_out_its_admission(
    document: Any, field: str, words: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_discharge_event(document, DISCHARGE_CONTRACT)
    assert refused.value.field == field and words in refused.value.problem, str(refused.value)


def test_a_discharge_and_a_visitation_still_read_as_before() -> None:
    for kind in ("discharge", "visitation"):
        event = parse_discharge_event(changed(DISCHARGE, setting("eventType", kind)), DISCHARGE_CONTRACT)
        assert event.event_type == kind and event.admitted_at < event.discharged_at <= event.occurred_at
        assert event.discharged_at_text == "2026-11-20T13:30:00+01:00"
