"""Values carried exactly or refused naming the field (issue 11 point 2, and attack 11b problems 4-7).

- Every JSON number with a fraction or an exponent is read as a Decimal of its digits and written back digit
  for digit, positional (`7.50` stays 7.50, `1e2` is 100, `1e-7` 0.0000001, `-0.0` is 0.0): the discharge
  event's exercise test (FHIR and narrative) and a forwarded CareCommunication.
- The discharge event's times reach FHIR as the sender wrote them (fraction and `Z` kept).
- Every date of a discharge event and a closing report lies in the years 1900-2199, and contradictions are
  refused naming the field: a date before the CPR birth date or after the event, an event far from its
  admission, a closing conversation before the course, a course element twice, a measured value not above 0.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from integration.conformance.validation import fhir_problems
from integration.domain.course import Course, FixedState
from integration.errors import InvalidInput, Rejected
from integration.fhir import fhir_json
from integration.flows.dispatch import Pipeline, transform
from integration.formats.json_contract import RefusedContent, decode_json
from integration.log import cpr_numbers_in
from tests.conftest import GOLDEN

EVENT = json.loads((GOLDEN / "discharge" / "08-exercise-test-with-results.event.json").read_text())
EVENT_AT = datetime(2026, 11, 26, 12, 0, tzinfo=ZoneInfo("Europe/Copenhagen"))
CARE_COMMUNICATION = (GOLDEN / "hotline" / "municipality-routine.carecommunication.json").read_bytes()
CPR = "2512489996"
STATE = FixedState(courses={CPR: Course(CPR, "715541000016001", "851", True, "hospital")})
SATURDAY = datetime.fromisoformat("2027-01-16T10:20:00+01:00")
REPORT = (GOLDEN / "closing" / "01-full-items.report.xml").read_text(encoding="utf-8")
CLOSING_NOW = datetime(2027, 2, 20, 10, 5, tzinfo=ZoneInfo("Europe/Copenhagen"))


def _event(changes: dict[str, Any], number_text: dict[str, str] | None = None) -> bytes:
    """The golden event with `changes` (dotted paths); `number_text` puts raw JSON number text in place of a
    path's placeholder string (what json.dumps cannot write: 7.50, 1e2, -0.0)."""
    document = copy.deepcopy(EVENT)
    for path, value in {**changes, **{p: f"@{p}@" for p in number_text or {}}}.items():
        *parents, last = path.split(".")
        node = document
        for part in parents:
            node = node[part]
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    raw = json.dumps(document, ensure_ascii=False)
    for path, text in (number_text or {}).items():
        raw = raw.replace(f'"@{path}@"', text)
    return raw.encode()


def _refused(raw: bytes, pipeline: Pipeline, now: datetime, **kwargs: Any) -> InvalidInput:
    with pytest.raises(Rejected) as caught:
        transform(raw, pipeline, now, **kwargs)
    rejection = caught.value
    assert isinstance(rejection, InvalidInput), rejection
    assert not cpr_numbers_in(str(rejection)) and "\n" not in str(rejection)
    return rejection


def _observation(raw: bytes, pipeline: Pipeline) -> tuple[str, str]:
    """(the exercise-test Observation's bytes as published, its narrative)."""
    result = transform(raw, pipeline, EVENT_AT)
    assert fhir_problems(result.outgoing[0].message) == []
    body = fhir_json.dumps(result.outgoing[0].message).decode()
    start = body.index('"resourceType":"Observation"')
    observation = body[start : body.index('"resourceType"', start + 30)]
    return observation, observation[observation.index('"div"') : observation.index("</div>")]


