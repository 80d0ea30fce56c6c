"""Receive-side checks, second pass (issue 11, point 6): what `validate`'s fast layers must call an error, and
so what is never acked `ok` — each a mutation of our golden CareCommunication."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from integration.conformance.receipt import receipt_findings
from integration.formats.json_contract import decode_json

GOLDEN = Path(__file__).parent / "golden" / "hotline" / "municipality-routine.carecommunication.json"
OTHER_CPR = {"system": "urn:oid:1.2.208.176.1.2", "value": "0101701234"}


def _golden() -> dict[str, Any]:
    return json.loads(GOLDEN.read_bytes())


def _of(bundle: dict[str, Any], rtype: str) -> dict[str, Any]:
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype)


def _fields(bundle: dict[str, Any]) -> list[str]:
    return [f.field for f in receipt_findings(bundle)]


def test_the_golden_message_has_no_findings() -> None:
    assert receipt_findings(_golden()) == []


def _total(b: dict[str, Any]) -> None:
    b["total"] = 8


def _search(b: dict[str, Any]) -> None:
    b["entry"][2]["search"] = {"mode": "match"}


def _request(b: dict[str, Any]) -> None:
    b["entry"][2]["request"] = {"method": "DELETE", "url": "Patient/x"}


def _modifier(b: dict[str, Any]) -> None:
    _of(b, "Communication")["modifierExtension"] = [{"url": "http://example.org/x", "valueBoolean": True}]


def _nested_modifier(b: dict[str, Any]) -> None:
    _of(b, "Communication")["payload"][0]["modifierExtension"] = [{"url": "http://example.org/x", "valueBoolean": True}]


def _entry_modifier(b: dict[str, Any]) -> None:
    b["entry"][1]["modifierExtension"] = [{"url": "http://example.org/x", "valueBoolean": True}]


def _status(b: dict[str, Any]) -> None:
    _of(b, "Communication")["status"] = "entered-in-error"


def _about(b: dict[str, Any]) -> None:
    _of(b, "Communication")["about"] = [{"identifier": OTHER_CPR}]


def _subject_identifier(b: dict[str, Any]) -> None:
    _of(b, "Communication")["subject"]["identifier"] = OTHER_CPR


def _link(b: dict[str, Any]) -> None:
    _of(b, "Patient")["link"] = [{"other": {"identifier": OTHER_CPR}, "type": "replaced-by"}]


def _replacement_elsewhere(b: dict[str, Any]) -> None:
    _of(b, "Communication")["about"] = [{"identifier": {"system": "urn:oid:1.2.208.176.1.6.1.1", "value": "250147X1"}}]


def _foreign_type(b: dict[str, Any]) -> None:
    extra = copy.deepcopy(_of(b, "Practitioner"))
    extra.update(resourceType="Device", id="0c4c8a5e-7f3e-4a39-9d8c-3d1f6c1f0a11")
    del extra["name"]
    b["entry"].append({"fullUrl": f"https://x.dk/fhir/Device/{extra['id']}", "resource": extra})


def _second_communication(b: dict[str, Any]) -> None:
    extra = copy.deepcopy(_of(b, "Communication"))
    extra["id"] = "0c4c8a5e-7f3e-4a39-9d8c-3d1f6c1f0a12"
    b["entry"].append({"fullUrl": f"https://x.dk/fhir/Communication/{extra['id']}", "resource": extra})


def _two_sors(b: dict[str, Any]) -> None:
    _of(b, "Organization")["identifier"].append({"system": "urn:oid:1.2.208.176.1.1", "value": "715581000016005"})


def _two_focus(b: dict[str, Any]) -> None:
    header = _of(b, "MessageHeader")
    header["focus"].append({"reference": f"Patient/{_of(b, 'Patient')['id']}"})


def _two_threads(b: dict[str, Any]) -> None:
    _of(b, "Communication")["identifier"].append({"value": "urn:uuid:6f1c2b1e-2a3c-4f71-baa9-2f3299771a24"})


CASES: list[tuple[Callable[[dict[str, Any]], None], str]] = [
    (_total, "Bundle.total"),
    (_search, "Bundle.entry[2].search"),
    (_request, "Bundle.entry[2].request"),
    (_modifier, "Communication.modifierExtension"),
    (_nested_modifier, "Communication.payload[0].modifierExtension"),
    (_entry_modifier, "Bundle.entry[1].modifierExtension"),
    (_status, "Communication.status"),
    (_about, "Communication.about[0].identifier"),
    (_subject_identifier, "Communication.subject.identifier"),
    (_link, "Patient.link[0].other.identifier"),
    (_replacement_elsewhere, "Communication.about[0].identifier"),
    (_foreign_type, "Bundle.entry[8].resource"),
    (_second_communication, "Communication"),
    (_two_sors, "Organization.identifier"),
    (_two_focus, "MessageHeader.focus"),
    (_two_threads, "Communication.identifier"),
]


@pytest.mark.parametrize(("mutate", "field"), CASES, ids=[m.__name__.strip("_") for m, _ in CASES])
def test_a_finding_names_the_element(mutate: Callable[[dict[str, Any]], None], field: str) -> None:
    bundle = _golden()
    mutate(bundle)
    assert field in _fields(bundle)


def test_the_patients_own_identifier_elsewhere_is_no_finding() -> None:
    bundle = _golden()
    _of(bundle, "Communication")["subject"]["identifier"] = dict(_of(bundle, "Patient")["identifier"][0])
    assert receipt_findings(bundle) == []


@pytest.mark.parametrize(
    ("written", "problem"),
    [
        (b'"valueBoolean": "true"', "must be a JSON boolean"),
        (b'"valueInteger": 5.0', "must be a JSON integer"),
        (b'"valueInteger": 1E1', "must be a JSON integer"),
        (b'"valueString": 5', "must be a JSON string"),
        (b'"valueDecimal": "7.50"', "must be a JSON number"),
    ],
)
def test_a_primitive_of_the_wrong_json_type_is_a_finding(written: bytes, problem: str) -> None:
    bundle = _golden()
    _of(bundle, "Communication")["extension"] = [{"url": "http://example.org/x", "valueBoolean": True}]
    raw = json.dumps(bundle).encode().replace(b'"valueBoolean": true', written)
    findings = receipt_findings(decode_json(raw))
    field = "Communication.extension[0]." + written[1:].split(b'"')[0].decode()
    assert (field, True) in [(f.field, problem in f.problem) for f in findings]


@pytest.mark.parametrize("written", [b'"valueDecimal": 7.50', b'"valueDecimal": 1e2', b'"valueInteger": -3'])
def test_a_primitive_of_the_right_json_type_is_no_finding(written: bytes) -> None:
    bundle = _golden()
    _of(bundle, "Communication")["extension"] = [{"url": "http://example.org/x", "valueBoolean": True}]
    raw = json.dumps(bundle).encode().replace(b'"valueBoolean": true', written)
    assert receipt_findings(decode_json(raw)) == []


def test_a_boolean_element_as_a_string_is_a_finding() -> None:
    bundle = _golden()
    _of(bundle, "Patient")["active"] = "true"
    assert "Patient.active" in _fields(bundle)


def test_endpoints_of_another_sor_unit_are_accepted_as_medcom_s_own_flow3_example_sends() -> None:
    bundle = _golden()
    _of(bundle, "MessageHeader")["source"]["endpoint"] = "https://sor2.sum.dsdn.dk/#id=715581000016005"
    _of(bundle, "MessageHeader")["destination"][0]["endpoint"] = "https://sor2.sum.dsdn.dk/#id=715581000016005"
    assert not [f for f in receipt_findings(bundle) if "endpoint" in str(f)]
