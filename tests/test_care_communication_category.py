"""A CareCommunication's category is bound (required) to MedCom's category value set: a code outside it is
refused on receipt with fatal-error naming `Communication.category` (attack on issue 11, F5: it was acked
`ok`, only the profile layer objected), and every code of the value set is accepted."""

from __future__ import annotations

import json
from typing import Any

import pytest

from integration.conformance.messaging_rules import (
    CARE_COMMUNICATION_CATEGORIES,
    CARE_COMMUNICATION_CATEGORY_SYSTEM,
    messaging_findings,
)
from integration.errors import InvalidInput
from integration.flows.dispatch import Pipeline
from tests.conftest import SHARED
from tests.test_input_classification import STATE, WEEKDAY, ack_code, care_communication, resource
from tests.test_input_classification import refused as refused_with_answer

CODE_SYSTEM = (
    SHARED
    / "medcom/definitions/medcom.fhir.dk.terminology#2.0.1/CodeSystem-medcom-careCommunication-categoryCodes.json"
)


def _category(code: Any) -> Any:
    def change(bundle: dict[str, Any]) -> None:
        resource(bundle, "Communication")["category"] = [
            {"coding": [{"system": CARE_COMMUNICATION_CATEGORY_SYSTEM, "code": code}]}
        ]

    return change


@pytest.mark.parametrize("code", ["nonsense-code", "Training", "2512489996"])
def test_an_unknown_category_code_gets_fatal_error_naming_communication_category(pipeline: Pipeline, code: str) -> None:
    refused, answer = refused_with_answer(care_communication(_category(code)), pipeline, WEEKDAY, state=STATE)
    assert isinstance(refused, InvalidInput) and refused.field == "Communication.category", refused
    assert ack_code(answer) == "fatal-error"
    assert code not in str(refused)


@pytest.mark.parametrize("code", sorted(CARE_COMMUNICATION_CATEGORIES))
def test_every_code_of_medcoms_category_value_set_is_accepted(code: str) -> None:
    bundle = json.loads(care_communication(_category(code)))
    assert not [f for f in messaging_findings(bundle) if f.field == "Communication.category"]


def test_the_table_is_medcoms_code_system_as_carecommunication_5_pins_it() -> None:
    if not CODE_SYSTEM.is_file():
        pytest.skip(f"../shared is absent ({SHARED})")
    system = json.loads(CODE_SYSTEM.read_text())
    assert system["url"] == CARE_COMMUNICATION_CATEGORY_SYSTEM
    assert {c["code"] for c in system["concept"]} == CARE_COMMUNICATION_CATEGORIES