# -- the reader -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [("7.50", Decimal("7.50")), ("1e2", Decimal("1E+2")), ("-0.0", Decimal("-0.0")), ("1E-7", Decimal("1E-7"))],
)
def test_a_number_with_a_fraction_or_an_exponent_is_read_as_a_decimal_of_its_digits(text: str, value: Decimal) -> None:
    document = decode_json(f'{{"a": [1, {{"b": {text}}}], "c": 142}}'.encode())
    found = document["a"][1]["b"]
    assert type(found) is Decimal and str(found) == str(value)
    assert type(document["c"]) is int and type(document["a"][0]) is int


def test_a_key_twice_is_still_refused_naming_its_path_beside_a_decimal() -> None:
    with pytest.raises(RefusedContent) as refused:
        decode_json(b'{"x": 1.50, "y": {"z": 1, "z": 2}}')
    assert refused.value.field == "y.z"


def test_the_long_decimal_is_not_rounded_to_a_double() -> None:
    assert decode_json(b'{"v": 0.1000000000000000055511151231257827}')["v"] == Decimal(
        "0.1000000000000000055511151231257827"
    )


# -- the discharge event's exercise test ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "text", "published", "unit"),
    [
        ("exerciseTest.mets", "7.50", "7.50", "MET"),
        ("exerciseTest.mets", "7.1234567890123456789", "7.1234567890123456789", "MET"),
        ("exerciseTest.mets", "1e-7", "0.0000001", "MET"),
        ("exerciseTest.mets", "-0.0", "0.0", "MET"),
        ("exerciseTest.maxWorkloadWatt", "1e2", "100", "W"),
        ("exerciseTest.maxWorkloadWatt", "150.0", "150.0", "W"),
        ("exerciseTest.maxWorkloadWatt", "150", "150", "W"),
    ],
    ids=["trailing-zero", "long", "exponent-tiny", "negative-zero", "exponent", "point-zero", "integer"],
)
def test_an_exercise_test_value_reaches_fhir_and_the_narrative_as_written(
    pipeline: Pipeline, field: str, text: str, published: str, unit: str
) -> None:
    observation, div = _observation(_event({}, {field: text}), pipeline)
    assert re.search(rf'"value":{re.escape(published)},"unit":"{unit}"', observation), observation
    assert f": {published} {unit}</p>" in div


@pytest.mark.parametrize("text", ["142.0", "1.42e2", "142E0"])
def test_a_heart_rate_not_written_as_plain_digits_is_refused_naming_the_field(pipeline: Pipeline, text: str) -> None:
    rejection = _refused(_event({}, {"exerciseTest.peakHeartRate": text}), pipeline, EVENT_AT)
    assert rejection.field == "exerciseTest.peakHeartRate"


# -- the discharge event's times and dates ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "carried"),
    [
        ("2026-11-26T10:00:00.123456Z", "2026-11-26T10:00:00.123456Z"),
        ("2026-11-26T10:00:00Z", "2026-11-26T10:00:00Z"),
        ("2026-11-26T11:00+01:00", "2026-11-26T11:00:00+01:00"),
        ("2026-11-26T11:00:00.5+01:00", "2026-11-26T11:00:00.5+01:00"),
    ],
)
def test_occurred_at_reaches_authored_on_as_the_sender_wrote_it(pipeline: Pipeline, written: str, carried: str) -> None:
    result = transform(_event({"occurredAt": written}), pipeline, EVENT_AT)
    request = next(
        e["resource"] for e in result.outgoing[0].message["entry"] if e["resource"]["resourceType"] == "ServiceRequest"
    )
    assert request["authoredOn"] == carried
    assert fhir_problems(result.outgoing[0].message) == []


