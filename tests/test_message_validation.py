"""The outbound validator: it accepts real MedCom messages and catches each kind of broken message."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from integration.conformance.validation import (
    Unsendable,
    fhir_problems,
    messaging_problems,
    outgoing_findings,
    validate_message,
)
from integration.flows.dispatch import Pipeline, transform
from tests.conftest import GOLDEN, received_at

INTENTIONALLY_INVALID = {"HospitalNotification_Ex_TEK_FCC.json"}


@pytest.fixture(scope="module")
def referral(pipeline: Pipeline) -> dict[str, Any]:
    path = GOLDEN / "discharge" / "08-exercise-test-with-results.event.json"
    return transform(path.read_bytes(), pipeline, received_at(path)).outgoing[0].message


def _resource(bundle: dict[str, Any], rtype: str) -> dict[str, Any]:
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype)


def _second_destination(b: dict[str, Any]) -> None:
    header = b["entry"][0]["resource"]
    header["destination"].append(copy.deepcopy(header["destination"][0]))


def _drop_provenance(b: dict[str, Any]) -> None:
    b["entry"] = [e for e in b["entry"] if e["resource"]["resourceType"] != "Provenance"]


def _sender_without_ean(b: dict[str, Any]) -> None:
    ref = b["entry"][0]["resource"]["sender"]["reference"]
    org = next(e["resource"] for e in b["entry"] if f"Organization/{e['resource']['id']}" == ref)
    org["identifier"] = org["identifier"][:1]


BREAKAGES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("header-not-first", lambda b: b["entry"].reverse(), "entry[0] must be the MessageHeader"),
    ("two-primary-destinations", _second_destination, "exactly one primary destination"),
    ("no-provenance", _drop_provenance, "no Provenance targets"),
    (
        "dangling-reference",
        lambda b: _resource(b, "ServiceRequest")["subject"].update(reference="Patient/x"),
        "'Patient/x' does not resolve",
    ),
    (
        "bad-status-code",
        lambda b: _resource(b, "ServiceRequest").update(status="sent"),
        "status 'sent' is not a valid code",
    ),
    ("bad-intent-code", lambda b: _resource(b, "ServiceRequest").update(intent="referral"), "intent 'referral'"),
    ("timestamp-without-zone", lambda b: b.update(timestamp="2026-11-20T14:30:00"), "has no time zone"),
    ("id-too-long", lambda b: _resource(b, "RiskAssessment").update(id="a" * 65), "at most 64 characters"),
    ("bundle-id-not-uuid", lambda b: b.update(id="referral-1"), "Bundle.id must be a UUID"),
    ("missing-narrative", lambda b: _resource(b, "Observation").pop("text"), "narrative text is missing"),
    ("empty-list", lambda b: _resource(b, "ServiceRequest").update(orderDetail=[]), "orderDetail: empty value"),
    ("empty-string", lambda b: _resource(b, "Patient")["name"][0].update(given=["Nancy", ""]), "given.1: empty value"),
    ("patient-without-family", lambda b: _resource(b, "Patient")["name"][0].pop("family"), "needs a family name"),
    ("sender-without-ean", _sender_without_ean, "needs both an SOR and an EAN"),
    ("wrong-type-in-resource", lambda b: _resource(b, "ServiceRequest").update(authoredOn="yesterday"), "authoredOn"),
    (
        "list-for-single",
        lambda b: _resource(b, "ServiceRequest").update(subject=[{"reference": "Patient/x"}]),
        "subject",
    ),
    (
        "bad-element-in-list",
        lambda b: _resource(b, "ServiceRequest")["orderDetail"].append({"coding": "x"}),
        "orderDetail.3",
    ),
    ("unknown-element", lambda b: _resource(b, "Patient").update(nickname="Nan"), "nickname"),
    ("two-choice-values", lambda b: _resource(b, "Observation").update(valueBoolean=True), "Observation"),
]


def test_a_built_referral_is_clean(referral: dict[str, Any]) -> None:
    assert messaging_problems(referral) == [] and fhir_problems(referral) == []


@pytest.mark.parametrize(("breakage", "expected"), [b[1:] for b in BREAKAGES], ids=[b[0] for b in BREAKAGES])
def test_each_breakage_is_caught(referral: dict[str, Any], breakage, expected: str) -> None:
    broken = copy.deepcopy(referral)
    breakage(broken)
    with pytest.raises(Unsendable) as caught:  # a Rejected: the input is refused, naming the element
        validate_message(broken)
    assert expected in " ".join(caught.value.texts)


def _shared_bundles(shared: Path) -> list[Path]:
    paths = [p for p in (shared / "medcom").rglob("*.json") if "definitions" not in p.parts]
    return [p for p in paths if json.loads(p.read_text(encoding="utf-8")).get("resourceType") == "Bundle"]


def test_shared_medcom_messages_are_valid_fhir(shared: Path) -> None:
    checked = 0
    for path in _shared_bundles(shared):
        if path.name in INTENTIONALLY_INVALID:
            continue
        assert fhir_problems(json.loads(path.read_text(encoding="utf-8"))) == [], path.name
        checked += 1
    assert checked >= 10


def test_intentionally_invalid_medcom_example_fails_for_its_documented_reasons(shared: Path) -> None:
    path = shared / "medcom" / "dk-medcom-hospitalnotification-testscripts" / "HospitalNotification_Ex_TEK_FCC.json"
    problems = " ".join(fhir_problems(json.loads(path.read_text(encoding="utf-8"))))
    assert "eventCoding" in problems and "class: Field required" in problems


def test_medcom_carecommunication_example_meets_the_messaging_rules_but_its_test_bundle_id(shared: Path) -> None:
    path = (
        shared
        / "medcom"
        / "dk-medcom-carecommunication-testscripts"
        / "send"
        / "Bundle-S-C-new-aca3d03a-febd-4b88-ad53-ac1bc36da615.json"
    )
    assert messaging_problems(json.loads(path.read_text(encoding="utf-8"))) == ["Bundle.id must be a UUID"]


def _gate_texts(bundle: dict[str, Any]) -> str:
    with pytest.raises(Unsendable) as caught:
        validate_message(bundle)
    return " ".join(caught.value.texts)


def test_the_gate_names_each_changed_element(referral: dict[str, Any]) -> None:
    broken = copy.deepcopy(referral)
    _resource(broken, "ServiceRequest")["category"][0]["coding"][0]["code"] = ["gop-general"]
    organisation = _resource(broken, "Organization")
    organisation["identifier"][0]["use"] = 7
    problems = _gate_texts(broken)
    assert "category.0.coding.0.code: must be a JSON string" in problems
    assert "Organization/" in problems and "identifier.0.use: must be a JSON string" in problems


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        ("2026-11-31T14:30:00+01:00", "is not a real date (the calendar has no such day)"),
        ("2026-11-20T25:30:00+01:00", "is not a valid FHIR instant (R4's regex)"),
    ],
    ids=["no-such-day", "no-such-hour"],
)
def test_a_timestamp_that_is_not_real_is_refused_where_it_is(
    referral: dict[str, Any], timestamp: str, expected: str
) -> None:
    broken = copy.deepcopy(referral)
    provenance = _resource(broken, "Provenance")
    broken["timestamp"] = provenance["recorded"] = timestamp
    problems = _gate_texts(broken)
    assert f"timestamp: {expected}" in problems and f"recorded: {expected}" in problems  # both are instants


def _gate_fields(bundle: dict[str, Any]) -> set[str]:
    return {finding.field for finding in outgoing_findings(bundle)}


def test_an_impossible_date_is_refused_by_the_gate_and_by_fhir_resources(referral: dict[str, Any]) -> None:
    broken = copy.deepcopy(referral)
    _resource(broken, "Patient")["birthDate"] = "1948-02-30"
    assert "Patient.birthDate" in _gate_fields(broken)
    assert any("birthDate" in p for p in fhir_problems(broken))


def test_an_id_that_is_not_an_fhir_id_is_refused(referral: dict[str, Any]) -> None:
    broken = copy.deepcopy(referral)
    _resource(broken, "Provenance")["id"] = "not a valid id!"
    assert "Provenance/not a valid id!: id: is not a valid FHIR id" in _gate_texts(broken)
