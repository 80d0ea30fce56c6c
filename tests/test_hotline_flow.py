"""The hotline flow through the transform: routes, forwarded requests, automatic replies, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from typing import Any

import pytest

from integration.domain.course import Course, FixedState, Referrer, Stage
from integration.errors import InvalidInput
from integration.flows.dispatch import Pipeline, transform
from tests.conftest import GOLDEN

HOTLINE = GOLDEN / "hotline"
AALBORG, THISTED = "715541000016001", "715581000016005"
OPEN = Course("2512489996", AALBORG, "851", True, "hospital")
CLOSED = Course("2512489996", AALBORG, "851", False, "gp")


def run(pipeline: Pipeline, name: str, at: str, course: Course | None) -> list[dict[str, Any]]:
    raw = (HOTLINE / f"{name}.request.json").read_bytes()
    result = transform(
        raw,
        pipeline,
        datetime.fromisoformat(at),
        state=FixedState(courses={course.patient: course} if course else {}),
    )
    assert result.patient == json.loads(raw)["patient"]["cpr"]
    return [o.as_json() | {"id": o.id, "contentType": o.content_type} for o in result.outgoing]


def keys(outputs: list[dict[str, Any]]) -> list[str]:
    return [o["route"]["routingKey"] for o in outputs]


def test_routine_in_open_hours_goes_to_the_responsible_department_without_reply(pipeline: Pipeline) -> None:
    outputs = run(pipeline, "municipality-routine", "2026-11-23T10:00:00+01:00", OPEN)
    assert keys(outputs) == [f"hotline.department.{AALBORG}"]
    (forward,) = outputs
    assert forward["route"]["exchange"] == "rehab.hotline" and forward["contentType"] == "application/json"
    assert forward["message"] == json.loads((HOTLINE / "municipality-routine.request.json").read_text())
    assert forward["id"] == "6b1c9a52-3f0e-4d2b-9a1f-0c2d4e6f8a10"


def test_routine_after_hours_is_queued_and_the_sender_told_when(pipeline: Pipeline) -> None:
    outputs = run(pipeline, "municipality-routine", "2026-11-27T15:00:00+01:00", OPEN)  # Friday 15:00
    assert keys(outputs) == [f"hotline.department.{AALBORG}", "hotline.reply.434751000016002"]
    reply = outputs[1]["message"]
    assert reply["kind"] == "after-hours" and reply["answerFrom"] == "2026-11-30T08:00+01:00"
    assert reply["inReplyTo"] == "6b1c9a52-3f0e-4d2b-9a1f-0c2d4e6f8a10" and reply["recipient"] == {
        "sor": "434751000016002"
    }
    assert "30-11-2026 kl. 08:00" in reply["text"] and "2512489996" not in json.dumps(reply)


def test_acute_goes_to_on_call_with_the_contact_in_the_reply(pipeline: Pipeline) -> None:
    outputs = run(pipeline, "municipality-acute", "2026-11-23T22:00:00+01:00", OPEN)
    assert keys(outputs) == [f"hotline.oncall.{AALBORG}", "hotline.reply.434751000016002"]
    reply = outputs[1]["message"]
    assert reply["kind"] == "on-call" and reply["onCall"]["phone"] == "+45 97 66 00 00"


def test_closed_course_sends_a_municipality_to_triage_and_says_the_gp_is_responsible(pipeline: Pipeline) -> None:
    outputs = run(pipeline, "municipality-routine", "2026-11-23T10:00:00+01:00", CLOSED)
    assert keys(outputs) == ["hotline.unmatched", "hotline.reply.434751000016002"]
    assert outputs[1]["message"]["kind"] == "responsibility-with-gp"


def test_gp_request_goes_to_the_department_the_gp_addressed(pipeline: Pipeline) -> None:
    outputs = run(pipeline, "gp-addressed-department", "2026-11-23T10:00:00+01:00", OPEN)
    assert keys(outputs) == [f"hotline.department.{THISTED}"]


def test_patient_without_course_and_no_department_goes_to_triage(pipeline: Pipeline) -> None:
    outputs = run(pipeline, "patient-without-course", "2026-11-23T10:00:00+01:00", OPEN)
    assert keys(outputs) == ["hotline.unmatched"]


def test_the_reply_is_the_same_on_redelivery(pipeline: Pipeline) -> None:
    first = run(pipeline, "municipality-acute", "2026-11-23T22:00:00+01:00", OPEN)
    again = run(pipeline, "municipality-acute", "2026-11-23T22:00:00+01:00", OPEN)
    assert first == again


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"sender": {"sor": "434751000016002", "ydernummer": "012345"}}, "sender", "not allowed"),
        ({"sender": {}}, "sender", "at least"),
        ({"urgency": "soon"}, "urgency", "unknown value 'soon'"),
        ({"patient": {"cpr": "3213489996"}}, "patient.cpr", "not a real date"),
        ({"text": "  "}, "text", "required format"),
        ({"sentAt": "2026-11-23T09:58:00"}, "sentAt", "required format"),
    ],
    ids=["two-sender-ids", "no-sender", "bad-urgency", "impossible-cpr", "blank-text", "no-zone"],
)
def test_bad_advice_requests_are_rejected_clearly(
    pipeline: Pipeline, change: dict[str, Any], field: str, words: str
) -> None:
    doc = json.loads((HOTLINE / "municipality-routine.request.json").read_text()) | change
    with pytest.raises(InvalidInput) as caught:
        transform(json.dumps(doc).encode(), pipeline, datetime.fromisoformat("2026-11-23T10:00:00+01:00"))
    assert caught.value.field == field and words in caught.value.problem


def test_transform_cli_with_receipt_time_and_state_file() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "integration",
            "transform",
            str(HOTLINE / "municipality-routine.request.json"),
            "--at",
            "2026-11-28T10:00:00+01:00",
            "--state",
            str(HOTLINE / "state-open-course.json"),
        ],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    outputs = json.loads(done.stdout)
    assert [o["route"]["routingKey"] for o in outputs] == [
        f"hotline.department.{AALBORG}",
        "hotline.reply.434751000016002",
    ]
    assert outputs[1]["message"]["answerFrom"] == "2026-11-30T08:00+01:00"  # Saturday → Monday


def test_transform_cli_refuses_a_receipt_time_without_zone() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "integration",
            "transform",
            str(HOTLINE / "municipality-routine.request.json"),
            "--at",
            "2026-11-28T10:00",
        ],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 2 and b"needs a time zone" in done.stderr


GP_COURSE = Course("2512489996", "", "851", True, "gp", stage=Stage.MUNICIPAL, referrer=Referrer.GP, gp="012345")


def test_a_course_the_gp_referred_sends_the_municipality_to_the_gp(pipeline: Pipeline) -> None:
    outputs = run(pipeline, "municipality-routine", "2026-11-23T10:00:00+01:00", GP_COURSE)
    assert keys(outputs) == ["hotline.gp.012345", "hotline.reply.434751000016002"]
    reply = outputs[1]["message"]
    assert reply["kind"] == "to-gp" and "praktiserende læge" in reply["text"] and "onCall" not in reply


def test_an_acute_question_on_a_gp_course_also_gets_someone_to_ring(pipeline: Pipeline) -> None:
    outputs = run(pipeline, "municipality-acute", "2026-11-23T10:00:00+01:00", GP_COURSE)
    assert keys(outputs) == ["hotline.gp.012345", "hotline.reply.434751000016002"]
    reply = outputs[1]["message"]
    assert reply["kind"] == "on-call" and reply["onCall"]["phone"] in reply["text"]


def test_a_carecommunication_on_a_gp_course_goes_to_the_gp_with_a_medcom_reply(pipeline: Pipeline) -> None:
    raw = (HOTLINE / "municipality-routine.carecommunication.json").read_bytes()
    patient = next(e["resource"] for e in json.loads(raw)["entry"] if e["resource"]["resourceType"] == "Patient")[
        "identifier"
    ][0]["value"]
    course = Course(patient, "", "851", True, "gp", stage=Stage.MUNICIPAL, referrer=Referrer.GP, gp="012345")
    result = transform(
        raw, pipeline, datetime.fromisoformat("2026-11-23T10:00:00+01:00"), state=FixedState(courses={patient: course})
    )
    routed = [o for o in result.outgoing if o.route.exchange == "rehab.hotline"]
    assert [o.route.routing_key for o in routed] == ["hotline.gp.012345", "hotline.reply.434751000016002"]
    reply = routed[1].message
    assert reply["entry"][0]["resource"]["eventCoding"]["code"] == "care-communication-message"
    communication = next(e["resource"] for e in reply["entry"] if e["resource"]["resourceType"] == "Communication")
    assert "praktiserende læge" in json.dumps(communication, ensure_ascii=False)
