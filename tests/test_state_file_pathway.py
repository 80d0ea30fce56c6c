"""`integration transform --state FILE` takes where a course stands on the pathway (stage, referrer, GP,
discharge, heart failure, the referral in force …) so that a visitation can be run offline; what it cannot
use is refused naming the place in the file, never repeating the value."""

from __future__ import annotations

import json
import os
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import click
import pytest

from integration.cli.state import state_file
from integration.domain.course import Course, Referrer, Responsible, SentReferral, Stage
from integration.log import cpr_numbers_in
from tests.cli_runs import run_integration
from tests.conftest import GOLDEN

CPR = "2512489996"
AALBORG = "715541000016001"
REQUEST = GOLDEN / "hotline" / "municipality-routine.request.json"
REFERRAL = {
    "serviceRequest": "urn:uuid:5b0e1c34-0d6a-4f0e-9a39-0d2f4f1d2c11",
    "eventId": "5b0e1c34-0d6a-4f0e-9a39-0d2f4f1d2c11",
    "performer": "municipality",
    "receiver": "434751000016002",
    "category": "gop-general",
    "riskGroup": "moderate",
    "elements": ["exercise", "diet"],
    "closingPlace": "municipality",
    "ambulatoryControl": False,
}
BASE = {"patient": CPR, "referringDepartment": AALBORG, "municipalityCode": "851"}
FULL = {
    **BASE,
    "open": True,
    "responsible": "hospital",
    "stage": "municipal",
    "referrer": "gp",
    "gp": "012345",
    "dischargeEvent": "e-1",
    "dischargedAt": "2026-11-02T10:15:00+01:00",
    "heartFailure": True,
    "specialisedReferral": "urn:uuid:s-1",
    "municipalStatus": True,
    "closedOn": "2026-12-01",
    "episode": "VN-4711",
    "referral": {**REFERRAL, "municipalityCode": "851"},
}


def read(tmp_path: Path, *courses: dict[str, Any]) -> dict[str, Course]:
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"courses": list(courses)}))
    return dict(state_file(path).courses)  # type: ignore[attr-defined]


def test_every_pathway_field_is_read(tmp_path: Path) -> None:
    assert read(tmp_path, FULL)[CPR] == Course(
        CPR,
        AALBORG,
        "851",
        True,
        Responsible.HOSPITAL,
        Stage.MUNICIPAL,
        SentReferral(
            REFERRAL["serviceRequest"],  # type: ignore[arg-type]
            REFERRAL["eventId"],  # type: ignore[arg-type]
            "municipality",
            "434751000016002",
            "gop-general",
            "moderate",
            ("exercise", "diet"),
            "municipality",
            False,
            "851",
        ),
        Referrer.GP,
        "012345",
        "e-1",
        datetime(2026, 11, 2, 10, 15, tzinfo=timezone(timedelta(hours=1))),
        True,
        "urn:uuid:s-1",
        True,
        closed_on=date(2026, 12, 1),
        episode="VN-4711",
    )


