"""The referral's update and cancellation (MedCom's draft update-referral and cancel-referral), built at the
messages level the way `flows.referral.build_referral_message` builds a new one, and the event codes kept in
one place (terminology.yaml `referralEvents`)."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from integration.config import PROJECT_ROOT
from integration.conformance.touchstone import BY_EVENT, REFERRAL, assertion_findings
from integration.conformance.validation import Unsendable, validate_message
from integration.domain.pathway import choose_pathway
from integration.domain.records import DischargeEvent, Setting
from integration.domain.referral_rules import referral_notes
from integration.domain.risk import stratify
from integration.errors import ConfigurationError
from integration.fhir.ids import derived_id
from integration.fhir.terminology import Coding, Terminology
from integration.flows.dispatch import Pipeline
from integration.flows.referral import ReferralContext, build_referral_message
from integration.formats.discharge_event import parse_discharge_event
from integration.mappings import load_mappings
from integration.messages.envelope import gp_organization, messaging_organization, patient_resource
from integration.messages.referral import exercise_test_observation, referral_message, risk_assessment, service_request
from tests.conftest import FIXED_NOW, GOLDEN

SAMPLE = GOLDEN / "discharge" / "01-municipal-gop-general-sternotomy.event.json"
EVENTS = "http://medcomehmi.dk/ig/dk-medcom-ref-lm/CodeSystem/ehmi-message-event-cs"
RFC3986 = "urn:ietf:rfc:3986"
UPDATE_ID = "9d2c4b1e-7a55-4c1b-8e0f-3a6b2d9c5e71"  # the update's own event id


@pytest.fixture(scope="module")
def ctx(pipeline: Pipeline) -> ReferralContext:
    return pipeline.referral


@pytest.fixture(scope="module")
def original(pipeline: Pipeline) -> DischargeEvent:
    return parse_discharge_event(json.loads(SAMPLE.read_bytes()), pipeline.discharge_contract)


def build(event: DischargeEvent, ctx: ReferralContext, message_event: str = "new", **thread: Any) -> dict[str, Any]:
    """`build_referral_message`'s steps, with the message's event and the ServiceRequest's keywords."""
    terms, rules = ctx.terminology, ctx.rules
    risk = stratify(event.risk_criteria, event.clinician_risk_group, rules.risk_policy)
    pathway = choose_pathway(event, risk)
    assert pathway is not None and pathway.performer is Setting.MUNICIPALITY
    receiver = ctx.directory.municipal_receiver(event.patient.municipality_code)
    ids = partial(derived_id, event.event_id if message_event == "new" else f"{event.event_id}/{message_event}")
    sender = messaging_organization(event.hospital, terms)
    receiver_org = messaging_organization(receiver, terms)
    gp = event.patient.gp
    gp_org = gp_organization(gp.sor, gp.ydernummer, terms) if gp else None
    patient = patient_resource(event.patient, ids("Patient"), gp_org, terms)
    test = event.exercise_test
    observation = exercise_test_observation(ids("Observation"), test, patient, sender, terms) if test else None
    assessment = risk_assessment(ids("RiskAssessment"), risk, event, patient, sender, observation, rules, terms)
    supporting = [assessment] + ([observation] if observation else [])
    notes = referral_notes(event, risk, pathway, rules)
    request = service_request(
        ids("ServiceRequest"), event, pathway, notes, patient, sender, receiver_org, supporting, rules, terms, **thread
    )
    content = [patient, *supporting] + ([gp_org] if gp_org else [])
    return referral_message(ids, request, content, sender, receiver_org, FIXED_NOW, terms, event=message_event)


