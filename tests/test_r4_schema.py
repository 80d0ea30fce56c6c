"""The schema generated from the R4 core definitions (`r4_schema`): the committed file is a fresh generation,
and it holds each rule the published fhir.schema.json misses (docs/decisions/0030-message-path-validator.md)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from integration.config import PROJECT_ROOT
from integration.conformance import r4_validator, resource_validation
from integration.conformance.r4_schema import DEFINITION_FILES, SCHEMA_FILE, dumps, generate, xsd_pattern

CORE = PROJECT_ROOT / ".cache" / "hl7.fhir.r4.core"


def test_the_committed_schema_is_a_fresh_generation_from_the_r4_core() -> None:
    if not all((CORE / name).is_file() for name in DEFINITION_FILES):
        pytest.skip(f"the R4 core definitions are not in {CORE}: `make fhir-core` fetches them")
    bundles = [json.loads((CORE / name).read_text(encoding="utf-8")) for name in DEFINITION_FILES]
    committed = (PROJECT_ROOT / "schemas" / SCHEMA_FILE).read_text(encoding="utf-8")
    assert committed == dumps(generate(bundles)), "run: python -m integration.conformance.r4_schema --write"


def test_a_type_the_definitions_lack_is_refused_by_name() -> None:
    with pytest.raises(KeyError, match="NoSuchResource"):
        generate([{"entry": []}], resources=("NoSuchResource",))


@pytest.mark.parametrize(
    ("regex", "pattern"),
    [
        ("[ \\r\\n\\t\\S]+", "^(?:[\\s\\S]+)$"),
        ("[^\\s]+(\\s[^\\s]+)*", "^(?:[^ \\t\\n\\r]+([ \\t\\n\\r][^ \\t\\n\\r]+)*)$"),
        ("\\S*", "^(?:[^ \\t\\n\\r]*)$"),
        ("[A-Za-z0-9\\-\\.]{1,64}", "^(?:[A-Za-z0-9\\-\\.]{1,64})$"),
    ],
    ids=["string", "code", "uri", "id"],
)
def test_r4_regexes_are_anchored_with_xml_schemas_white_space(regex: str, pattern: str) -> None:
    assert xsd_pattern(regex) == pattern


def test_a_class_mixing_not_space_with_other_characters_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot translate"):
        xsd_pattern("[a\\S]")


def _errors(resource: dict[str, Any]) -> list[str]:
    return [e.text for e in r4_validator.content_errors(resource)]


PATIENT = {"resourceType": "Patient", "id": "p1"}
EXTENSIONS = [{"url": "http://x", "valueString": "x"}]


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        ({**PATIENT, "extension": [{"valueString": "x"}]}, "Patient/p1: extension.0.url: required element is missing"),
        (
            {"resourceType": "Observation", "id": "o", "code": {"text": "x"}},
            "Observation/o: status: required element is missing",
        ),
        (
            {"resourceType": "MedicationLike", "id": "o"},
            "not a FHIR resource",
        ),
        (
            {**PATIENT, "deceasedBoolean": True, "deceasedDateTime": "2026-01-01"},
            "Patient/p1: deceasedDateTime: a choice element ([x]) has more than one type given",
        ),
        ({**PATIENT, "birthDate": "2026-02-30"}, "Patient/p1: birthDate: is not a real date"),
        ({**PATIENT, "nickname": "x"}, "Patient/p1: nickname: unknown element (not in FHIR R4)"),
        ({**PATIENT, "multipleBirthInteger": 3.0}, "multipleBirthInteger: must be a JSON integer"),
        ({**PATIENT, "multipleBirthInteger": 2**31}, "multipleBirthInteger: out of range (the maximum is"),
        ({**PATIENT, "gender": "male "}, "gender: is not a valid FHIR code (R4's regex)"),
        (
            {"resourceType": "MessageHeader", "id": "m", "source": {"endpoint": "http://x"}},
            "MessageHeader/m: event[x]: required element is missing",
        ),
        ({**PATIENT, "contained": [{"resourceType": "Patient", "nick": 1}]}, "contained.0.nick: unknown element"),
        ({**PATIENT, "_id": {"extension": EXTENSIONS}}, "Patient/p1: _id: unknown element"),
        (
            {**PATIENT, "extension": [{"url": "u", "_url": {"id": "a"}, "valueString": "x"}]},
            "extension.0._url: unknown",
        ),
        ({**PATIENT, "birthDate": "2026-01-01", "_birthDate": {}}, "_birthDate: empty: an id or an extension"),
        (
            {"resourceType": "Observation", "id": "o", "code": {"text": "x"}, "_status": {"id": "a"}},
            "Observation/o: status: required element is missing",
        ),
        ({**PATIENT, "contained": [{"id": "c"}]}, "contained.0.resourceType: required element is missing"),
        (
            {**PATIENT, "contained": [{**PATIENT, "contained": [PATIENT]}]},
            "contained.0: a contained resource must not contain resources (dom-2)",
        ),
        ({**PATIENT, "contained": [{**PATIENT, "meta": {"lastUpdated": "2026-01-01T10:00:00Z"}}]}, "(dom-4)"),
        ({**PATIENT, "contained": [{**PATIENT, "meta": {"security": [{"code": "R"}]}}]}, "(dom-5)"),
    ],
    ids=[
        "extension-url",
        "required-primitive",
        "unknown-type",
        "choice-exclusive",
        "impossible-date",
        "unknown-element",
        "integer-with-fraction",
        "integer-range",
        "code-regex",
        "required-choice",
        "contained-by-type",
        "no-_id",
        "no-_url",
        "empty-_element",
        "id-alone-is-no-content",
        "contained-needs-a-type",
        "dom-2",
        "dom-4",
        "dom-5",
    ],
)
def test_the_schema_holds_what_the_published_one_misses(resource: dict[str, Any], expected: str) -> None:
    assert any(expected in text for text in _errors(resource)), _errors(resource)


@pytest.mark.parametrize(
    "resource",
    [
        {"resourceType": "Observation", "id": "o", "code": {"text": "x"}, "_status": {"extension": [{"url": "u"}]}},
        {**PATIENT, "name": [{"given": ["Nancy", None], "_given": [None, {"extension": [{"url": "u"}]}]}]},
        {**PATIENT, "name": [{"family": "Ha\u00a0Nguyen"}], "gender": "male"},
        {**PATIENT, "deceasedDateTime": "2016-12-31T23:59:60Z", "birthDate": "2024-02-29"},
        {**PATIENT, "multipleBirthInteger": 2},
        {**PATIENT, "extension": [{"url": "u", "_valueDateTime": {"extension": EXTENSIONS}}]},
        {**PATIENT, "extension": [{"url": "u", "valueDateTime": "2026-01-01", "_valueDateTime": {"id": "a"}}]},
        {**PATIENT, "contained": [{**PATIENT, "text": {"status": "empty", "div": "<div>x</div>"}}]},
    ],
    ids=[
        "required-by-element",
        "null-pairs-element",
        "no-break-space",
        "leap-second-and-day",
        "integer",
        "choice-by-element",
        "choice-element-beside",
        "contained-with-narrative",
    ],
)
def test_what_fhir_allows_passes(resource: dict[str, Any]) -> None:
    assert _errors(resource) == []


def test_findings_never_repeat_a_value_or_a_non_uuid_id() -> None:
    cpr = "2512489996"
    found = r4_validator.content_errors(
        {"resourceType": "Patient", "id": cpr, "gender": cpr + " x", "birthDate": "2026-02-30", cpr: 1}
    )
    assert found and all(cpr not in error.shown and cpr not in error.field for error in found)


@pytest.mark.parametrize(
    ("value", "problem"),
    [("1948-13-45", "is not a valid FHIR date (R4's regex)"), ("1948-02-30", "is not a real date")],
    ids=["out-of-range", "no-such-day"],
)
def test_a_bad_date_is_one_finding(value: str, problem: str) -> None:
    (only,) = _errors({**PATIENT, "birthDate": value})
    assert problem in only


def test_validate_refuses_a_contained_resource_without_its_type_as_the_message_path_does() -> None:
    (found,) = resource_validation.content_errors({**PATIENT, "contained": [{"id": "c"}]})
    assert found.text == "Patient/p1: contained.0.resourceType: required element is missing"
    assert found.field == "Patient.contained[0].resourceType"
