"""The referral message itself: MedCom envelope, ServiceRequest content, routing, per rule of the agreement."""

from __future__ import annotations

import json
from typing import Any

import pytest

from integration.flows.dispatch import Pipeline, transform
from tests.conftest import GOLDEN, received_at

DISCHARGE = GOLDEN / "discharge"
BASE = "https://hjerterehab.rn.dk/fhir"


def run(pipeline: Pipeline, name: str):
    path = DISCHARGE / f"{name}.event.json"
    return transform(path.read_bytes(), pipeline, received_at(path))


def message(pipeline: Pipeline, name: str) -> dict[str, Any]:
    (outgoing,) = run(pipeline, name).outgoing
    return outgoing.message


def resources(bundle: dict[str, Any], rtype: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]


def one(bundle: dict[str, Any], rtype: str) -> dict[str, Any]:
    (found,) = resources(bundle, rtype)
    return found


def by_ref(bundle: dict[str, Any], ref: str) -> dict[str, Any]:
    return next(
        e["resource"] for e in bundle["entry"] if f"{e['resource']['resourceType']}/{e['resource']['id']}" == ref
    )


def extension(resource: dict[str, Any], suffix: str) -> Any:
    (ext,) = [e for e in resource["extension"] if e["url"].endswith(suffix)]
    return ext.get("valueCode", ext.get("valueBoolean"))


def test_envelope_follows_medcom_messaging(pipeline: Pipeline) -> None:
    bundle = message(pipeline, "01-municipal-gop-general-sternotomy")
    header = bundle["entry"][0]["resource"]
    assert bundle["type"] == "message" and bundle["timestamp"] == "2026-11-20T14:30:00+01:00"
    assert header["resourceType"] == "MessageHeader"
    assert header["eventCoding"]["code"] == "new-referral"
    (destination,) = header["destination"]
    assert destination["extension"][0]["valueCoding"]["code"] == "primary"
    assert destination["endpoint"] == "https://sor2.sum.dsdn.dk/#id=434751000016002"
    receiver = by_ref(bundle, destination["receiver"]["reference"])
    assert {i["system"]: i["value"] for i in receiver["identifier"]} == {
        "urn:oid:1.2.208.176.1.1": "434751000016002",
        "https://www.gs1.org/gln": "5790008515204",
    }
    sender = by_ref(bundle, header["sender"]["reference"])
    assert sender["name"] == "Aalborg UH, Kardiologisk Afdeling"
    assert header["source"]["endpoint"] == "https://sor2.sum.dsdn.dk/#id=715541000016001"
    assert by_ref(bundle, header["focus"][0]["reference"])["resourceType"] == "ServiceRequest"
    provenance = one(bundle, "Provenance")
    assert provenance["target"] == [{"reference": f"MessageHeader/{header['id']}"}]
    assert provenance["activity"]["coding"][0]["code"] == "new-message"
    assert provenance["agent"][0]["who"] == header["sender"]
    for entry in bundle["entry"]:
        r = entry["resource"]
        assert entry["fullUrl"] == f"{BASE}/{r['resourceType']}/{r['id']}"
        assert r["text"]["div"].startswith('<div xmlns="http://www.w3.org/1999/xhtml">')


def test_patient_has_cpr_name_birth_date_municipality_and_gp(pipeline: Pipeline) -> None:
    bundle = message(pipeline, "01-municipal-gop-general-sternotomy")
    patient = one(bundle, "Patient")
    assert patient["identifier"] == [{"use": "official", "system": "urn:oid:1.2.208.176.1.2", "value": "2512489996"}]
    assert patient["name"] == [{"use": "official", "family": "Berggren", "given": ["Nancy", "Ann"]}]
    assert patient["birthDate"] == "1948-12-25"
    assert patient["address"][0]["extension"][0]["valueCodeableConcept"]["coding"][0]["code"] == "0851"
    gp = by_ref(bundle, patient["generalPractitioner"][0]["reference"])
    assert {i["system"]: i["value"] for i in gp["identifier"]} == {
        "urn:oid:1.2.208.176.1.1": "123451000016008",
        "urn:oid:1.2.208.176.1.4": "012345",
    }


