"""Bad input gets one clear error naming the field and the problem, never a crash, never a CPR number."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from integration.errors import ConfigurationError, InvalidInput, UnknownMessageKind
from integration.flows.dispatch import Pipeline, transform
from tests.conftest import FIXED_NOW, GOLDEN

EXAMPLE = json.loads((GOLDEN / "discharge" / "01-municipal-gop-general-sternotomy.event.json").read_text())
CPR = EXAMPLE["patient"]["cpr"]


def mutated(change) -> bytes:
    event = copy.deepcopy(EXAMPLE)
    change(event)
    return json.dumps(event).encode()


def setter(path: str, value: Any):
    def change(event: dict) -> None:
        *parents, last = path.split(".")
        node = event
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[last] = value

    return change


def remover(path: str):
    def change(event: dict) -> None:
        *parents, last = path.split(".")
        node = event
        for part in parents:
            node = node[part]
        del node[last]

    return change


# (id, raw payload, field expected in the message, words expected in the problem)
INVALID = [
    ("malformed-json", b'{"schemaVersion": "1", "eventType": "discharge",', "", "malformed JSON"),
    ("trailing-garbage", json.dumps(EXAMPLE).encode() + b"}", "", "malformed JSON"),
    ("not-an-object", b"[1, 2, 3]", "", "not a message this service accepts"),
    (
        "non-utf8",
        json.dumps({**EXAMPLE, "hospital": {**EXAMPLE["hospital"], "name": "Hjørring"}}, ensure_ascii=False).encode(
            "latin-1"
        ),
        "",
        "not valid UTF-8",
    ),
    ("wrong-type-number-for-string", mutated(setter("patient.familyName", 42)), "patient.familyName", "wrong type"),
    (
        "wrong-type-string-for-bool",
        mutated(setter("referral.trainingNeeded", "yes")),
        "referral.trainingNeeded",
        "wrong type",
    ),
    ("wrong-type-criteria-not-list", mutated(setter("riskCriteria", "heart-failure")), "riskCriteria", "wrong type"),
    (
        "unknown-criterion",
        mutated(setter("riskCriteria", ["heart-failure", "obesity"])),
        "riskCriteria[1]",
        "unknown value 'obesity'",
    ),
    (
        "duplicate-criterion",
        mutated(setter("riskCriteria", ["heart-failure", "heart-failure"])),
        "riskCriteria",
        "repeats",
    ),
    (
        "unknown-element",
        mutated(setter("referral.rehabElements", ["yoga"])),
        "referral.rehabElements[0]",
        "unknown value",
    ),
    ("unknown-risk-group", mutated(setter("clinicianRiskGroup", "extreme")), "clinicianRiskGroup", "unknown value"),
    ("unknown-field", mutated(setter("patient.nickname", "Nan")), "patient.nickname", "unknown field"),
    ("cpr-impossible-day", mutated(setter("patient.cpr", "3212489996")), "patient.cpr", "not a real date"),
    ("cpr-impossible-month", mutated(setter("patient.cpr", "2513489996")), "patient.cpr", "not a real date"),
    ("cpr-february-30", mutated(setter("patient.cpr", "3002489996")), "patient.cpr", "not a real date"),
    ("cpr-too-short", mutated(setter("patient.cpr", "251248999")), "patient.cpr", "required format"),
    ("cpr-with-hyphen", mutated(setter("patient.cpr", "251248-9996")), "patient.cpr", "required format"),
    (
        "unknown-municipality",
        mutated(setter("patient.municipalityCode", "999")),
        "patient.municipalityCode",
        "unknown municipality code '999'",
    ),
    (
        "ertholmene-is-not-a-municipality",
        mutated(setter("patient.municipalityCode", "411")),
        "patient.municipalityCode",
        "unknown municipality",
    ),
    ("missing-patient", mutated(remover("patient")), "patient", "required field is missing"),
    ("missing-cpr", mutated(remover("patient.cpr")), "patient.cpr", "required field is missing"),
    ("missing-event-id", mutated(remover("eventId")), "eventId", "required field is missing"),
    (
        "missing-referral-decision",
        mutated(remover("referral.decision")),
        "referral.decision",
        "required field is missing",
    ),
    (
        "missing-exercise-conclusion",
        mutated(setter("exerciseTest", {"performed": True, "date": "2026-11-19"})),
        "exerciseTest.conclusion",
        "required field is missing",
    ),
    (
        "results-without-test",
        mutated(setter("exerciseTest", {"performed": False, "mets": 7})),
        "exerciseTest",
        "not allowed",
    ),
    (
        "sternotomy-without-date",
        mutated(setter("surgery", {"sternotomy": True})),
        "surgery.date",
        "required field is missing",
    ),
    ("impossible-surgery-date", mutated(setter("surgery.date", "2026-02-30")), "surgery.date", "not a real date"),
    ("timestamp-without-zone", mutated(setter("occurredAt", "2026-11-20T14:05:00")), "occurredAt", "required format"),
    (
        "impossible-timestamp",
        mutated(setter("occurredAt", "2026-11-31T14:05:00+01:00")),
        "occurredAt",
        "not a real date",
    ),
    (
        "discharged-before-admitted",
        mutated(setter("admission.dischargedAt", "2026-11-13T09:00:00+01:00")),
        "admission.dischargedAt",
        "before",
    ),
    (
        "municipal-referral-without-content",
        mutated(setter("referral", {**EXAMPLE["referral"], "trainingNeeded": False, "rehabElements": []})),
        "referral",
        "needs trainingNeeded",
    ),
    (
        "control-at-end-without-control",
        mutated(
            setter(
                "referral", {**EXAMPLE["referral"], "ambulatoryControl": False, "ambulatoryControlAtEndOfRehab": True}
            )
        ),
        "referral.ambulatoryControlAtEndOfRehab",
        "ambulatoryControl is false",
    ),
    (
        "two-primary-diagnoses",
        mutated(
            setter(
                "diagnoses",
                [
                    {"system": "ICD-10", "code": "I21.4", "primary": True},
                    {"system": "ICD-10", "code": "I50.1", "primary": True},
                ],
            )
        ),
        "diagnoses",
        "more than one primary",
    ),
    ("no-diagnosis", mutated(setter("diagnoses", [])), "diagnoses", "at least 1"),
    ("bad-ean-check-digit", mutated(setter("hospital.ean", "5790001382446")), "hospital.ean", "check digit"),
    ("wrong-schema-version", mutated(setter("schemaVersion", "2")), "schemaVersion", "must be '1'"),
    ("empty-family-name", mutated(setter("patient.familyName", "")), "patient.familyName", "required format"),
    ("blank-family-name", mutated(setter("patient.familyName", "   ")), "patient.familyName", "required format"),
]


@pytest.mark.parametrize(("raw", "field", "words"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_input_is_rejected_with_field_and_problem(
    pipeline: Pipeline, raw: bytes, field: str, words: str
) -> None:
    with pytest.raises((InvalidInput, UnknownMessageKind)) as caught:
        transform(raw, pipeline, FIXED_NOW)
    message = str(caught.value)
    assert words in message
    if field:
        assert isinstance(caught.value, InvalidInput) and caught.value.field == field
    assert CPR not in message and "3212489996" not in message and "251248" not in message
    assert "\n" not in message


def test_twenty_megabyte_payload_is_rejected_before_parsing(pipeline: Pipeline) -> None:
    raw = b'{"padding": "' + b"x" * (20 * 1024 * 1024) + b'"}'
    with pytest.raises(InvalidInput, match=r"payload too large: 20971\d+ bytes, the limit is 1048576"):
        transform(raw, pipeline, FIXED_NOW)


def test_xml_that_is_not_a_fhir_bundle_is_rejected(pipeline: Pipeline) -> None:
    with pytest.raises(InvalidInput, match="not a FHIR Bundle"):
        transform(b"<?xml version='1.0'?><ClosingReport/>", pipeline, FIXED_NOW)


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (
            b'<?xml version="1.0"?><!DOCTYPE Bundle [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            b'<Bundle xmlns="http://hl7.org/fhir"><id value="&x;"/></Bundle>',
            "DOCTYPE",
        ),
        (b'<Bundle xmlns="http://hl7.org/fhir"><id value="x"/>', "malformed XML"),
        (b"<" + b"a" * (2 * 1024 * 1024) + b"/>", "payload too large"),
    ],
    ids=["external-entity", "truncated", "too-large"],
)
def test_hostile_or_broken_xml_is_rejected(pipeline: Pipeline, raw: bytes, words: str) -> None:
    with pytest.raises(InvalidInput, match=words) as caught:
        transform(raw, pipeline, FIXED_NOW)
    assert "root:" not in str(caught.value)


def test_utf8_bom_is_tolerated(pipeline: Pipeline) -> None:
    raw = b"\xef\xbb\xbf" + json.dumps(EXAMPLE).encode()
    assert len(transform(raw, pipeline, FIXED_NOW).outgoing) == 1


def test_municipality_without_endpoint_is_a_configuration_error_naming_the_code(pipeline: Pipeline) -> None:
    raw = mutated(setter("patient.municipalityCode", "101"))  # København: no endpoint configured
    with pytest.raises(ConfigurationError, match=r"municipality 101 \(København\) has no receiving endpoint"):
        transform(raw, pipeline, FIXED_NOW)


def test_no_referral_needs_no_endpoint(pipeline: Pipeline) -> None:
    raw = mutated(setter("patient.municipalityCode", "101"))
    event = json.loads(raw)
    event["referral"]["decision"] = "none"
    result = transform(json.dumps(event).encode(), pipeline, FIXED_NOW)
    assert result.outgoing == () and [f.kind for f in result.facts] == ["no-referral", "course-stage"]


def test_four_digit_municipality_code_is_accepted(pipeline: Pipeline) -> None:
    result = transform(mutated(setter("patient.municipalityCode", "0851")), pipeline, FIXED_NOW)
    assert result.outgoing[0].route.routing_key == "referral.municipality.851"


@pytest.mark.parametrize("path", sorted(Path(GOLDEN / "discharge").glob("*.event.json")), ids=lambda p: p.stem)
def test_every_truncation_of_a_valid_event_is_rejected_cleanly(pipeline: Pipeline, path: Path) -> None:
    raw = path.read_bytes()
    for cut in range(0, len(raw) - 2, 97):
        with pytest.raises((InvalidInput, UnknownMessageKind)):
            transform(raw[:cut], pipeline, FIXED_NOW)
