"""Golden closing reports: each report beside the GP status, DHRD notice and facts it must produce.

Outputs are compared as the bytes we publish would read (`fhir_json`), with every number that has a point
kept as its text: `85.00` and `85` differ here as they do in FHIR.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest

from integration.conformance.validation import document_problems, fhir_problems, messaging_problems
from integration.domain.course import Course, FixedState
from integration.fhir import fhir_json
from integration.flows.dispatch import Pipeline, transform
from tests.conftest import GOLDEN
from tests.golden_normalise import normalise

REPORTS = sorted((GOLDEN / "closing").glob("*.report.xml"))
NOW = datetime(2027, 2, 20, 10, 5, tzinfo=ZoneInfo("Europe/Copenhagen"))
NANCY_IN_AALBORG = FixedState(courses={"2512489996": Course("2512489996", "715541000016001", "851", True, "hospital")})


@dataclass(frozen=True)
class Decimal:
    """A JSON number with a point or an exponent, as written: Decimal('85.00') != Decimal('85')."""

    text: str


def lexical(raw: bytes | str) -> object:
    return json.loads(raw, parse_float=Decimal)


def run(path: Path, pipeline: Pipeline):
    return transform(path.read_bytes(), pipeline, NOW, state=NANCY_IN_AALBORG)


def test_there_are_at_least_ten_golden_reports() -> None:
    assert len(REPORTS) >= 10


@pytest.mark.parametrize("path", REPORTS, ids=lambda p: p.name.removesuffix(".report.xml"))
def test_golden_report_produces_expected_messages(
    path: Path, pipeline: Pipeline, request: pytest.FixtureRequest
) -> None:
    result = run(path, pipeline)
    outgoing = [o.as_json() for o in result.outgoing]
    ids = {o["message"]["id"] for o in outgoing} | {
        e["resource"]["id"] for o in outgoing for e in o["message"]["entry"]
    }
    actual = normalise(
        {
            "outgoing": outgoing,
            "facts": [{"kind": f.kind, "detail": dict(f.detail)} for f in result.facts],
            "courses": [c.__repr__() for c in result.state.courses],
        },
        NOW.isoformat(timespec="seconds"),
        ids,
    )
    expected_path = path.with_name(path.name.replace(".report.xml", ".expected.json"))
    published = fhir_json.dumps(actual, option=orjson.OPT_INDENT_2) + b"\n"
    if request.config.getoption("--update-golden"):
        expected_path.write_bytes(published)
    assert lexical(published) == lexical(expected_path.read_bytes())


@pytest.mark.parametrize("path", REPORTS, ids=lambda p: p.name.removesuffix(".report.xml"))
def test_outputs_are_valid(path: Path, pipeline: Pipeline) -> None:
    for outgoing in run(path, pipeline).outgoing:
        message = outgoing.message
        problems = document_problems(message) if message["type"] == "document" else messaging_problems(message)
        assert problems == [] and fhir_problems(message) == []


def _document(result):
    return next(o.message for o in result.outgoing if o.message["type"] == "document")


def _sections(result) -> dict[str, str]:
    composition = _document(result)["entry"][0]["resource"]
    return {s["title"]: s["text"]["div"] for s in composition["section"]}


def test_full_report_gives_document_gp_message_and_dhrd_notice(pipeline: Pipeline) -> None:
    result = run(GOLDEN / "closing" / "01-full-items.report.xml", pipeline)
    keys = [o.route.routing_key for o in result.outgoing]
    assert keys == ["gp.status.012345", "gp.status.012345", "hospital.dhrd.715541000016001"]
    document = _document(result)
    composition = document["entry"][0]["resource"]
    assert composition["status"] == "final" and composition["extension"][0]["valueBoolean"] is True
    assert composition["extension"][0]["url"].endswith("responsibility-transferred")
    observations = [e["resource"] for e in document["entry"] if e["resource"]["resourceType"] == "Observation"]
    hads = {
        o["code"]["coding"][0]["code"]: o
        for o in observations
        if o["code"]["coding"][0]["system"] == "http://snomed.info/sct"
    }
    assert hads["401319005"]["valueInteger"] == 5 and hads["401320004"]["valueInteger"] == 9
    assert hads["401320004"]["interpretation"][0]["coding"][0]["code"] == "borderline"
    walk = next(o for o in observations if o["code"]["coding"][0]["code"] == "six-minute-walk")
    assert [
        (c["code"]["text"], c["valueQuantity"]["value"], c["valueQuantity"]["code"]) for c in walk["component"]
    ] == [("Før forløbet", 420, "m"), ("Efter forløbet", 510, "m")]
    assert "OBS: HADS-screeningen viser risiko" in _sections(result)["Screening for angst og depression (HADS)"]
    (course,) = result.state.courses
    assert (course.open, course.responsible) == (False, "gp")


def test_no_attention_line_when_both_subscales_are_normal(pipeline: Pipeline) -> None:
    result = run(GOLDEN / "closing" / "11-all-normal-no-attention.report.xml", pipeline)
    assert "OBS" not in _sections(result)["Screening for angst og depression (HADS)"]


def test_retained_responsibility_is_not_transferred(pipeline: Pipeline) -> None:
    result = run(GOLDEN / "closing" / "07-hospital-retains-responsibility.report.xml", pipeline)
    assert _document(result)["entry"][0]["resource"]["extension"][0]["valueBoolean"] is False
    assert result.state.courses[0].responsible == "hospital"


def test_hospital_closing_conversation_sends_no_dhrd_notice(pipeline: Pipeline) -> None:
    result = run(GOLDEN / "closing" / "08-closing-conversation-at-hospital.report.xml", pipeline)
    assert [o.route.routing_key for o in result.outgoing] == ["gp.status.012345", "gp.status.012345"]


def test_unknown_course_still_reaches_the_gp_and_is_audited(pipeline: Pipeline) -> None:
    result = run(GOLDEN / "closing" / "09-unknown-course.report.xml", pipeline)
    assert [o.route.routing_key for o in result.outgoing] == ["gp.status.045678", "gp.status.045678"]
    assert {f.kind for f in result.facts} >= {"closing-without-course", "dhrd-notice-not-sent"}


def test_narratives_are_xhtml_divs_without_scripts(pipeline: Pipeline) -> None:
    from lxml import etree

    for outgoing in run(GOLDEN / "closing" / "01-full-items.report.xml", pipeline).outgoing:
        for entry in outgoing.message["entry"]:
            resource = entry["resource"]
            divs = [resource["text"]["div"]] + [s["text"]["div"] for s in resource.get("section", [])]
            for div in divs:
                element = etree.fromstring(div)
                assert element.tag == "{http://www.w3.org/1999/xhtml}div" and not element.xpath(
                    "//*[local-name()='script']"
                )