def test_service_request_core_fields(pipeline: Pipeline) -> None:
    bundle = message(pipeline, "01-municipal-gop-general-sternotomy")
    request = one(bundle, "ServiceRequest")
    header = bundle["entry"][0]["resource"]
    assert (request["status"], request["intent"]) == ("active", "order")
    assert request["subject"]["reference"] == f"Patient/{one(bundle, 'Patient')['id']}"
    assert request["requester"] == header["sender"]
    assert request["performer"] == [header["destination"][0]["receiver"]]
    assert request["reasonCode"] == [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "I21.4"}]}]
    (category,) = request["category"]
    assert category["coding"][0]["system"] == f"{BASE}/CodeSystem/rehabilitation-referral-category"
    assert category["coding"][0]["code"] == "gop-general"
    assert [d["coding"][0]["code"] for d in request["orderDetail"]] == [
        "physical-activity",
        "diet",
        "patient-education",
        "smoking-cessation",
    ]
    assert request["identifier"][0]["value"] == "urn:uuid:3f0b9c1e-5d7a-4e47-9a52-0c6f4a1d2b11"
    assert extension(request, "closing-conversation") == "municipality"
    assert extension(request, "ambulatory-control") is True


def test_risk_assessment_is_supporting_info_with_qualitative_risk(pipeline: Pipeline) -> None:
    bundle = message(pipeline, "03-low-escalated-to-moderate")
    request, assessment = one(bundle, "ServiceRequest"), one(bundle, "RiskAssessment")
    assert {"reference": f"RiskAssessment/{assessment['id']}"} in request["supportingInfo"]
    (coding,) = assessment["prediction"][0]["qualitativeRisk"]["coding"]
    assert (coding["system"], coding["code"]) == ("http://terminology.hl7.org/CodeSystem/risk-probability", "moderate")
    assert [c["coding"][0]["code"] for c in assessment["reasonCode"]] == ["heart-failure", "uncontrolled-arrhythmia"]
    assert "hjertesvigt" in assessment["note"][0]["text"]


def test_escalation_is_noted_and_audited(pipeline: Pipeline) -> None:
    result = run(pipeline, "03-low-escalated-to-moderate")
    (escalated,) = [f for f in result.facts if f.kind == "risk-escalated"]
    assert escalated.detail["from"] == "low" and escalated.detail["to"] == "moderate"
    assert escalated.detail["criteria"] == ["heart-failure", "uncontrolled-arrhythmia"]
    notes = [n["text"] for n in one(result.outgoing[0].message, "ServiceRequest")["note"]]
    assert notes[0].startswith("Risikogruppe hævet fra lav til moderat")


@pytest.mark.parametrize(
    ("name", "routing_key", "category", "closing"),
    [
        ("01-municipal-gop-general-sternotomy", "referral.municipality.851", "gop-general", "municipality"),
        (
            "02-municipal-rehabilitation-elements-only",
            "referral.municipality.849",
            "municipal-rehabilitation",
            "municipality",
        ),
        ("04-high-risk-hospital", "referral.hospital.715561000016003", "gop-specialised", "hospital"),
        (
            "05-high-risk-overrides-municipal-decision",
            "referral.hospital.715561000016003",
            "gop-specialised",
            "hospital",
        ),
        ("06-moderate-decision-hospital", "referral.hospital.715561000016003", "gop-specialised", "hospital"),
        ("10-closing-conversation-at-hospital", "referral.municipality.846", "gop-general", "hospital"),
        (
            "13-department-performs-own-rehabilitation",
            "referral.hospital.716141000016004",
            "gop-specialised",
            "hospital",
        ),
        ("14-sks-diagnoses-primary-last", "referral.municipality.773", "municipal-rehabilitation", "municipality"),
    ],
)
def test_pathway_routing_category_and_closing(pipeline: Pipeline, name, routing_key, category, closing) -> None:
    (outgoing,) = run(pipeline, name).outgoing
    assert outgoing.route.exchange == "rehab.referral"
    assert outgoing.route.routing_key == routing_key
    request = one(outgoing.message, "ServiceRequest")
    assert request["category"][0]["coding"][0]["code"] == category
    assert extension(request, "closing-conversation") == closing
    receiver = by_ref(outgoing.message, request["performer"][0]["reference"])
    assert routing_key.endswith(receiver["identifier"][0]["value"]) or routing_key.endswith(
        json.loads((DISCHARGE / f"{name}.event.json").read_text())["patient"]["municipalityCode"].lstrip("0")
    )


