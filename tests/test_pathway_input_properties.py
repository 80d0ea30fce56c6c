"""The pathway's new inputs keep the parser invariants for any input (as tests/test_parser_properties.py does
for the older ones): a GP's referral, the hospital's closing (follow-up plan, outpatient discharge) and a
step-down, each against a course that lets it through, drawn from its JSON Schema, from a golden sample with
one part drawn from the schema, or from a golden sample made hostile. Through the fuzz harness's `answer`: a
FlowResult or a Rejected and nothing else, quickly, no CPR number in a rejection, every emitted message through
the fast layers of `integration validate`."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from integration.domain.course import Course, FixedState, Responsible, SentReferral, Stage, State
from integration.flows.results import FlowResult
from tests.conftest import GOLDEN
from tests.fuzz.harness import Entry
from tests.test_parser_properties import (
    HOSTILE,
    NUMBER,
    PROPERTY,
    RAW_NUMBERS,
    STRING,
    _part_from_schema,
    _replace_nth,
    _schema,
    answer,
)

SPECIALISED = SentReferral(
    "urn:uuid:0f8e7a1c-2b3d-4e5f-8a9b-0c1d2e3f4a5b",
    "0f8e7a1c-2b3d-4e5f-8a9b-0c1d2e3f4a5b",
    "hospital",
    "715561000016003",
    "gop-specialised",
    "high",
    ("physical-activity",),
    "hospital",
    False,
)


def _courses(stage: Stage, referral: SentReferral | None = None) -> State:
    patients = ("2512489996", "0211223989", "1502779995", "2911829996")
    base = Course("", "715541000016001", "851", stage.open, Responsible.HOSPITAL, stage=stage, referral=referral)
    return FixedState(courses={p: replace(base, patient=p) for p in patients})


ENTRIES = {
    "gp_referral": Entry(
        "gp_referral", datetime.fromisoformat("2027-02-01T10:00:00+01:00"), seeds=("gp-referral/*.event.json",)
    ),
    "hospital_closing": Entry(
        "hospital_closing",
        datetime.fromisoformat("2027-06-01T10:00:00+02:00"),
        lambda: _courses(Stage.HOSPITAL_FOLLOW_UP),
        seeds=("hospital-closing/*.event.json",),
    ),
    "step_down": Entry(
        "step_down",
        datetime.fromisoformat("2027-01-15T11:00:00+01:00"),
        lambda: _courses(Stage.SPECIALISED, SPECIALISED),
        seeds=("pathway-inputs/step-down.event.json",),
    ),
}
SCHEMA = {"gp_referral": "gp-referral.schema.json", "hospital_closing": "hospital-closing.schema.json"}


def test_every_golden_input_of_the_new_entries_is_processed() -> None:
    for name, raw in _seeds():
        assert isinstance(answer(raw, ENTRIES[name]), FlowResult), name


@settings(PROPERTY, max_examples=10)
@given(document=from_schema(_schema("gp-referral.schema.json")))
def test_any_schema_valid_gp_referral_is_answered(document: Any) -> None:
    answer(orjson.dumps(document), ENTRIES["gp_referral"])


@settings(PROPERTY, max_examples=10)
@given(document=from_schema(_schema("hospital-closing.schema.json")))
def test_any_schema_valid_hospital_closing_is_answered(document: Any) -> None:
    answer(orjson.dumps(document), ENTRIES["hospital_closing"])


def _golden_part(name: str) -> st.SearchStrategy[bytes]:
    """A golden sample of the entry with one top-level part drawn from its schema."""
    schema = _schema(SCHEMA[name])
    samples = [orjson.loads(raw) for entry_name, raw in _seeds() if entry_name == name]

    def with_part(sample: Any, key: str, value: Any) -> bytes:
        return orjson.dumps({**sample, key: value})

    keys = st.sampled_from(sorted(schema["properties"]))
    return st.tuples(st.sampled_from(samples), keys).flatmap(
        lambda pair: _part_from_schema(schema, pair[1]).map(lambda value: with_part(pair[0], pair[1], value))
    )


@settings(PROPERTY, max_examples=10)
@given(raw=st.deferred(lambda: _golden_part("gp_referral")))
def test_a_gp_referral_with_one_part_drawn_from_its_schema_is_answered(raw: bytes) -> None:
    answer(raw, ENTRIES["gp_referral"])


@settings(PROPERTY, max_examples=10)
@given(raw=st.deferred(lambda: _golden_part("hospital_closing")))
def test_a_hospital_closing_with_one_part_drawn_from_its_schema_is_answered(raw: bytes) -> None:
    answer(raw, ENTRIES["hospital_closing"])


def _seeds() -> list[tuple[str, bytes]]:
    return [(n, p.read_bytes()) for n, e in ENTRIES.items() for pat in e.seeds for p in sorted(GOLDEN.glob(pat))]


@st.composite
def hostile(draw: st.DrawFn) -> tuple[str, bytes]:
    """A golden input of a new entry with one string or number replaced."""
    name, raw = draw(st.sampled_from(_seeds()))
    n = draw(st.integers(min_value=0, max_value=200))
    if draw(st.booleans()):
        value = draw(st.one_of(st.sampled_from(HOSTILE), st.text(max_size=12)))
        return name, _replace_nth(raw, STRING, n, json.dumps(value).encode("utf-8", "surrogatepass"))
    return name, _replace_nth(raw, NUMBER, n, draw(st.sampled_from(RAW_NUMBERS)).encode())


@settings(PROPERTY, max_examples=30)
@given(case=hostile())
def test_any_new_pathway_input_made_hostile_is_answered(case: tuple[str, bytes]) -> None:
    name, raw = case
    answer(raw, ENTRIES[name])
