"""How a message names its patient: a CPR number whose birth date fits the message's time (issue 11, point 5),
or a replacement number, X-eCPR or D-eCPR, which is accepted and routed without a course (point 7)."""

from __future__ import annotations

import copy
import io
import json
import sys
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from integration.adapters.memory import InMemoryBroker
from integration.adapters.sql.sqlite import SqliteAuditStore
from integration.bootstrap import build
from integration.config import PROJECT_ROOT, Settings
from integration.conformance.messaging_rules import messaging_findings
from integration.conformance.validation import messaging_problems
from integration.domain.course import Course, FixedState, Responsible
from integration.domain.cpr import born_by, parse_cpr
from integration.domain.identifiers import D_ECPR_SYSTEMS, FORMATS, REPLACEMENT_SYSTEMS, X_ECPR_SYSTEM
from integration.errors import InvalidInput, Rejected
from integration.flows.dispatch import Pipeline, transform
from integration.log import CPR_LIKE, configure_logging
from integration.service.processor import Delivery, RetryPolicy
from tests.cli_runs import run_logged
from tests.conftest import GOLDEN
from tests.refusals import refusal

BORN_2050 = "0101505678"  # 7th digit 5 and year 50: 2050-01-01 by the century rule
X_ECPR = "0101701TT2"
D_ECPR = "1206550VK9"  # dk-core's own example (Region Sjælland)
AALBORG = "715541000016001"
MONDAY = datetime.fromisoformat("2026-11-23T10:00:00+01:00")
JAN_12 = datetime.fromisoformat("2027-01-12T10:20:00+01:00")
EVENT = json.loads((GOLDEN / "discharge" / "01-municipal-gop-general-sternotomy.event.json").read_text())
REQUEST = json.loads((GOLDEN / "hotline" / "municipality-routine.request.json").read_text())
CC = json.loads((GOLDEN / "hotline" / "municipality-routine.carecommunication.json").read_text())
REPORT = (GOLDEN / "closing" / "01-full-items.report.xml").read_text(encoding="utf-8")


def _rejection(raw: bytes, pipeline: Pipeline, now: datetime) -> Rejected:
    return refusal(raw, pipeline, now)[0]


def _ack_code(result: Any) -> str | None:
    acks = [o.message for o in result.outgoing if o.route.exchange == "rehab.ack"]
    return acks[0]["entry"][0]["resource"]["response"]["code"] if acks else None


def _patient(bundle: dict[str, Any]) -> dict[str, Any]:
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")


def _cc_with(identifier: dict[str, str], timestamp: str | None = None) -> bytes:
    bundle = copy.deepcopy(CC)
    _patient(bundle)["identifier"] = [identifier]
    _patient(bundle).pop("birthDate", None)  # optional; the golden one is the birth date of another CPR number
    if timestamp:
        bundle["timestamp"] = timestamp
    return json.dumps(bundle).encode()


def _with_patient(base: dict[str, Any], patient: dict[str, Any]) -> bytes:
    document = copy.deepcopy(base)
    document["patient"] = {k: v for k, v in document["patient"].items() if k not in ("cpr", "replacementCpr")}
    document["patient"].update(patient)
    return json.dumps(document).encode()


# -- point 5: a CPR number born after the event --------------------------------------------------------


def test_a_birth_after_the_earliest_moment_is_refused_without_the_number() -> None:
    with pytest.raises(ValueError, match="after the event") as caught:
        born_by(parse_cpr(BORN_2050), MONDAY)
    assert BORN_2050 not in str(caught.value)
    born_by(parse_cpr("0101575001"), datetime.fromisoformat("2057-01-01T00:00:00+01:00"))  # born that day: fine
    born_by(parse_cpr(BORN_2050), date(2050, 1, 1))


def test_a_moment_counts_by_its_date_in_denmark() -> None:
    # 23:30 UTC on 31 December 2049 is already 1 January 2050 in Copenhagen: born that day, not after
    born_by(parse_cpr(BORN_2050), datetime.fromisoformat("2049-12-31T23:30:00+00:00"))
    with pytest.raises(ValueError):
        born_by(parse_cpr(BORN_2050), datetime.fromisoformat("2049-12-31T22:30:00+00:00"))


