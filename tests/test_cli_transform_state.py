"""`integration transform` is stateless unless told: the same input gives the same output whatever ran before
(an audit store full of courses included), `--state FILE` gives courses and open hotline requests (so a
department's answer can be tried offline), `--store` reads the configured store. Real processes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from integration.adapters.sql.stores import open_audit_store
from integration.domain.course import Course, StateChanges
from tests.cli_runs import run_integration
from tests.conftest import FIXED_NOW, GOLDEN, SHARED

REQUEST = GOLDEN / "hotline" / "municipality-routine.request.json"
CARE_COMMUNICATION = GOLDEN / "hotline" / "municipality-routine.carecommunication.json"
AT = "2026-11-24T10:00:00+01:00"  # a Tuesday morning: the department is open
DEPARTMENT, MUNICIPALITY = "715541000016001", "434751000016002"  # in mappings/hotlines.yaml; Aalborg's SOR


def _env(dsn: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")} | {"INTEGRATION_AUDIT_DSN": dsn}


def _routes(done: Any) -> list[str]:
    assert done.returncode == 0, done.stderr
    return [o["route"]["routingKey"] for o in json.loads(done.stdout)]


def test_transform_reads_no_store_unless_told(tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    patient = json.loads(REQUEST.read_bytes())["patient"]["cpr"]
    store = open_audit_store(dsn)
    store.record([], FIXED_NOW, changes=StateChanges(courses=(Course(patient, DEPARTMENT, "851", True, "hospital"),)))
    store.close()
    without = _routes(run_integration("transform", str(REQUEST), "--at", AT, env=_env(dsn)))
    absent = _routes(run_integration("transform", str(REQUEST), "--at", AT, env=_env(f"sqlite:///{tmp_path}/no.db")))
    assert without == absent == ["hotline.unmatched"]  # no course known: the same answer as with no store at all
    assert not (tmp_path / "no.db").exists()
    told = _routes(run_integration("transform", str(REQUEST), "--at", AT, "--store", env=_env(dsn)))
    assert told == [f"hotline.department.{DEPARTMENT}"]  # the course in the store


def _department_answer(tmp_path: Path) -> tuple[Path, str]:
    """The sample CareCommunication turned round: the department answers the municipality in its thread."""
    bundle = json.loads(CARE_COMMUNICATION.read_bytes())
    header = bundle["entry"][0]["resource"]
    destination = header["destination"][0]
    header["sender"], destination["receiver"] = destination["receiver"], header["sender"]
    header["source"]["endpoint"], destination["endpoint"] = destination["endpoint"], header["source"]["endpoint"]
    communication = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Communication")
    path = tmp_path / "answer.json"
    path.write_text(json.dumps(bundle))
    return path, communication["identifier"][0]["value"]


def test_a_state_file_with_an_open_request_routes_a_departments_answer_to_its_requester(tmp_path: Path) -> None:
    answer, thread = _department_answer(tmp_path)
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"courses": [], "openRequests": [{"threadId": thread, "requester": MUNICIPALITY}]}))
    env = _env(f"sqlite:///{tmp_path}/none.db")
    routed = _routes(run_integration("transform", str(answer), "--at", AT, "--state", str(state), env=env))
    assert routed[0] == f"hotline.reply.{MUNICIPALITY}"
    unmatched = _routes(run_integration("transform", str(answer), "--at", AT, env=env))
    assert unmatched[0] == "hotline.unmatched"  # stateless: no request awaits this answer


def _courses(*courses: tuple[str, str]) -> str:
    """A state file's courses: (patient, referringDepartment) each, open, in municipality 851."""
    fixed = {"municipalityCode": "851", "open": True}
    return json.dumps([{"patient": p, "referringDepartment": d, **fixed} for p, d in courses])


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ('[{"patient": "2512489996", "open": "yes"}]', "courses[0].open must be true or false"),
        ('{"courses": [], "openRequests": [{"threadId": "t"}]}', "openRequests[0].requester is missing"),
        ('{"courses": [], "course": []}', "unknown key(s) course"),
        ('{"courses": [], "courses": []}', "a key appears twice"),
        ('[{"patient": "2512489996",', "malformed JSON: unexpected end of data at line 1"),
        (
            _courses(("2512489996", "715541000016001"), ("2512489996", "715581000016005")),
            "courses[1].patient is the patient of courses[0]",
        ),
        (
            _courses(("2512489996", "x")),
            "courses[0].referringDepartment must be a SOR code",
        ),
        (
            _courses(("2512489996", "7155410000160011234")),
            "courses[0].referringDepartment must be a SOR code",
        ),
        (
            _courses(("25124899961", "715541000016001")),
            "courses[0].patient is neither a CPR number",
        ),
        (
            _courses(("3213489996", "715541000016001")),
            "courses[0].patient is neither a CPR number",
        ),
        (
            _courses(("urn:oid:1.2.208.176.1.6.1.1|2512489996", "715541000016001")),
            "courses[0].patient is neither",
        ),
    ],
)
def test_a_state_file_that_cannot_be_used_is_exit_2_naming_where(tmp_path: Path, content: str, says: str) -> None:
    state = tmp_path / "state.json"
    state.write_text(content)
    done = run_integration("transform", str(REQUEST), "--state", str(state), text=True, env=_env("sqlite:///x"))
    assert done.returncode == 2 and says in done.stderr, done.stderr
    assert "2512489996" not in done.stderr and len(done.stderr.splitlines()) == 1


def test_a_course_for_a_replacement_number_is_read(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    course = {"referringDepartment": "715541000016001", "municipalityCode": "851", "open": True}
    state.write_text(json.dumps([{**course, "patient": "urn:oid:1.2.208.176.1.6.1.1|2501471XY1"}]))
    done = run_integration("transform", str(REQUEST), "--at", AT, "--state", str(state), text=True, env=_env("x"))
    assert done.returncode == 0, done.stderr


def test_state_and_store_together_are_a_usage_error(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text("[]")
    done = run_integration("transform", str(REQUEST), "--state", str(state), "--store", text=True)
    assert done.returncode == 2 and "not both" in done.stderr


def test_the_readmes_state_example_still_works() -> None:
    state = SHARED / "cases" / "edge-inputs" / "state-open-course.json"
    if not state.exists():
        pytest.skip(f"../shared is absent ({state})")
    done = run_integration("transform", str(REQUEST), "--at", "2026-11-28T10:00:00+01:00", "--state", str(state))
    assert done.returncode == 0, done.stderr
