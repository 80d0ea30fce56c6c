"""The receive side checks what `integration validate`'s fast layers check (issue 11, point 6): nothing they
call an error is acknowledged `ok`; a refused message gets fatal-error with one issue per finding."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from integration.conformance.checks import fhirpath_findings
from integration.conformance.resource_validation import fhir_problems
from integration.conformance.validation import document_problems, messaging_problems
from integration.errors import Rejected
from integration.flows.dispatch import Pipeline, transform
from integration.flows.results import FlowResult, Refusal
from integration.formats.care_communication import decode_xml_bundle
from integration.formats.json_contract import decode_json
from tests.conftest import GOLDEN, SHARED

JAN_12 = datetime.fromisoformat("2027-01-12T10:20:00+01:00")
CC = json.loads((GOLDEN / "hotline" / "municipality-routine.carecommunication.json").read_text())


def _medcom_examples() -> list[Any]:
    folder = SHARED / "medcom"
    if not folder.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"../shared is absent ({SHARED})"))]
    paths = sorted(p for p in folder.rglob("*") if p.suffix in (".json", ".xml") and "definitions" not in p.parts)
    return [pytest.param(p, id=p.name) for p in paths]


def _fast_findings(raw: bytes) -> list[str] | None:
    """What `integration validate` says outside its profile layer; None when it cannot read the file."""
    try:
        doc = decode_xml_bundle(raw, 10**7) if raw.lstrip()[:1] == b"<" else decode_json(raw, max_bytes=10**7)
    except Rejected:
        return None
    if not isinstance(doc, dict) or doc.get("resourceType") != "Bundle":
        return None
    structure = document_problems(doc) if doc.get("type") == "document" else messaging_problems(doc)
    return structure + fhir_problems(doc) + fhirpath_findings(doc)


def _ack_codes(result: FlowResult | None) -> list[str]:
    if result is None:
        return []
    acks = [o.message for o in result.outgoing if o.route.exchange == "rehab.ack"]
    return [a["entry"][0]["resource"]["response"]["code"] for a in acks]


def _answer(raw: bytes, pipeline: Pipeline) -> tuple[FlowResult | None, Rejected | None]:
    try:
        result = transform(raw, pipeline, JAN_12)
    except Rejected as rejection:
        return None, rejection
    if isinstance(result, Refusal):
        return result.answer, result.rejection
    return result, None


@pytest.mark.parametrize("path", _medcom_examples())
def test_no_medcom_example_that_validate_calls_erroneous_is_acknowledged_ok(path: Path, pipeline: Pipeline) -> None:
    raw = path.read_bytes()
    findings = _fast_findings(raw)
    if not findings:
        pytest.skip("validate's fast layers find nothing (or cannot read it as a Bundle)")
    result, _rejection = _answer(raw, pipeline)
    assert "ok" not in _ack_codes(result), findings


def _issues(result: FlowResult | None) -> list[dict[str, Any]]:
    assert result is not None
    (ack,) = [o.message for o in result.outgoing if o.route.exchange == "rehab.ack"]
    assert ack["entry"][0]["resource"]["response"]["code"] == "fatal-error"
    outcome = next(e["resource"] for e in ack["entry"] if e["resource"]["resourceType"] == "OperationOutcome")
    return list(outcome["issue"])


def _changed(change: Callable[[dict[str, Any]], None]) -> bytes:
    bundle = copy.deepcopy(CC)
    change(bundle)
    return json.dumps(bundle).encode()


def _resource(bundle: dict[str, Any], rtype: str) -> dict[str, Any]:
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype)


def _second_patient(bundle: dict[str, Any]) -> None:
    entry = copy.deepcopy(next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"))
    entry["resource"]["id"] = entry["fullUrl"].rsplit("/", 1)[1] = "5b7e1f0a-3c2d-4e5f-8a9b-0c1d2e3f4a5b"
    entry["fullUrl"] = entry["fullUrl"].rsplit("/", 1)[0] + "/" + entry["resource"]["id"]
    entry["resource"]["identifier"][0]["value"] = "0101701234"
    bundle["entry"].append(entry)


def _full_url_of_another(bundle: dict[str, Any]) -> None:
    patient = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    patient["fullUrl"] = patient["fullUrl"].replace("/Patient/", "/Practitioner/")


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        # MedCom's own intentionally invalid receive example (TouchStone R-Tek-M, receive-side test tec-04: the
        # negative duplicate) has a category coding without a code
        (
            lambda b: _resource(b, "Communication")["category"][0]["coding"][0].pop("code"),
            "Communication.category",
            "category",
        ),
        (_second_patient, "Patient", "exactly one Patient"),
        (_full_url_of_another, "Bundle.entry", "fullUrl does not name the resource"),
        (lambda b: b.update(id="S-C-new-aca3d03a-febd-4b88-ad53-ac1bc36da615"), "Bundle.id", "must be a UUID"),
        (
            lambda b: _resource(b, "Communication").update(identifier=[{"value": "thread-1"}]),
            "Communication.identifier",
            "urn:uuid v4",
        ),
    ],
    ids=["category-without-code", "two-patients", "fullurl-names-another", "templated-bundle-id", "thread-id"],
)
def test_a_carecommunication_the_fast_layers_refuse_gets_fatal_error_naming_each_finding(
    pipeline: Pipeline, change: Callable[[dict[str, Any]], None], field: str, words: str
) -> None:
    raw = _changed(change)
    assert _fast_findings(raw), "validate reports it"
    result, rejection = _answer(raw, pipeline)
    assert rejection is not None
    issues = _issues(result)
    assert any(i["expression"][0].startswith(field) and words in i["details"]["text"] for i in issues), issues
    assert len(issues) >= 1 and all(i["code"] in ("structure", "invariant", "business-rule") for i in issues)
    assert "0101701234" not in str(rejection) and "2512489996" not in str(rejection)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("13-entry-without-resourcetype.carecommunication.json", "not a FHIR resource"),
        ("14-duplicate-fullurl-two-patients.carecommunication.json", "bdl-7"),
    ],
)
def test_the_shared_broken_bundles_are_answered_fatal_error(
    shared: Path, pipeline: Pipeline, name: str, expected: str
) -> None:
    result, rejection = _answer((shared / "cases" / "edge-inputs" / name).read_bytes(), pipeline)
    assert rejection is not None
    texts = " ".join(i["details"]["text"] for i in _issues(result))
    assert expected in texts
    if name.startswith("14"):
        assert "exactly one Patient" in texts  # every finding, not the first only


def test_a_clean_carecommunication_is_still_routed_and_acked_ok(pipeline: Pipeline) -> None:
    result = transform(json.dumps(CC).encode(), pipeline, JAN_12)
    assert _ack_codes(result) == ["ok"]


XHTML = '<div xmlns="http://www.w3.org/1999/xhtml">'
ACTIVE = {
    "script": XHTML + "<script>alert(1)</script><p>x</p></div>",
    "onclick": XHTML + '<p onclick="alert(1)">x</p></div>',
    "javascript-url": XHTML + '<p><a href=" JaVa&#9;script:alert(1)">x</a></p></div>',
    "not-xhtml": '<div xmlns="http://www.w3.org/1999/xhtml"><p>x</div>',
}


def _narrative(rtype: str, div: str) -> Callable[[dict[str, Any]], None]:
    return lambda bundle: _resource(bundle, rtype)["text"].update(div=div)


def _contained(div: str) -> Callable[[dict[str, Any]], None]:
    practitioner = {"resourceType": "Practitioner", "id": "p1", "text": {"status": "generated", "div": div}}
    return lambda bundle: _resource(bundle, "Communication").update(contained=[practitioner])


@pytest.mark.parametrize("active", sorted(ACTIVE))
@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda div: _narrative("Communication", div), "Communication.text.div"),
        (lambda div: _narrative("MessageHeader", div), "MessageHeader.text.div"),
        (_contained, "Communication.contained[0].text.div"),
    ],
    ids=["communication", "messageheader", "contained"],
)
def test_a_narrative_with_active_content_is_refused_on_receipt_and_never_forwarded(
    pipeline: Pipeline, change: Callable[[str], Callable[[dict[str, Any]], None]], field: str, active: str
) -> None:
    """The hotline forwards a received CareCommunication as it is: a <script>, an onclick or a javascript: link in
    any narrative would reach the department's system (found by a hostile tester)."""
    result, rejection = _answer(_changed(change(ACTIVE[active])), pipeline)
    assert rejection is not None and result is not None
    assert [o.route.exchange for o in result.outgoing] == ["rehab.ack"], "nothing forwarded, only the ack"
    issues = [i for i in _issues(result) if i["expression"] == [field]]
    assert issues and "(txt-1, txt-2)" in issues[0]["details"]["text"] and issues[0]["code"] == "invariant"


def test_a_narrative_without_active_content_is_still_routed(pipeline: Pipeline) -> None:
    div = XHTML + '<p>Kontakt: <a href="https://www.rn.dk">rn.dk</a>, <b>javascript:</b> is only text here</p></div>'
    result = transform(_changed(_narrative("Communication", div)), pipeline, JAN_12)
    assert _ack_codes(result) == ["ok"]