def test_the_shared_2050_discharge_event_is_refused_naming_patient_cpr(shared: Path) -> None:
    path = shared / "cases" / "edge-inputs" / "04-cpr-born-in-2050.discharge.json"
    done = run_logged([sys.executable, "-m", "integration", "transform", str(path)], cwd=PROJECT_ROOT)
    assert done.returncode == 2 and done.stdout == b""
    assert b"patient.cpr" in done.stderr and BORN_2050.encode() not in done.stderr


@pytest.mark.parametrize(
    ("raw", "now", "field"),
    [
        (_with_patient(EVENT, {"cpr": BORN_2050}), MONDAY, "patient.cpr"),
        # an event dated after the birth, received before it: the referral would be older than its patient
        (
            json.dumps(
                EVENT
                | {
                    "occurredAt": "2051-01-02T10:00:00+01:00",
                    "admission": {
                        "admittedAt": "2051-01-01T10:00:00+01:00",
                        "dischargedAt": "2051-01-02T09:00:00+01:00",
                    },
                }
            )
            .replace("2512489996", BORN_2050)
            .encode(),
            MONDAY,
            "patient.cpr",
        ),
        (_with_patient(REQUEST, {"cpr": BORN_2050}), MONDAY, "patient.cpr"),
        (
            _cc_with({"use": "official", "system": "urn:oid:1.2.208.176.1.2", "value": BORN_2050}),
            JAN_12,
            "Patient.identifier",
        ),
        (
            _cc_with(
                {"use": "official", "system": "urn:oid:1.2.208.176.1.2", "value": BORN_2050},
                timestamp="2051-01-12T10:15:00+01:00",  # the sender's clock says 2051; we received it in 2027
            ),
            JAN_12,
            "Patient.identifier",
        ),
        (REPORT.replace('cpr="2512489996"', f'cpr="{BORN_2050}"').encode(), JAN_12, "ClosingReport.Patient.cpr"),
    ],
    ids=["discharge", "discharge-event-in-the-future", "advice-form", "carecommunication", "cc-clock-ahead", "closing"],
)
def test_every_inbound_kind_refuses_a_cpr_born_after_its_time_naming_the_field(
    pipeline: Pipeline, raw: bytes, now: datetime, field: str
) -> None:
    rejection, answer = refusal(raw, pipeline, now)
    assert isinstance(rejection, InvalidInput)
    assert rejection.field == field and "after the event" in rejection.problem
    assert BORN_2050 not in str(rejection)
    if field == "Patient.identifier":  # a MedCom message is answered fatal-error
        assert _ack_code(answer) == "fatal-error"


def test_a_message_whose_patient_is_born_after_it_was_sent_breaks_the_messaging_rules() -> None:
    bundle = copy.deepcopy(CC)
    _patient(bundle)["birthDate"] = "2027-01-13"  # the day after Bundle.timestamp
    assert ("Patient.birthDate", "is after the message's timestamp") in [
        (f.field, f.problem) for f in messaging_findings(bundle)
    ]
    _patient(bundle)["birthDate"] = "2027-01-12"
    assert not [f for f in messaging_findings(bundle) if f.problem == "is after the message's timestamp"]


# -- point 7: replacement numbers ------------------------------------------------------------------------


def test_the_shared_x_ecpr_carecommunication_is_routed_to_the_department_it_names_and_acked_ok(shared: Path) -> None:
    cases = shared / "cases" / "edge-inputs"
    done = run_logged(
        [
            sys.executable,
            "-m",
            "integration",
            "transform",
            str(cases / "16-x-ecpr-patient.carecommunication.json"),
            "--at",
            "2026-11-23T10:00:00+01:00",
            "--state",
            str(cases / "state-open-course.json"),
        ],
        stdout_is_data=True,
        cwd=PROJECT_ROOT,
    )
    assert done.returncode == 0, done.stderr
    forward, ack = json.loads(done.stdout)
    assert forward["route"]["routingKey"] == f"hotline.department.{AALBORG}"
    assert ack["message"]["entry"][0]["resource"]["response"]["code"] == "ok"
    assert b"0101701TT2" not in done.stderr