def test_discharged_at_reaches_the_risk_assessment_as_the_sender_wrote_it(pipeline: Pipeline) -> None:
    result = transform(_event({"admission.dischargedAt": "2026-11-20T12:30:00.250Z"}), pipeline, EVENT_AT)
    risk = next(
        e["resource"] for e in result.outgoing[0].message["entry"] if e["resource"]["resourceType"] == "RiskAssessment"
    )
    assert risk["occurrenceDateTime"] == "2026-11-20T12:30:00.250Z"


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"exerciseTest.date": "0001-01-01"}, "exerciseTest.date", "format"),
        ({"exerciseTest.date": "1800-01-01"}, "exerciseTest.date", "format"),
        ({"exerciseTest.date": "9999-12-31"}, "exerciseTest.date", "format"),
        ({"exerciseTest.date": "1950-01-01"}, "exerciseTest.date", "birth"),  # the CPR number: born 1982
        ({"exerciseTest.date": "2026-11-27"}, "exerciseTest.date", "after occurredAt"),
        ({"surgery": {"sternotomy": True, "date": "1000-11-15"}}, "surgery.date", "format"),
        ({"surgery": {"sternotomy": True, "date": "2099-11-15"}}, "surgery.date", "after occurredAt"),
        ({"surgery": {"sternotomy": False, "date": "2099-11-15"}}, "surgery.date", "after occurredAt"),
        ({"occurredAt": "1990-12-03T11:00:00+01:00"}, "occurredAt", "before admission.admittedAt"),
        ({"occurredAt": "2199-12-03T11:00:00+01:00"}, "occurredAt", "days after admission.admittedAt"),
        ({"admission.dischargedAt": "2150-11-20T13:30:00+01:00"}, "admission.dischargedAt", "days after admission"),
    ],
    ids=[
        "test-0001",
        "test-1800",
        "test-9999",
        "test-before-birth",
        "test-after-event",
        "surgery-1000",
        "surgery-2099",
        "surgery-no-sternotomy-2099",
        "occurred-before-admission",
        "occurred-2199",
        "discharged-2150",
    ],
)
def test_an_implausible_or_contradictory_date_is_refused_naming_the_field(
    pipeline: Pipeline, changes: dict[str, Any], field: str, words: str
) -> None:
    rejection = _refused(_event(changes), pipeline, EVENT_AT)
    assert rejection.field == field and words in rejection.problem, rejection


def test_dates_at_the_edges_of_the_event_are_accepted(pipeline: Pipeline) -> None:
    raw = _event({"exerciseTest.date": "2026-11-26", "surgery": {"sternotomy": True, "date": "2026-11-15"}})
    assert transform(raw, pipeline, EVENT_AT).outgoing


# -- the forwarded CareCommunication -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "carried"), [("7.50", "7.50"), ("0.1000000000000000055511151231257827", None), ("1e2", "100")]
)
def test_a_forwarded_care_communication_keeps_each_decimal_as_written(
    pipeline: Pipeline, text: str, carried: str | None
) -> None:
    marker = b'"resourceType": "Communication",'
    assert CARE_COMMUNICATION.count(marker) == 1
    raw = CARE_COMMUNICATION.replace(
        marker, marker + b' "extension": [{"url": "http://example.org/x", "valueDecimal": ' + text.encode() + b"}],"
    )
    result = transform(raw, pipeline, SATURDAY, state=STATE)
    forwarded = [fhir_json.dumps(o.message).decode() for o in result.outgoing]
    assert any(f'"valueDecimal":{carried or text}}}' in body for body in forwarded), forwarded


# -- the closing report --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "field", "words"),
    [
        ('<HADS date="2027-02-15">', '<HADS date="9999-02-15">', "ClosingReport.HADS.date", "1900 to 2199"),
        (
            '<ClosingConversation date="2027-02-15"',
            '<ClosingConversation date="2020-02-15"',
            "ClosingReport.ClosingConversation.date",
            "before the course starts",
        ),
    ],
    ids=["hads-9999", "conversation-before-course"],
)
def test_a_closing_report_date_out_of_range_or_order_is_refused_naming_it(
    pipeline: Pipeline, old: str, new: str, field: str, words: str
) -> None:
    assert REPORT.count(old) == 1
    rejection = _refused(REPORT.replace(old, new).encode(), pipeline, CLOSING_NOW)
    assert rejection.field == field and words in rejection.problem, rejection