def test_high_risk_overriding_a_municipal_decision_is_audited(pipeline: Pipeline) -> None:
    facts = {f.kind: f.detail for f in run(pipeline, "05-high-risk-overrides-municipal-decision").facts}
    assert facts["pathway-overridden"]["decision"] == "municipal"
    assert facts["pathway-overridden"]["performer"] == "hospital"


def test_department_that_is_sender_and_receiver_appears_once(pipeline: Pipeline) -> None:
    bundle = message(pipeline, "13-department-performs-own-rehabilitation")
    header = bundle["entry"][0]["resource"]
    assert header["sender"] == header["destination"][0]["receiver"]
    assert len(resources(bundle, "Organization")) == 2  # the department and the GP


def test_decision_none_sends_nothing_and_audits(pipeline: Pipeline) -> None:
    result = run(pipeline, "07-no-referral")
    assert result.outgoing == ()
    assert [f.kind for f in result.facts] == ["no-referral", "course-stage"]
    (course,) = result.state.courses  # the visitation talk decides later (the agreement)
    assert (course.current.value, course.open, course.responsible.value) == ("awaiting-visitation", True, "hospital")


def test_exercise_test_travels_as_observation(pipeline: Pipeline) -> None:
    bundle = message(pipeline, "08-exercise-test-with-results")
    request, observation = one(bundle, "ServiceRequest"), one(bundle, "Observation")
    assert {"reference": f"Observation/{observation['id']}"} in request["supportingInfo"]
    assert observation["valueString"].startswith("Ingen iskæmi")
    assert observation["effectiveDateTime"] == "2026-11-26"
    values = {
        c["code"]["coding"][0]["code"]: (c["valueQuantity"]["value"], c["valueQuantity"]["code"])
        for c in observation["component"]
    }
    assert values == {"max-workload": (150, "W"), "mets": (7.5, "{MET}"), "peak-heart-rate": (142, "/min")}
    assert not any("lægefagligt vurderet" in n["text"] for n in request["note"])


def test_exercise_test_without_numbers_has_no_components(pipeline: Pipeline) -> None:
    observation = one(message(pipeline, "09-exercise-test-conclusion-only"), "Observation")
    assert "component" not in observation and observation["valueString"]


def test_sternotomy_line_in_referral(pipeline: Pipeline) -> None:
    notes = [n["text"] for n in one(message(pipeline, "11-sternotomy-bypass-at-discharge"), "ServiceRequest")["note"]]
    assert "Sternotomi 2026-11-02: cykeltest tidligst 2026-12-14." in notes


def test_primary_diagnosis_comes_first(pipeline: Pipeline) -> None:
    request = one(message(pipeline, "14-sks-diagnoses-primary-last"), "ServiceRequest")
    assert [r["coding"][0]["code"] for r in request["reasonCode"]] == ["DI214", "DE119"]
    assert request["reasonCode"][0]["coding"][0]["system"] == "urn:oid:1.2.208.176.2.4"


def test_hospital_pathway_without_elements_has_no_order_detail(pipeline: Pipeline) -> None:
    assert "orderDetail" not in one(message(pipeline, "06-moderate-decision-hospital"), "ServiceRequest")