def test_a_course_awaiting_its_visitation_needs_no_open_flag_and_the_older_form_still_reads(tmp_path: Path) -> None:
    course = read(tmp_path, {**BASE, "stage": "awaiting-visitation", "dischargedAt": "2026-11-02T10:15:00Z"})[CPR]
    assert course.open and course.stage is Stage.AWAITING_VISITATION and course.referral is None
    assert course.discharged_at is not None and course.discharged_at.utcoffset() == timedelta(0)
    closed = read(tmp_path, {**BASE, "stage": "not-referred"})[CPR]
    assert not closed.open and closed.responsible is Responsible.GP
    cancelled = read(tmp_path, {**BASE, "stage": "cancelled", "episode": "VN-4711"})[CPR]
    assert not cancelled.open and cancelled.responsible is Responsible.GP and cancelled.episode == "VN-4711"
    older = read(tmp_path, {**BASE, "open": True})[CPR]
    assert older == Course(CPR, AALBORG, "851", True, Responsible.HOSPITAL)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"stage": "halfway"}, "courses[0].stage must be one of awaiting-visitation, specialised, municipal"),
        ({"stage": "closed", "open": True}, "courses[0].open must be false at the stage given"),
        ({"open": None}, "courses[0].open must be true or false"),
        ({"referrer": "neighbour"}, "courses[0].referrer must be one of hospital, gp"),
        ({"gp": "12345"}, "courses[0].gp must be a ydernummer (6 digits)"),
        ({"gp": CPR}, "courses[0].gp must be a ydernummer (6 digits)"),
        ({"dischargedAt": "2026-11-02T10:15:00"}, "courses[0].dischargedAt: needs a time zone"),
        ({"dischargedAt": "2512489996"}, "courses[0].dischargedAt: not an ISO 8601 date and time"),
        ({"dischargedAt": "1850-11-02T10:15:00Z"}, "courses[0].dischargedAt: outside the years 1900 to 2199"),
        ({"dischargedAt": 20261102}, "courses[0].dischargedAt must be text"),
        ({"heartFailure": "yes"}, "courses[0].heartFailure must be true or false"),
        ({"municipalStatus": 1}, "courses[0].municipalStatus must be true or false"),
        ({"closedOn": "2026-02-30"}, "courses[0].closedOn: not a real date"),
        ({"closedOn": "20261201"}, "courses[0].closedOn: not a date as YYYY-MM-DD"),
        ({"closedOn": "2026-12-01T00:00:00+01:00"}, "courses[0].closedOn: not a date as YYYY-MM-DD"),
        ({"dischargeEvent": ""}, "courses[0].dischargeEvent must be text"),
        ({"episode": 4711}, "courses[0].episode must be text"),
        ({"heartfailure": True}, "courses[0] has unknown key(s) heartfailure"),
        ({CPR: True}, "courses[0] has unknown key(s) ?"),
        ({"referral": []}, "courses[0].referral must be an object"),
        ({"referral": {**REFERRAL, "riskGroup": "extreme"}}, "courses[0].referral.riskGroup must be one of low,"),
        ({"referral": {**REFERRAL, "performer": "gp"}}, "courses[0].referral.performer must be one of hospital,"),
        ({"referral": {**REFERRAL, "category": "gop"}}, "courses[0].referral.category must be one of gop-general,"),
        ({"referral": {**REFERRAL, "receiver": "851"}}, "courses[0].referral.receiver must be a SOR code"),
        ({"referral": {**REFERRAL, "elements": "diet"}}, "courses[0].referral.elements must be a list of text"),
        ({"referral": {**REFERRAL, "elements": ["diet", 7]}}, "courses[0].referral.elements[1] must be text"),
        ({"referral": {**REFERRAL, "ambulatoryControl": "no"}}, "courses[0].referral.ambulatoryControl must be true"),
        ({"referral": {k: v for k, v in REFERRAL.items() if k != "eventId"}}, "courses[0].referral.eventId is missing"),
        ({"referral": {**REFERRAL, "risk": "low"}}, "courses[0].referral has unknown key(s) risk"),
    ],
)
def test_what_cannot_be_used_is_refused_naming_the_place(tmp_path: Path, change: dict[str, Any], says: str) -> None:
    with pytest.raises(click.BadParameter) as raised:
        read(tmp_path, {**BASE, "open": True, **change})
    message = str(raised.value.message)
    assert says in message, message
    assert CPR not in message and cpr_numbers_in(message) == []
    assert all(str(v) not in message.split(": ", 1)[1] for v in change.values() if isinstance(v, str) and len(v) > 4)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")} | {"INTEGRATION_AUDIT_DSN": "x"}


def test_transform_runs_with_a_course_on_the_pathway_and_refuses_a_bad_one_with_exit_2(tmp_path: Path) -> None:
    patient = json.loads(REQUEST.read_bytes())["patient"]["cpr"]
    state = tmp_path / "state.json"
    state.write_text(json.dumps([{**FULL, "patient": patient, "stage": "awaiting-visitation", "closedOn": None}]))
    done = run_integration("transform", str(REQUEST), "--state", str(state), text=True, env=_env())
    assert done.returncode == 2 and "courses[0].closedOn must be text" in done.stderr
    del_closed = {k: v for k, v in FULL.items() if k != "closedOn"}
    state.write_text(json.dumps([{**del_closed, "patient": patient, "stage": "awaiting-visitation"}]))
    at = "2026-11-24T10:00:00+01:00"
    done = run_integration("transform", str(REQUEST), "--at", at, "--state", str(state), text=True, env=_env())
    assert done.returncode == 0, done.stderr
    routes = [o["route"]["routingKey"] for o in json.loads(done.stdout)]
    assert routes == [f"hotline.department.{AALBORG}"]  # the course is open: its department answers
