"""MedCom HospitalNotification 3.0 received on the hospital's queue: every MedCom example processed with an
`ok` ack or refused for its documented reason; the reader's record and its refusals, each naming the field."""

from __future__ import annotations

import copy
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from integration.domain.course import FixedState
from integration.errors import InvalidInput, UnknownMessageKind
from integration.flows.dispatch import Pipeline, transform
from integration.flows.results import FlowResult, Refusal
from integration.formats.hospital_notification import (
    ACTIVITIES,
    Change,
    Movement,
    parse_hospital_notification,
)
from tests.hospital_notifications import FOLDER, example
from tests.refusals import refusal

NOW = datetime.fromisoformat("2026-11-28T10:00:00+01:00")
DISCHARGE = "discharge"  # the hospital's queue

PROCESSED = {
    "HospitalNotification_Ex_AN_STIN_N.json": "AN_STIN",
    "HospitalNotification_Ex_RE_STIN_O.json": "RE_STIN",
    "HospitalNotification_Ex_STOR_F.json": "STOR",
    "HospitalNotification_Ex_SLOR_G.json": "SLOR",
}
# Refused, and why: INDEX.md caveat (3), the examples' ids such as `g1affa53-…` are not UUIDs (MedCom requires
# UUIDs); TEK_FCC is MedCom's negative test ("message containing errors": no MessageHeader.eventCoding, no
# Encounter.class), so not even recognisable as a MedCom message: dead-lettered without an ack.
REFUSED = {
    "Bundle-5be3a118-64e4-4541-a2fa-a90e3df387d6.xml": "MessageHeader.id",
    "HospitalNotification_Ex_SLHJ_H.json": "MessageHeader.id",
    "HospitalNotification_Ex_MORS_K.json": "MessageHeader.id",
    "HospitalNotification_Ex_STAA_D.json": "MessageHeader.id",
    "HospitalNotification_Ex_STIN_A.json": "Patient.id",
    "HospitalNotification_Ex_TEK_ID_2.json": "Patient.id",
}
NOT_RECOGNISED = {"HospitalNotification_Ex_TEK_FCC.json"}


def _ack_code(result: FlowResult) -> str:
    (fact,) = [f for f in result.facts if f.kind == "acknowledged"]
    return str(fact.detail["code"])


def test_every_medcom_example_is_processed_ok_or_refused_for_its_documented_reason(
    shared: Path, pipeline: Pipeline
) -> None:
    folder = shared.joinpath(*FOLDER)
    examples = sorted(p for p in folder.iterdir() if p.suffix in (".json", ".xml") and p.is_file())
    assert {p.name for p in examples} == set(PROCESSED) | set(REFUSED) | NOT_RECOGNISED
    for path in examples:
        raw = path.read_bytes()
        if path.name in PROCESSED:
            result = transform(raw, pipeline, NOW, DISCHARGE, FixedState())
            assert isinstance(result, FlowResult), path.name
            (notice,) = [f for f in result.facts if f.kind == "hospital-notification"]
            assert notice.detail["letters"] == PROCESSED[path.name]
            assert _ack_code(result) == "ok"
            assert result.patient == "2509479989"
        elif path.name in REFUSED:
            rejection, _answer = refusal(raw, pipeline, NOW, flow=DISCHARGE, state=FixedState())
            assert isinstance(rejection, InvalidInput) and rejection.field == REFUSED[path.name], path.name
            assert "must be a UUID" in str(rejection)
        else:
            rejection, answer = refusal(raw, pipeline, NOW, flow=DISCHARGE, state=FixedState())
            assert isinstance(rejection, UnknownMessageKind) and answer is None


@pytest.mark.parametrize(
    ("name", "letters"),
    [("STIN_A", "STIN"), ("STAA_D", "STAA"), ("SLHJ_H", "SLHJ"), ("MORS_K", "MORS"), ("TEK_ID_2", "STIN")],
)
def test_the_examples_with_uuids_are_processed_ok(shared: Path, pipeline: Pipeline, name: str, letters: str) -> None:
    result = transform(json.dumps(example(shared, name)).encode(), pipeline, NOW, DISCHARGE, FixedState())
    assert isinstance(result, FlowResult)
    assert [f.detail["letters"] for f in result.facts if f.kind == "hospital-notification"] == [letters]
    assert _ack_code(result) == "ok"


def test_the_record_of_a_discharge_home(shared: Path) -> None:
    notice = parse_hospital_notification(example(shared, "SLHJ_H"), received_at=NOW)
    assert notice.activity.code == "discharge-inpatient-home" and notice.activity.movement is Movement.DISCHARGE
    assert notice.letters == "SLHJ" and not notice.deceased
    assert notice.patient.key == "2509479989"
    assert (notice.encounter_status, notice.encounter_class) == ("finished", "IMP")
    assert notice.unit == "265161000016000" and notice.sender == "265161000016000"
    assert notice.episode == "d3d03544-f116-4070-a823-d5c64e6a7c46"
    assert notice.started_at.isoformat() == "2023-03-01T12:00:00+01:00"
    assert notice.ended_at is not None and notice.ended_at.isoformat() == "2023-03-07T09:45:30+01:00"


def test_a_death_is_an_admission_activity_with_the_patient_deceased(shared: Path) -> None:
    notice = parse_hospital_notification(example(shared, "MORS_K"), received_at=NOW)
    assert notice.activity.code == "admit-emergency" and notice.deceased and notice.letters == "MORS"
    assert notice.encounter_status == "finished" and notice.ended_at is not None


def test_leave_and_two_episode_identifiers(shared: Path) -> None:
    leave = parse_hospital_notification(example(shared, "STOR_F"), received_at=NOW)
    assert leave.encounter_status == "onleave" and leave.leave_start is not None and leave.leave_end is None
    two = parse_hospital_notification(example(shared, "TEK_ID_2"), received_at=NOW)
    assert len(two.episodes) == 2 and two.episode == "843080b6-f918-4789-a096-86d52bf50039"