@pytest.mark.parametrize(
    ("system", "value"),
    [(X_ECPR_SYSTEM, X_ECPR), ("urn:oid:1.2.208.176.1.6.1.3.177", D_ECPR), ("urn:oid:1.2.208.176.1.6.1.3", D_ECPR)],
)
def test_a_carecommunication_for_a_patient_with_a_replacement_number_is_routed_and_audited_under_it(
    pipeline: Pipeline, system: str, value: str
) -> None:
    result = transform(_cc_with({"use": "temp", "system": system, "value": value}), pipeline, JAN_12)
    assert [o.route.routing_key for o in result.outgoing] == [f"hotline.department.{AALBORG}", "ack.434751000016002"]
    assert _ack_code(result) == "ok"
    assert result.patient == f"{system}|{value}"  # the audit log's patient: the identifier with its system
    (routed,) = [f for f in result.facts if f.kind == "hotline-routed"]
    assert routed.detail["patientIdentifier"] == "replacement-cpr" and routed.detail["courseOpen"] is None
    assert value not in json.dumps([dict(f.detail) for f in result.facts])


def test_a_replacement_number_is_looked_up_as_the_course_filed_under_it(pipeline: Pipeline) -> None:
    """Decision 18 (amending 17): a patient named by a replacement number has a course filed under
    `system|value`; the hotline finds it by that key, never under another number."""
    key = f"{X_ECPR_SYSTEM}|{X_ECPR}"
    course = Course(key, AALBORG, "851", True, Responsible.HOSPITAL)
    result = transform(
        _cc_with({"use": "temp", "system": X_ECPR_SYSTEM, "value": X_ECPR}),
        pipeline,
        JAN_12,
        state=FixedState(courses={key: course, X_ECPR: replace(course, referring_department="715581000016005")}),
    )
    assert _ack_code(result) == "ok"
    (routed,) = [f for f in result.facts if f.kind == "hotline-routed"]
    assert routed.detail["courseOpen"] is True and routed.detail["queue"].endswith(AALBORG)


def test_an_advice_form_with_a_replacement_number_goes_to_the_department_it_names_else_to_triage(
    pipeline: Pipeline,
) -> None:
    patient = {"replacementCpr": {"system": X_ECPR_SYSTEM, "value": X_ECPR}}
    named = json.loads(_with_patient(REQUEST, patient)) | {"department": AALBORG}
    routed = transform(json.dumps(named).encode(), pipeline, MONDAY)
    assert routed.outgoing[0].route.routing_key == f"hotline.department.{AALBORG}"
    assert routed.patient == f"{X_ECPR_SYSTEM}|{X_ECPR}"
    triaged = transform(_with_patient(REQUEST, patient), pipeline, MONDAY)
    assert triaged.outgoing[0].route.routing_key == "hotline.unmatched"


def test_a_discharge_event_with_a_replacement_number_makes_a_referral_by_municipality_code(pipeline: Pipeline) -> None:
    raw = _with_patient(EVENT, {"replacementCpr": {"system": "urn:oid:1.2.208.176.1.6.1.3.179", "value": D_ECPR}})
    result = transform(raw, pipeline, MONDAY)
    (referral,) = result.outgoing
    assert referral.route.routing_key == "referral.municipality.851"
    patient = _patient(referral.message)
    assert patient["identifier"] == [{"use": "temp", "system": "urn:oid:1.2.208.176.1.6.1.3.179", "value": D_ECPR}]
    assert "birthDate" not in patient and "Erstatnings-CPR" in patient["text"]["div"]
    assert messaging_problems(referral.message) == []
    (course,) = result.state.courses  # filed under the replacement number's system|value (decision 18)
    assert course.patient == "urn:oid:1.2.208.176.1.6.1.3.179|" + D_ECPR
    assert result.patient == f"urn:oid:1.2.208.176.1.6.1.3.179|{D_ECPR}"