def test_a_course_element_reported_twice_is_refused_naming_the_second(pipeline: Pipeline) -> None:
    first = re.search(r'<Element code="([a-z-]+)" completed="(true|false)"[^>]*/>', REPORT)
    assert first is not None
    flipped = "false" if first.group(2) == "true" else "true"
    twice = first.group(0) + f'<Element code="{first.group(1)}" completed="{flipped}"/>'
    rejection = _refused(REPORT.replace(first.group(0), twice, 1).encode(), pipeline, CLOSING_NOW)
    assert re.fullmatch(r"ClosingReport\.Course\.Element\[\d\]", rejection.field), rejection


@pytest.mark.parametrize("value", ["0", "-85.0", "-0.00", "0.000"])
def test_a_measured_value_not_above_zero_is_refused_naming_the_attribute(pipeline: Pipeline, value: str) -> None:
    weight = re.search(r'(<Measurement code="body-weight"[^>]* after=")([^"]*)"', REPORT)
    assert weight is not None
    raw = REPORT.replace(weight.group(0), f'{weight.group(1)}{value}"').encode()
    rejection = _refused(raw, pipeline, CLOSING_NOW)
    assert rejection.field.endswith(".after") and "above 0" in rejection.problem, rejection
    assert f"'{value}'" not in str(rejection)


@pytest.mark.parametrize(
    ("ref", "identifier"),
    [
        (
            "urn:uuid:06ff9f5d-4113-5ee5-ae6c-308d851071eb",
            {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:06ff9f5d-4113-5ee5-ae6c-308d851071eb"},
        ),
        ("AAL-2026-4711", {"value": "AAL-2026-4711"}),
    ],
    ids=["uuid", "municipality-number"],
)
def test_the_referral_ref_reaches_the_gp_document_as_a_link_to_the_referral(
    pipeline: Pipeline, ref: str, identifier: dict[str, str]
) -> None:
    anchor = "  <Course "
    assert REPORT.count(anchor) == 1
    raw = REPORT.replace(anchor, f"  <ReferralRef>{ref}</ReferralRef>\n{anchor}").encode()
    state = FixedState(courses={CPR: Course(CPR, "715541000016001", "851", True, "hospital")})
    result = transform(raw, pipeline, CLOSING_NOW, state=state)
    documents = [
        e["resource"]
        for o in result.outgoing
        for e in o.message.get("entry", [])
        if e["resource"]["resourceType"] == "Composition"
    ]
    assert documents, "no GP document"
    for composition in documents:
        assert composition["event"][0]["detail"][0]["identifier"] == identifier
        assert composition["event"][0]["detail"][0]["type"] == "ServiceRequest"
    assert fhir_problems(result.outgoing[0].message) == []
    assert f"Henvisning: {ref}" in fhir_json.dumps([o.message for o in result.outgoing]).decode()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"occurredAt": "2026-11-26T13:01:00+01:00"}, "occurredAt"),  # an hour and a minute after the receipt
        (
            {"occurredAt": "2026-11-26T11:00:00+01:00", "admission.dischargedAt": "2026-11-26T13:01:00+01:00"},
            "admission.dischargedAt",
        ),
    ],
)
def test_an_event_from_the_future_is_refused(pipeline: Pipeline, changes: dict[str, Any], field: str) -> None:
    """The schema's promise, found unkept by the attack on issue #15: a discharge or visitation cannot report
    what had not happened when it arrived (a clock or typing error); more than an hour after the receipt is
    refused, naming the field. The hour itself is accepted (senders' clocks drift)."""
    rejection = _refused(_event(changes), pipeline, EVENT_AT)
    assert rejection.field == field and "more than an hour after the event was received" in rejection.problem
    assert transform(_event({"occurredAt": "2026-11-26T13:00:00+01:00"}), pipeline, EVENT_AT).outgoing
