"""One message, one patient: a Patient naming two different CPR numbers (or two replacement numbers), or a
birth date its CPR number contradicts, is refused — routing on either number would be a guess (issue 11,
found by the attack on points 1 and 6). The same number written twice is one patient."""

from __future__ import annotations

import copy
import json
from datetime import datetime
from typing import Any

import orjson
import pytest

from integration.conformance.checks import FAST_LAYERS
from integration.conformance.messaging_rules import messaging_findings
from integration.domain.identifiers import patient_number
from integration.errors import InvalidInput
from integration.flows.dispatch import Pipeline, transform
from tests.conftest import GOLDEN
from tests.refusals import answered, refusal

CPR_SYSTEM = "urn:oid:1.2.208.176.1.2"
MONDAY = datetime.fromisoformat("2026-11-23T10:00:00+01:00")
CC = json.loads((GOLDEN / "hotline" / "municipality-routine.carecommunication.json").read_text())


def _patient(bundle: dict[str, Any]) -> dict[str, Any]:
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")


def _with_patient(change: Any) -> dict[str, Any]:
    bundle = copy.deepcopy(CC)
    change(_patient(bundle))
    return bundle


def _ack(outgoing: Any) -> dict[str, Any]:
    return next(o.message for o in outgoing if o.route.exchange == "rehab.ack")


def _second_cpr(value: str) -> Any:
    def change(patient: dict[str, Any]) -> None:
        patient["identifier"].append(dict(patient["identifier"][0], value=value))

    return change


def test_two_different_cpr_numbers_are_refused_with_a_fatal_error_ack(pipeline: Pipeline) -> None:
    bundle = _with_patient(_second_cpr("0101701234"))
    refused = answered(orjson.dumps(bundle), pipeline, MONDAY)
    assert isinstance(refused.rejection, InvalidInput) and refused.rejection.field == "Patient.identifier"
    assert "more than one CPR number" in str(refused.rejection) and "0101701234" not in str(refused.rejection)
    ack = _ack(refused.answer.outgoing)
    assert ack["entry"][0]["resource"]["response"]["code"] == "fatal-error"
    assert any("more than one CPR" in str(f) for f in messaging_findings(bundle))


def test_the_same_cpr_number_twice_is_one_patient(pipeline: Pipeline) -> None:
    same = _patient(CC)["identifier"][0]["value"]
    result = transform(orjson.dumps(_with_patient(_second_cpr(same))), pipeline, MONDAY)
    assert _ack(result.outgoing)["entry"][0]["resource"]["response"]["code"] == "ok"


def test_a_birth_date_the_cpr_number_contradicts_is_refused(pipeline: Pipeline) -> None:
    bundle = _with_patient(lambda p: p.__setitem__("birthDate", "1970-01-02"))
    rejection, _answer = refusal(orjson.dumps(bundle), pipeline, MONDAY)
    assert isinstance(rejection, InvalidInput) and rejection.field == "Patient.birthDate"


def test_patient_number_refuses_two_numbers_of_one_kind() -> None:
    with pytest.raises(ValueError, match="more than one CPR"):
        patient_number([(CPR_SYSTEM, "2512489996"), (CPR_SYSTEM, "0101701234")])
    assert patient_number([(CPR_SYSTEM, "2512489996"), (CPR_SYSTEM, "2512489996")]) is not None


@pytest.mark.parametrize("system", [5, None, [], {}, True])
def test_an_identifier_system_of_another_json_type_is_a_finding_not_a_crash(system: Any) -> None:
    bundle = _with_patient(lambda p: p["identifier"][0].__setitem__("system", system))
    for _name, layer in FAST_LAYERS:
        layer(bundle)  # findings, never an exception
