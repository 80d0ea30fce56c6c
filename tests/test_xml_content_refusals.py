"""A CareCommunication in FHIR XML whose content FHIR R4 refuses is refused as its JSON form is (attack on
issue #16): a fatal-error acknowledgement naming the element (`Patient.birthDate`) in the message path
validator's words (decision 30), and the audit record of it; before, fhir.resources' XML reader refused it
first, naming `Bundle.birthDate` in pydantic's words, and no acknowledgement could be built: on the bus it was
dead-lettered and the municipality never told.

Each case is the edge-input case 15 (../shared/cases/edge-inputs) changed in one place, as XML and as JSON.
The XML reader no longer judges (`formats.fhir_xml`), and no longer rounds a decimal either.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from integration.domain.course import Course, FixedState
from integration.errors import InvalidInput
from integration.fhir.fhir_json import dumps
from integration.flows.dispatch import Pipeline
from integration.flows.results import Refusal
from integration.formats.care_communication import decode_xml_bundle
from integration.log import cpr_numbers_in
from tests.cli_runs import run_integration
from tests.conftest import SHARED
from tests.refusals import answered

CASES = SHARED / "cases" / "edge-inputs"
CASE_15 = CASES / "15-xml-carecommunication-with-bom.xml"
STATE = CASES / "state-open-course.json"
AT = "2026-11-23T10:00:00+01:00"
Json = dict[str, Any]


def _message() -> str:
    if not CASE_15.is_file():
        pytest.skip(f"../shared is absent ({CASES}); it holds edge-input case 15, which these tests change")
    return CASE_15.read_bytes().decode("utf-8-sig")


def _resource(bundle: Json, rtype: str) -> Json:
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype)


def _set(rtype: str, **values: Any) -> Callable[[Json], None]:
    return lambda bundle: _resource(bundle, rtype).update(values)


def _attach(bundle: Json) -> None:
    _resource(bundle, "Communication")["payload"][0]["contentAttachment"] = {"contentType": "text/plain"}


# Each case: the XML changed (old → new), the same change to the JSON, the element refused and the problem.
CASES_CHANGED: dict[str, tuple[str, str, Callable[[Json], None], str, str]] = {
    "a day the calendar has not": (
        '<birthDate value="1970-01-01"/>',
        '<birthDate value="1948-02-30"/>',
        _set("Patient", birthDate="1948-02-30"),
        "Patient.birthDate",
        "is not a real date (the calendar has no such day)",
    ),
    "an element FHIR R4 does not define": (
        '<birthDate value="1970-01-01"/>',
        '<birthDate value="1970-01-01"/><foo value="x"/>',
        _set("Patient", foo="x"),
        "Patient.foo",
        "unknown element (not in FHIR R4)",
    ),
    "two types of the payload's content[x]": (
        "<contentString ",
        '<contentAttachment><contentType value="text/plain"/></contentAttachment><contentString ',
        _attach,
        "Communication.payload[0].contentString",
        "a choice element ([x]) has more than one type given",
    ),
}


def _forms(case: str) -> tuple[bytes, bytes]:
    """The case as XML and as JSON."""
    old, new, change, _, _ = CASES_CHANGED[case]
    text = _message()
    assert old in text, old
    bundle = copy.deepcopy(decode_xml_bundle(text.encode(), 10**7))
    change(bundle)
    return text.replace(old, new, 1).encode(), dumps(bundle)


def _state() -> FixedState:
    return FixedState(courses={"0101701234": Course("0101701234", "715541000016001", "851", True, "hospital")})


def _ack(refusal: Refusal) -> Json:
    (ack,) = [o.message for o in refusal.answer.outgoing if o.route.exchange == "rehab.ack"]
    return ack


def _outcome(ack: Json) -> Json:
    return _resource(ack, "OperationOutcome")


@pytest.mark.parametrize("case", sorted(CASES_CHANGED))
def test_the_pipeline_answers_the_xml_form_as_the_json_form(pipeline: Pipeline, case: str) -> None:
    xml, json_form = _forms(case)
    now = datetime.fromisoformat(AT)
    refused, expected = (answered(raw, pipeline, now, state=_state()) for raw in (xml, json_form))
    _, _, _, path, problem = CASES_CHANGED[case]
    assert isinstance(refused.rejection, InvalidInput)
    assert refused.rejection.field == path and problem in str(refused.rejection)
    assert str(refused.rejection) == str(expected.rejection)
    ack = _ack(refused)
    assert ack["entry"][0]["resource"]["response"]["code"] == "fatal-error"
    assert _outcome(ack)["issue"][0]["expression"] == [path]
    assert _outcome(ack)["issue"] == _outcome(_ack(expected))["issue"]
    facts = [(f.kind, f.detail.get("code")) for f in refused.answer.facts]
    assert ("acknowledged", "fatal-error") in facts
    assert facts == [(f.kind, f.detail.get("code")) for f in expected.answer.facts]
    assert not cpr_numbers_in(json.dumps(_outcome(ack)))


@pytest.mark.parametrize("case", sorted(CASES_CHANGED))
def test_transform_refuses_the_xml_form_as_the_json_form(tmp_path: Path, case: str) -> None:
    xml, json_form = _forms(case)
    runs = []
    for name, raw in (("message.xml", xml), ("message.json", json_form)):
        (tmp_path / name).write_bytes(raw)
        runs.append(run_integration("transform", str(tmp_path / name), "--at", AT, "--state", str(STATE), text=True))
    done, expected = runs
    _, _, _, path, problem = CASES_CHANGED[case]
    assert done.returncode == 2 and done.stderr.startswith(f"error: {path}: ") and problem in done.stderr
    assert (done.returncode, done.stdout, done.stderr) == (expected.returncode, expected.stdout, expected.stderr)
    (ack,) = json.loads(done.stdout)
    assert ack["message"]["entry"][0]["resource"]["response"]["code"] == "fatal-error"
    assert not cpr_numbers_in(done.stderr)


def test_a_decimal_in_xml_keeps_the_digits_sent_as_in_json() -> None:
    marker = '<valueDateTime value="2027-01-12T10:15:00+01:00"/></extension>'
    text = _message()
    assert marker in text
    decimal = '<extension url="http://example.org/x"><valueDecimal value="7.50"/></extension>'
    bundle = decode_xml_bundle(text.replace(marker, marker + decimal, 1).encode(), 10**7)
    assert b'"valueDecimal":7.50' in dumps(bundle)
