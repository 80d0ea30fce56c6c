"""A hotline request while the patient is admitted (HospitalNotification STIN/STAA paused the course): the original
goes where it always went, and a copy to the admitting department (issue #15)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from integration.conformance.validation import messaging_problems
from integration.domain.course import Course, FixedState
from integration.flows.dispatch import Pipeline, transform
from integration.flows.results import FlowResult
from integration.formats.care_communication import parse_care_communication
from tests.conftest import GOLDEN
from tests.test_care_communication import SATURDAY, _entries, _municipal_nursing_to_gp, _with_hotline_for

HOTLINE = GOLDEN / "hotline"
AALBORG, THISTED, HJORRING = "715541000016001", "715581000016005", "716141000016004"
UNKNOWN_UNIT = "999999000016009"
SINCE = datetime.fromisoformat("2026-11-20T08:30:00+01:00")
OPEN = Course("2512489996", AALBORG, "851", True, "hospital")
ADMITTED = replace(OPEN, admitted_to=HJORRING, admitted_since=SINCE, admission_episode="ep-1")
MONDAY_10 = datetime.fromisoformat("2026-11-23T10:00:00+01:00")


def _json_request(pipeline: Pipeline, course: Course, name: str = "municipality-routine") -> FlowResult:
    raw = (HOTLINE / f"{name}.request.json").read_bytes()
    result = transform(raw, pipeline, MONDAY_10, state=FixedState(courses={course.patient: course}))
    assert isinstance(result, FlowResult)
    return result


def _facts(result: FlowResult, kind: str) -> list[dict[str, Any]]:
    return [dict(f.detail) for f in result.facts if f.kind == kind]


def test_a_json_request_while_admitted_goes_to_the_responsible_department_and_a_copy_to_the_admitting(
    pipeline: Pipeline,
) -> None:
    result = _json_request(pipeline, ADMITTED)
    original, copy = result.outgoing
    assert original.route.routing_key == f"hotline.department.{AALBORG}"
    assert copy.route.routing_key == f"hotline.department.{HJORRING}" and copy.route.exchange == "rehab.hotline"
    document = json.loads((HOTLINE / "municipality-routine.request.json").read_text())
    assert copy.message == document == original.message and copy.content_type == "application/json"
    assert copy.id != original.id and not copy.expects_ack
    (fact,) = _facts(result, "hotline-copied")
    assert fact == {
        "requestId": original.id,
        "unit": HJORRING,
        "messageId": copy.id,
        "admittedSince": SINCE.isoformat(),
    }
    # the same request again (a redelivery) makes the same copy
    assert _json_request(pipeline, ADMITTED).outgoing[1].id == copy.id


def test_an_acute_request_while_admitted_goes_to_on_call_and_a_copy_to_the_admitting_inbox(
    pipeline: Pipeline,
) -> None:
    keys = [o.route.routing_key for o in _json_request(pipeline, ADMITTED, "municipality-acute").outgoing]
    assert keys == [f"hotline.oncall.{AALBORG}", "hotline.reply.434751000016002", f"hotline.department.{HJORRING}"]


def test_no_copy_without_a_pause(pipeline: Pipeline) -> None:
    for course in (OPEN, replace(ADMITTED, open=False, stage=None)):  # a closed course is not paused
        result = _json_request(pipeline, course)
        assert [o.route.routing_key for o in result.outgoing][:1] != [f"hotline.department.{HJORRING}"]
        assert all(o.route.routing_key != f"hotline.department.{HJORRING}" for o in result.outgoing)
        assert not _facts(result, "hotline-copied") and not _facts(result, "hotline-copy-not-sent")


def test_no_second_message_when_the_admitting_department_is_the_one_the_request_goes_to(pipeline: Pipeline) -> None:
    result = _json_request(pipeline, replace(ADMITTED, admitted_to=AALBORG))
    assert [o.route.routing_key for o in result.outgoing] == [f"hotline.department.{AALBORG}"]
    assert not _facts(result, "hotline-copied")


def test_an_admitting_unit_not_in_the_mappings_gets_no_copy_and_the_audit_says_which_unit(pipeline: Pipeline) -> None:
    result = _json_request(pipeline, replace(ADMITTED, admitted_to=UNKNOWN_UNIT))
    assert [o.route.routing_key for o in result.outgoing] == [f"hotline.department.{AALBORG}"]
    (fact,) = _facts(result, "hotline-copy-not-sent")
    assert fact["unit"] == UNKNOWN_UNIT and "departments.yaml" in fact["why"]
    assert OPEN.patient not in json.dumps([dict(f.detail) for f in result.facts])
    assert _facts(result, "hotline-routed")  # routed as always


def _care_communication(shared: Path, pipeline: Pipeline, admitted_to: str) -> tuple[dict[str, Any], FlowResult]:
    path = _municipal_nursing_to_gp(shared)
    bundle = json.loads(path.read_bytes())
    request = parse_care_communication(bundle, pipeline.municipality_sors)
    configured = _with_hotline_for(pipeline, request.addressed_department or "")
    course = replace(ADMITTED, patient=request.patient, referring_department=request.addressed_department or "")
    course = replace(course, admitted_to=admitted_to)
    result = transform(
        path.read_bytes(), configured, SATURDAY, flow="hotline", state=FixedState(courses={course.patient: course})
    )
    assert isinstance(result, FlowResult)
    return bundle, result


def test_a_carecommunication_while_admitted_is_forwarded_to_the_admitting_department_as_a_medcom_message(
    shared: Path, pipeline: Pipeline
) -> None:
    bundle, result = _care_communication(shared, pipeline, HJORRING)
    header_in = bundle["entry"][0]["resource"]
    original, reply, copy, _ack = result.outgoing
    assert original.message == bundle and reply.route.routing_key.startswith("hotline.reply.")
    assert copy.route.routing_key == f"hotline.department.{HJORRING}" and copy.expects_ack
    forward = copy.message
    assert messaging_problems(forward) == []
    header = forward["entry"][0]["resource"]
    # a message of its own: new Bundle, MessageHeader and thread ids
    assert forward["id"] != bundle["id"] and header["id"] != header_in["id"] and copy.id == header["id"]
    assert len(header["destination"]) == 1 and "cc" not in json.dumps(header["destination"][0].get("extension"))
    receiver = next(
        o
        for o in _entries(forward, "Organization")
        if header["destination"][0]["receiver"]["reference"].endswith(o["id"])
    )
    assert receiver["identifier"][0]["value"] == HJORRING
    assert header["destination"][0]["endpoint"].endswith(HJORRING)
    assert header["sender"] == header_in["destination"][0]["receiver"]  # the department the request went to
    comm_in = next(r for r in _entries(bundle, "Communication") if header_in["focus"][0]["reference"].endswith(r["id"]))
    (comm,) = _entries(forward, "Communication")
    assert comm["identifier"] != comm_in["identifier"]  # "SHALL be new when forwarding"
    assert comm["payload"][:-1] == comm_in["payload"]  # attachments with their content
    assert "indlagt" in comm["payload"][-1]["contentString"]
    provenances = _entries(forward, "Provenance")
    assert len(provenances) == len(_entries(bundle, "Provenance")) + 1
    ours = next(p for p in provenances if p["target"][0]["reference"] == f"MessageHeader/{header['id']}")
    assert ours["activity"]["coding"][0]["code"] == "forward-message"
    assert {"role": "revision", "what": {"reference": f"MessageHeader/{header_in['id']}"}} in ours["entity"]
    (fact,) = _facts(result, "hotline-copied")
    assert fact["unit"] == HJORRING and fact["messageId"] == header["id"]
    # a redelivery rebuilds the same forward
    assert _care_communication(shared, pipeline, HJORRING)[1].outgoing[2].message == forward


def test_a_carecommunication_for_an_unknown_admitting_unit_is_routed_as_always_without_a_copy(
    shared: Path, pipeline: Pipeline
) -> None:
    bundle, result = _care_communication(shared, pipeline, UNKNOWN_UNIT)
    original, _reply, ack = result.outgoing
    assert original.message == bundle and ack.route.routing_key.startswith("ack.")
    (fact,) = _facts(result, "hotline-copy-not-sent")
    assert fact["unit"] == UNKNOWN_UNIT
