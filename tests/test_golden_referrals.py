"""Golden samples: each discharge event beside the referral messages and audit facts it must produce."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from integration.conformance.validation import fhir_problems, messaging_problems
from integration.fhir import fhir_json
from integration.flows.dispatch import Pipeline, transform
from tests.conftest import GOLDEN, received_at
from tests.golden_normalise import generated_ids, normalise

EVENTS = sorted((GOLDEN / "discharge").glob("*.event.json"))


def _actual(path: Path, pipeline: Pipeline) -> dict:
    now = received_at(path)
    result = transform(path.read_bytes(), pipeline, now)
    outgoing = [o.as_json() for o in result.outgoing]
    facts = [{"kind": f.kind, "detail": dict(f.detail)} for f in result.facts]
    ids = generated_ids(outgoing)
    event_id = json.loads(path.read_bytes())["eventId"]
    ids.discard(event_id)
    return normalise({"outgoing": outgoing, "facts": facts}, now.isoformat(timespec="seconds"), ids)


def test_there_are_at_least_twelve_golden_events() -> None:
    assert len(EVENTS) >= 12


@pytest.mark.parametrize("path", EVENTS, ids=lambda p: p.name.removesuffix(".event.json"))
def test_golden_event_produces_expected_messages(
    path: Path, pipeline: Pipeline, request: pytest.FixtureRequest
) -> None:
    expected_path = path.with_name(path.name.replace(".event.json", ".expected.json"))
    actual = _actual(path, pipeline)
    if request.config.getoption("--update-golden"):
        expected_path.write_bytes(fhir_json.dumps(actual, option=orjson.OPT_INDENT_2) + b"\n")  # decimals as written
    assert actual == json.loads(expected_path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", EVENTS, ids=lambda p: p.name.removesuffix(".event.json"))
def test_golden_outputs_are_valid_fhir_and_medcom_messages(path: Path, pipeline: Pipeline) -> None:
    for outgoing in transform(path.read_bytes(), pipeline, received_at(path)).outgoing:
        assert fhir_problems(outgoing.message) == []
        assert messaging_problems(outgoing.message) == []


def test_same_event_rebuilds_byte_identical_message(pipeline: Pipeline) -> None:
    raw = EVENTS[0].read_bytes()
    first = transform(raw, pipeline, received_at(EVENTS[0])).outgoing[0].message
    again = transform(raw, pipeline, received_at(EVENTS[0])).outgoing[0].message
    assert json.dumps(first) == json.dumps(again)