def test_the_activity_table_is_the_value_set() -> None:
    """terminology 1.5.0, ValueSet medcom-hospitalNotification-messageActivities: 18 codes."""
    assert len(ACTIVITIES) == 18
    assert ACTIVITIES["cancel-admit-inpatient"].letters == "AN_STIN"
    assert ACTIVITIES["cancel-admit-inpatient"].change is Change.CANCELLATION
    assert ACTIVITIES["revise-discharge-emergency-home"].letters == "RE_SLHJ"
    assert ACTIVITIES["start-leave-inpatient"].letters == "STOR"


def test_the_activity_table_matches_the_terminology(shared: Path) -> None:
    defs = sorted((shared / "medcom" / "definitions").glob("medcom.fhir.dk.terminology#*"))[-1]
    value_set = json.loads((defs / "ValueSet-medcom-hospitalNotification-messageActivities.json").read_text())
    codes = {c["code"] for inc in value_set["compose"]["include"] for c in inc["concept"]}
    assert codes == set(ACTIVITIES)


def _provenance_of_this_message(bundle: dict[str, Any]) -> dict[str, Any]:
    header = bundle["entry"][0]["resource"]["id"]
    return next(
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Provenance"
        and e["resource"]["target"][0]["reference"] == f"MessageHeader/{header}"
    )


def _resource(bundle: dict[str, Any], rtype: str) -> dict[str, Any]:
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype)


def _unknown_activity(b: dict[str, Any]) -> None:
    _provenance_of_this_message(b)["activity"]["coding"][0]["code"] = "reply-message"


def _replacement_number(b: dict[str, Any]) -> None:
    _resource(b, "Patient")["identifier"] = [{"system": "urn:oid:1.2.208.176.1.6.1.1", "value": "250147X1"}]


def _no_episode(b: dict[str, Any]) -> None:
    del _resource(b, "Encounter")["episodeOfCare"]


def _onleave_without_start(b: dict[str, Any]) -> None:
    del _resource(b, "Encounter")["extension"]


def _no_provenance_for_this_message(b: dict[str, Any]) -> None:
    _provenance_of_this_message(b)["target"] = [
        {"reference": "MessageHeader/" + "0" * 8 + "-0000-4000-8000-" + "0" * 12}
    ]


def _other_class(b: dict[str, Any]) -> None:
    _resource(b, "Encounter")["class"]["code"] = "AMB"


@pytest.mark.parametrize(
    ("change", "name", "field"),
    [
        (_unknown_activity, "STOR_F", "Provenance.activity"),
        (_replacement_number, "STOR_F", "Patient.identifier"),
        (_no_episode, "STOR_F", "Encounter.episodeOfCare"),
        (_onleave_without_start, "STOR_F", "Encounter.extension[leavePeriod].valuePeriod.start"),
        (_no_provenance_for_this_message, "STOR_F", "Provenance"),
        (_other_class, "STOR_F", "Encounter.class"),
    ],
)
def test_a_notification_that_breaks_the_profile_is_refused_naming_the_field(
    shared: Path, pipeline: Pipeline, change: Any, name: str, field: str
) -> None:
    bundle = copy.deepcopy(example(shared, name))
    change(bundle)
    rejection, answer = refusal(json.dumps(bundle).encode(), pipeline, NOW, flow=DISCHARGE, state=FixedState())
    assert isinstance(rejection, InvalidInput) and rejection.field.startswith(field), (rejection.field, str(rejection))
    assert answer is not None
    if field == "Provenance":  # the ack is addressed from this message's Provenance: none can be made
        assert [f.kind for f in answer.facts] == ["not-acknowledged"]
    else:
        assert _ack_code(answer) == "fatal-error"
    assert "250147X1" not in str(rejection)


def test_on_another_queue_it_is_answered_that_we_cannot_receive_it_there(shared: Path, pipeline: Pipeline) -> None:
    result = transform(json.dumps(example(shared, "STIN_A")).encode(), pipeline, NOW, "hotline", FixedState())
    assert isinstance(result, Refusal) and isinstance(result.rejection, UnknownMessageKind)


def test_only_an_earlier_exchanges_provenance_may_name_an_agent_outside_the_bundle(
    shared: Path, pipeline: Pipeline
) -> None:
    """MedCom's chain: the STIN's Provenance in an STOR names the admitting unit, which the STOR does not
    carry (accepted, as the examples do); the agent of this message's own Provenance must resolve."""
    bundle = copy.deepcopy(example(shared, "STOR_F"))
    _provenance_of_this_message(bundle)["agent"][0]["who"]["reference"] = (
        "Organization/" + "1" * 8 + "-1111-4111-8111-" + "1" * 12
    )
    rejection, _ = refusal(json.dumps(bundle).encode(), pipeline, NOW, flow=DISCHARGE, state=FixedState())
    assert isinstance(rejection, InvalidInput) and rejection.field == "Provenance.agent[0].who"


def test_a_notification_with_active_content_in_a_narrative_is_refused(shared: Path, pipeline: Pipeline) -> None:
    bundle = copy.deepcopy(example(shared, "STOR_F"))
    encounter = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Encounter")
    encounter["text"] = {
        "status": "generated",
        "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p onmouseover="alert(1)">Indlagt</p></div>',
    }
    rejection, answer = refusal(json.dumps(bundle).encode(), pipeline, NOW, flow=DISCHARGE, state=FixedState())
    assert isinstance(rejection, InvalidInput) and rejection.field == "Encounter.text.div"
    assert answer is not None and _ack_code(answer) == "fatal-error"