@pytest.mark.parametrize(
    ("patient", "field"),
    [
        ({"cpr": "2512489996", "replacementCpr": {"system": X_ECPR_SYSTEM, "value": X_ECPR}}, "patient.cpr"),
        ({"replacementCpr": {"system": X_ECPR_SYSTEM, "value": "0101705TT2"}}, "patient.replacementCpr.value"),
        ({"replacementCpr": {"system": X_ECPR_SYSTEM, "value": "3002701TT2"}}, "patient.replacementCpr.value"),
        ({"replacementCpr": {"system": "urn:oid:1.2.208.176.1.2", "value": X_ECPR}}, "patient.replacementCpr.system"),
        ({}, "patient.cpr"),
    ],
    ids=["both", "d-digit-in-an-x-ecpr", "30-february", "cpr-system", "neither"],
)
@pytest.mark.parametrize("base", [EVENT, REQUEST], ids=["discharge", "advice-form"])
def test_a_json_contract_names_the_patient_by_exactly_one_well_formed_number(
    pipeline: Pipeline, base: dict[str, Any], patient: dict[str, Any], field: str
) -> None:
    rejection = _rejection(_with_patient(base, patient), pipeline, MONDAY)
    assert isinstance(rejection, InvalidInput) and rejection.field == field, str(rejection)
    assert "TT2" not in str(rejection)


def test_the_schemas_list_exactly_the_replacement_systems_we_know() -> None:
    for name in ("discharge-event", "advice-request"):
        schema = json.loads((PROJECT_ROOT / "schemas" / f"{name}.schema.json").read_text())
        assert set(schema["$defs"]["replacementCpr"]["properties"]["system"]["enum"]) == REPLACEMENT_SYSTEMS
    assert REPLACEMENT_SYSTEMS == {X_ECPR_SYSTEM, *D_ECPR_SYSTEMS}


def test_our_replacement_systems_are_dk_cores(shared: Path) -> None:
    folder = shared / "medcom" / "definitions" / "hl7.fhir.dk.core#3.4.0"
    codes = json.loads((folder / "CodeSystem-dk-core-d-ecpr-codes.json").read_text())
    assert {c["code"] for c in codes["concept"]} == set(D_ECPR_SYSTEMS)
    x_ecpr = json.loads((folder / "StructureDefinition-dk-core-x-ecpr-identifier.json").read_text())
    (system,) = [e for e in x_ecpr["differential"]["element"] if e["path"] == "Identifier.system"]
    assert system["fixedUri"] == X_ECPR_SYSTEM


@given(
    st.sampled_from(sorted(FORMATS, key=lambda k: k.value)).flatmap(
        lambda kind: st.from_regex(FORMATS[kind], fullmatch=True)
    )
)
def test_a_replacement_number_never_looks_like_a_cpr_number_so_the_mask_need_not_change(value: str) -> None:
    assert CPR_LIKE.search(value) is None


def test_a_replacement_number_reaches_the_audit_log_and_no_log_line(pipeline: Pipeline, tmp_path: Path) -> None:
    logged = io.StringIO()
    configure_logging("DEBUG", logged, fmt="json")
    store, broker = SqliteAuditStore(str(tmp_path / "audit.sqlite3")), InMemoryBroker()
    processor = build(
        Settings.from_env({}),
        bus=broker,
        store=store,
        clock=lambda: JAN_12,
        pipeline=pipeline,
        retry=RetryPolicy(attempts=2, seconds=1),
    ).processor
    good = Delivery("hotline", _cc_with({"use": "temp", "system": X_ECPR_SYSTEM, "value": X_ECPR}), "m-1")
    bad = copy.deepcopy(CC)
    _patient(bad)["identifier"] = [{"use": "temp", "system": X_ECPR_SYSTEM, "value": "0101705TT2"}]
    refused = Delivery("hotline", orjson.dumps(bad), "m-2")
    outcomes = [processor.process(good), processor.process(refused)]
    processor.acknowledged(list(zip([good, refused], outcomes, strict=True)))
    assert [o.outputs for o in outcomes] == [2, 1]  # routed and acked; refused, with its fatal-error ack
    patients = {r.patient for r in store.records() if r.message_id == "m-1"}
    assert patients == {f"{X_ECPR_SYSTEM}|{X_ECPR}"}
    assert logged.getvalue() and "TT2" not in logged.getvalue()