def header(bundle: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = bundle["entry"][0]["resource"]
    return found


def request_of(bundle: dict[str, Any]) -> dict[str, Any]:
    (found,) = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest"]
    request: dict[str, Any] = found
    return request


def rows(resource: dict[str, Any]) -> dict[str, str]:
    """The narrative's rows, label → value (the last of a repeated label)."""
    return dict(re.findall(r"<p><b>([^<]+)</b>: ([^<]*)</p>", resource["text"]["div"]))


def problems(bundle: dict[str, Any]) -> list[str]:
    return [f"{f.field}: {f.problem}" for f in assertion_findings(bundle)]


def update_of(original: DischargeEvent, ctx: ReferralContext, **thread: Any) -> dict[str, Any]:
    event = dataclasses.replace(original, event_id=UPDATE_ID)
    return build(event, ctx, "update", **thread)


# --- the helper is the flow's builder, and a new referral is unchanged ---------------------------------------------


def test_the_helper_builds_exactly_what_the_flow_builds(original: DischargeEvent, ctx: ReferralContext) -> None:
    risk = stratify(original.risk_criteria, original.clinician_risk_group, ctx.rules.risk_policy)
    pathway = choose_pathway(original, risk)
    assert pathway is not None
    receiver = ctx.directory.municipal_receiver(original.patient.municipality_code)
    assert build(original, ctx) == build_referral_message(original, risk, pathway, receiver, ctx, FIXED_NOW)


def test_a_new_referral_gains_no_element_and_no_row(original: DischargeEvent, ctx: ReferralContext) -> None:
    request = request_of(build(original, ctx))
    assert "replaces" not in request and "basedOn" not in request and request["status"] == "active"
    assert request["identifier"] == [{"system": RFC3986, "value": f"urn:uuid:{original.event_id}"}]
    assert not {"Status", "Erstatter henvisning", "Følger henvisning"} & rows(request).keys()
    assert header(build(original, ctx))["eventCoding"] == {
        "system": EVENTS,
        "code": "new-referral",
        "display": "Ny henvisning",
    }


# --- update -------------------------------------------------------------------------------------------------------


def test_an_update_passes_the_gate_and_names_what_it_replaces(original: DischargeEvent, ctx: ReferralContext) -> None:
    replaced = f"urn:uuid:{original.event_id}"
    bundle = update_of(original, ctx, replaces=replaced)
    validate_message(bundle)
    assert header(bundle)["eventCoding"] == {
        "system": EVENTS,
        "code": "update-referral",
        "display": "Opdater henvisning",
    }
    assert rows(header(bundle))["Hændelse"] == "update-referral (Opdater henvisning)"
    request = request_of(bundle)
    assert request["replaces"] == [{"identifier": {"system": RFC3986, "value": replaced}}]
    assert request["identifier"] == [{"system": RFC3986, "value": f"urn:uuid:{UPDATE_ID}"}]
    assert request["status"] == "active" and "basedOn" not in request
    assert rows(request)["Erstatter henvisning"] == replaced and "Status" not in rows(request)
    assert list(request)[list(request).index("identifier") + 1 : list(request).index("status")] == ["replaces"]


def test_an_update_without_what_it_replaces_fails_its_assertion(original: DischargeEvent, ctx: ReferralContext) -> None:
    bundle = update_of(original, ctx)
    assert problems(bundle) == ["ServiceRequest.replaces: the ServiceRequest names what it replaces: not met"]
    with pytest.raises(Unsendable) as refused:
        validate_message(bundle)
    assert refused.value.field == "ServiceRequest.replaces"


def test_an_update_may_give_its_own_identifier(original: DischargeEvent, ctx: ReferralContext) -> None:
    bundle = update_of(original, ctx, identifier="urn:uuid:0c1d2e3f-4a5b-4c6d-8e7f-8091a2b3c4d5", replaces="urn:uuid:x")
    assert request_of(bundle)["identifier"][0]["value"] == "urn:uuid:0c1d2e3f-4a5b-4c6d-8e7f-8091a2b3c4d5"


def test_an_empty_replaced_identifier_does_not_leave(original: DischargeEvent, ctx: ReferralContext) -> None:
    bundle = update_of(original, ctx, replaces="")
    assert request_of(bundle)["replaces"] == [{"identifier": {"system": RFC3986, "value": ""}}]
    with pytest.raises(Unsendable):
        validate_message(bundle)


# --- cancellation -------------------------------------------------------------------------------------------------


def test_a_cancellation_passes_the_gate_revoked(original: DischargeEvent, ctx: ReferralContext) -> None:
    bundle = build(original, ctx, "cancel", status="revoked")
    validate_message(bundle)
    assert header(bundle)["eventCoding"] == {
        "system": EVENTS,
        "code": "cancel-referral",
        "display": "Annuller henvisning",
    }
    assert rows(header(bundle))["Hændelse"] == "cancel-referral (Annuller henvisning)"
    request = request_of(bundle)
    assert request["status"] == "revoked"
    assert request["identifier"] == [{"system": RFC3986, "value": f"urn:uuid:{original.event_id}"}]  # the one sent
    assert "replaces" not in request and "basedOn" not in request
    assert rows(request)["Status"] == "annulleret (revoked)"
    assert any(r["resource"]["resourceType"] == "RiskAssessment" for r in bundle["entry"])  # sent as it was


def test_a_cancellation_not_revoked_fails_its_assertion(original: DischargeEvent, ctx: ReferralContext) -> None:
    bundle = build(original, ctx, "cancel")
    assert problems(bundle) == ["ServiceRequest.status: the ServiceRequest is revoked: not met"]
    with pytest.raises(Unsendable) as refused:
        validate_message(bundle)
    assert refused.value.field == "ServiceRequest.status"


def test_a_cancellation_without_its_risk_assessment_fails_the_referral_assertion(
    original: DischargeEvent, ctx: ReferralContext
) -> None:
    bundle = build(original, ctx, "cancel", status="revoked")
    request = request_of(bundle)
    request["supportingInfo"] = [r for r in request["supportingInfo"] if not r["reference"].startswith("RiskAs")]
    assert problems(bundle) == ["Bundle: a RiskAssessment supports the referral: not met"]


def test_update_and_cancel_keep_every_referral_assertion() -> None:
    assert BY_EVENT["update-referral"][: len(REFERRAL)] == REFERRAL
    assert BY_EVENT["cancel-referral"][: len(REFERRAL)] == REFERRAL
    assert len(BY_EVENT["update-referral"]) == len(BY_EVENT["cancel-referral"]) == len(REFERRAL) + 1


def test_a_new_referral_is_held_to_the_referral_assertions_only(original: DischargeEvent, ctx: ReferralContext) -> None:
    assert problems(build(original, ctx, "new", replaces="urn:uuid:x")) == []


# --- step-down and the occasion of a referral ---------------------------------------------------------------------


def test_a_step_down_follows_the_specialised_referral(original: DischargeEvent, ctx: ReferralContext) -> None:
    followed = "urn:uuid:5e4d3c2b-1a09-4f8e-9d7c-6b5a4f3e2d1c"
    event = dataclasses.replace(original, event_type="step-down")
    bundle = build(event, ctx, based_on=followed)
    validate_message(bundle)
    request = request_of(bundle)
    assert request["basedOn"] == [{"identifier": {"system": RFC3986, "value": followed}}]
    assert "replaces" not in request
    assert rows(request)["Følger henvisning"] == followed
    assert rows(request)["Henvist ved"] == "overgang fra specialiseret genoptræning på hospital"


@pytest.mark.parametrize(
    ("event_type", "occasion", "requester"),
    [
        ("discharge", "udskrivelse", "Henvisende afdeling"),
        ("visitation", "visitationssamtale", "Henvisende afdeling"),
        ("step-down", "overgang fra specialiseret genoptræning på hospital", "Henvisende afdeling"),
        ("gp-referral", "egen læge", "Henvisende læge"),
    ],
)
def test_the_occasion_and_the_referrer_by_event_type(
    original: DischargeEvent, ctx: ReferralContext, event_type: str, occasion: str, requester: str
) -> None:
    request = request_of(build(dataclasses.replace(original, event_type=event_type), ctx))
    found = rows(request)
    assert found["Henvist ved"] == occasion
    assert found[requester].startswith(original.hospital.name)
    assert not {"Henvisende afdeling", "Henvisende læge"} - {requester} & found.keys()


def test_an_unknown_event_type_is_a_defect_not_a_guess(original: DischargeEvent, ctx: ReferralContext) -> None:
    with pytest.raises(KeyError, match="transfer"):
        build(dataclasses.replace(original, event_type="transfer"), ctx)


def test_an_unknown_message_event_is_refused(original: DischargeEvent, ctx: ReferralContext) -> None:
    with pytest.raises(KeyError, match="retract"):
        build(original, ctx, "retract")


# --- one place for the codes --------------------------------------------------------------------------------------


def test_the_three_codes_are_read_from_terminology_yaml(ctx: ReferralContext) -> None:
    doc = yaml.safe_load((PROJECT_ROOT / "mappings" / "terminology.yaml").read_text(encoding="utf-8"))
    assert "referralEvent" not in doc
    assert dict(ctx.terminology.referral_events) == {k: Coding(**v) for k, v in doc["referralEvents"].items()}
    assert {k: c.code for k, c in ctx.terminology.referral_events.items()} == {
        "new": "new-referral",
        "update": "update-referral",
        "cancel": "cancel-referral",
    }
    assert {c.system for c in ctx.terminology.referral_events.values()} == {EVENTS}


def test_an_edited_code_changes_the_message(tmp_path: Path, original: DischargeEvent, ctx: ReferralContext) -> None:
    mappings = tmp_path / "mappings"
    shutil.copytree(PROJECT_ROOT / "mappings", mappings)
    path = mappings / "terminology.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace('"update-referral"', '"amend-referral"'), "utf-8")
    terms = load_mappings(mappings).terminology
    bundle = build(original, dataclasses.replace(ctx, terminology=terms), "update", replaces="urn:uuid:x")
    assert header(bundle)["eventCoding"]["code"] == "amend-referral"


def test_a_missing_event_is_a_configuration_error(tmp_path: Path) -> None:
    mappings = tmp_path / "mappings"
    shutil.copytree(PROJECT_ROOT / "mappings", mappings)
    doc = yaml.safe_load((mappings / "terminology.yaml").read_text(encoding="utf-8"))
    del doc["referralEvents"]["cancel"]
    (mappings / "terminology.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    with pytest.raises(ConfigurationError, match="lacks the key 'cancel'"):
        load_mappings(mappings)
    with pytest.raises(KeyError):
        Terminology.from_mapping({**doc, "referralEvents": {}})


def test_no_builder_spells_an_event_code() -> None:
    sources = [
        *(PROJECT_ROOT / "integration" / "messages").glob("*.py"),
        *(PROJECT_ROOT / "integration" / "flows").glob("*.py"),
    ]
    spelled = [
        p.name for p in sources if re.search(r"[\"'](new|update|cancel)-referral[\"']", p.read_text(encoding="utf-8"))
    ]
    assert spelled == []
