"""Any input is answered, never crashes the flow: property tests over mutated golden samples.

Each golden sample of each flow (discharge events, advice requests, CareCommunications in JSON and
XML, closing reports, acknowledgements) has one value replaced with something hostile: nesting a
thousand deep, numbers of hundreds of digits, control characters, wrong JSON types, missing and extra
keys; a closing report's typed values get every lexical form XSD 1.0 admits, and some it does not.
Whatever comes in, `transform` returns a FlowResult or raises a Rejected subclass; a rejection names
the field when one was changed, and its message, details and ack hold no CPR number and no name.
Anything else (KeyError, RecursionError, BuildError, …) is a bug in a reader, a flow or a builder.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from integration.domain.course import Course, FixedState, OutboundStatus, State
from integration.errors import InvalidInput, Rejected, UnknownMessageKind
from integration.flows.dispatch import Pipeline, transform
from integration.flows.results import FlowResult, Refusal
from integration.log import cpr_numbers_in
from integration.messages.acknowledgement import Issue, acknowledgement, addressing, receiver_of
from tests.conftest import GOLDEN
from tests.fuzz.harness import check_emitted

BOUNDED = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same examples on every run, so CI is deterministic
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
WEEKDAY = datetime.fromisoformat("2027-01-12T10:20:00+01:00")
SATURDAY = datetime.fromisoformat("2027-01-16T10:20:00+01:00")  # after hours: the flows build replies too
PATIENT = "2512489996"
NAMES = ("Nancy", "Berggren", "Kirsten", "Karen Jensen")
STATE = FixedState(courses={PATIENT: Course(PATIENT, "715541000016001", "851", True, "hospital")})
CLOSING_NS = "urn:dk:hjerterehab:closing-report:1"
JsonPath = tuple[str | int, ...]


# -- what every outcome must satisfy --------------------------------------------------------------


class Flows:
    """The session's pipeline, with a short repr: Hypothesis prints a failing example's arguments."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def __repr__(self) -> str:
        return "<the session's pipeline>"


@pytest.fixture(scope="module")
def flows(pipeline: Pipeline) -> Flows:
    return Flows(pipeline)


def _no_personal_data(text: str) -> None:
    assert not cpr_numbers_in(text), text
    assert not any(name in text for name in NAMES), text


def _checked_rejection(rejection: Rejected, answer: FlowResult | None) -> Rejected:
    message = str(rejection)
    assert message and "\n" not in message
    _no_personal_data(message)
    if isinstance(rejection, InvalidInput):
        _no_personal_data(rejection.field)
        for detail in rejection.details:
            _no_personal_data(detail)
    if isinstance(answer, FlowResult):
        for out in answer.outgoing:  # a MedCom sender's ack: its OperationOutcome goes out
            outcomes = [
                e["resource"] for e in out.message["entry"] if e["resource"]["resourceType"] == "OperationOutcome"
            ]
            _no_personal_data(json.dumps(outcomes, ensure_ascii=False))
    return rejection


def outcome(raw: bytes, flows: Flows, now: datetime, state: State, flow: str | None = None) -> Any:
    """The flow's answer: a FlowResult (its messages checked as validate's fast layers check them) or a Rejected,
    raised or returned in a Refusal (checked for personal data, its answer too); anything else propagates."""
    try:
        result = transform(raw, flows.pipeline, now, flow=flow, state=state)
    except Rejected as rejection:
        return _checked_rejection(rejection, None)
    if isinstance(result, Refusal):
        return _checked_rejection(result.rejection, result.answer)
    check_emitted(result)  # nothing leaves that validate's fast layers would call an error
    return result


def assert_field_named(result: Any) -> None:
    if isinstance(result, InvalidInput):
        assert result.field, f"a specific field was changed, but the rejection names none: {result}"


# -- hostile JSON values ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """JSON text spliced in verbatim: what json.dumps cannot write (nesting a thousand deep, huge numbers)."""

    text: str


def _deep(depth: int, kind: str) -> Raw:
    if kind == "array":
        return Raw("[" * depth + "]" * depth)
    return Raw('{"a":' * depth + "1" + "}" * depth)


RAW_NUMBERS = [
    "1e400",
    "-1e400",
    "1e-400",
    "4e-324",
    "1" * 400,
    "-" + "9" * 400,
    "0." + "1" * 400,
    "1" * 400 + ".5",
    "-0",
    "-0.0",
    "9007199254740993",
    "18446744073709551616",
    "1.7976931348623157e308",
    "1E2",
]
HOSTILE_STRINGS = [
    "",
    " ",
    "\t\n",
    "\u0000",
    "a\u0007b",
    "\u001c",
    "\u0085",
    "\u00a0",
    "\u2028",
    "\ufeff",
    "NaN",
    "Infinity",
    "-Infinity",
    "null",
    "x" * 70_000,
    PATIENT,
    "251248-9996",
    "Patient/" + PATIENT,
    "Nancy Berggren",
    "٢٥١٢٤٨٩٩٩٦",
    "2026-11-20T24:00:00+01:00",
    "2026-11-20T23:59:60+01:00",
    "2016-12-31T23:59:60Z",
    "12026-11-20T10:00:00+01:00",
    "-2026-11-20",
    "2026-11-20+01:00",
    "2026-13-01",
    "0000-01-01",
    "0001-01-01",
    "9999-12-31",
    "9999-12-31T23:59:59-14:00",
    "0001-01-01T00:00:00+14:00",
    "2026-11-20T10:00:00+23:59",
    "2026-11-20T10:00:00.1234567891234+01:00",
    "urn:uuid:not-a-uuid",
    "<script>alert(1)</script>",
    "&amp;",
    "%s{0}",
]
WRONG_TYPES: list[Any] = [None, True, False, 0, -1, 1.5, [], {}, [None], {"": None}, [[]], {"a": {"b": {}}}]
HOSTILE_KEYS = ["", PATIENT, "Nancy Berggren", "x" * 300, "__proto__", "resourceType", "id", "text"]


def hostile_values() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from(HOSTILE_STRINGS),
        st.sampled_from(WRONG_TYPES),
        st.sampled_from([Raw(n) for n in RAW_NUMBERS]),
        st.builds(_deep, st.sampled_from([65, 300, 1000]), st.sampled_from(["array", "object"])),
        st.text(max_size=40),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
    )


def _paths(node: Any, path: JsonPath = ()) -> Iterator[JsonPath]:
    yield path
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        yield from _paths(child, (*path, key))


def _parent(document: Any, path: JsonPath) -> Any:
    node = document
    for part in path[:-1]:
        node = node[part]
    return node


def _serialise(document: Any, raws: dict[str, Raw]) -> bytes:
    text = json.dumps(document, ensure_ascii=False)
    for marker, raw in raws.items():
        text = text.replace(json.dumps(marker), raw.text)
    return text.encode("utf-8", errors="surrogatepass")


@dataclass(frozen=True)
class Mutation:
    path: JsonPath
    action: str  # replace | delete | add-key | rename-key | wrap
    value: Any = None

    def apply(self, original: Any) -> bytes:
        document, raws = copy.deepcopy(original), {}
        value = self.value
        if isinstance(value, Raw):
            raws["\u0001raw\u0001"] = value
            value = "\u0001raw\u0001"
        if not self.path:
            return _serialise(value if self.action == "replace" else [document], raws)
        parent, last = _parent(document, self.path), self.path[-1]
        if self.action == "replace":
            parent[last] = value
        elif self.action == "delete":
            del parent[last]
        elif self.action == "wrap":
            parent[last] = [parent[last]]
        elif self.action == "add-key" and isinstance(parent[last], dict):
            parent[last][str(self.value)] = "x"
        elif self.action == "rename-key" and isinstance(parent, dict):
            parent[str(self.value)] = parent.pop(last)
        return _serialise(document, raws)


def mutations(document: Any) -> st.SearchStrategy[Mutation]:
    paths = list(_paths(document))
    inner = [p for p in paths if p]
    return st.one_of(
        st.builds(Mutation, st.sampled_from(inner), st.just("replace"), hostile_values()),
        st.builds(Mutation, st.sampled_from(inner), st.sampled_from(["delete", "wrap"])),
        st.builds(Mutation, st.sampled_from(paths), st.just("add-key"), st.sampled_from(HOSTILE_KEYS)),
        st.builds(
            Mutation,
            st.sampled_from([p for p in inner if isinstance(p[-1], str)]),
            st.just("rename-key"),
            st.sampled_from(HOSTILE_KEYS),
        ),
    )


def _named_field_expected(mutation: Mutation) -> bool:
    """A rejection can name the field unless the JSON itself cannot be read (a lone surrogate)."""
    return not (isinstance(mutation.value, str) and re.search(r"[\ud800-\udfff]", mutation.value))


def _samples(folder: str, pattern: str) -> list[Any]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted((GOLDEN / folder).glob(pattern))]


DISCHARGE = _samples("discharge", "*.event.json")
ADVICE = _samples("hotline", "*.request.json")
CARE_COMMUNICATION = _samples("hotline", "*.carecommunication.json")


def _sample_and_mutation(samples: list[Any]) -> st.SearchStrategy[tuple[Any, Mutation]]:
    return st.sampled_from(samples).flatmap(lambda s: st.tuples(st.just(s), mutations(s)))


# -- the JSON flows --------------------------------------------------------------------------------


@BOUNDED
@given(case=_sample_and_mutation(DISCHARGE))
def test_any_mutated_discharge_event_is_answered(flows: Flows, case: tuple[Any, Mutation]) -> None:
    sample, mutation = case
    result = outcome(mutation.apply(sample), flows, WEEKDAY, STATE)
    if _named_field_expected(mutation) and mutation.path:
        assert_field_named(result)


@BOUNDED
@given(case=_sample_and_mutation(ADVICE), now=st.sampled_from([WEEKDAY, SATURDAY]))
def test_any_mutated_advice_request_is_answered(flows: Flows, case: tuple[Any, Mutation], now: datetime) -> None:
    sample, mutation = case
    result = outcome(mutation.apply(sample), flows, now, STATE)
    if _named_field_expected(mutation) and mutation.path:
        assert_field_named(result)


@BOUNDED
@given(case=_sample_and_mutation(CARE_COMMUNICATION), now=st.sampled_from([WEEKDAY, SATURDAY]))
def test_any_mutated_care_communication_is_answered(flows: Flows, case: tuple[Any, Mutation], now: datetime) -> None:
    sample, mutation = case
    outcome(mutation.apply(sample), flows, now, STATE)


# -- CareCommunication in FHIR XML -----------------------------------------------------------------

FHIR = "{http://hl7.org/fhir}"
CARE_COMMUNICATION_XML = Bundle.model_validate(CARE_COMMUNICATION[0]).model_dump_xml()
XML_VALUES = [v for v in HOSTILE_STRINGS if v and re.fullmatch(r"[\t\n\r\u0020-\ud7ff\ue000-\ufffd]*", v)]


@dataclass(frozen=True)
class XmlMutation:
    position: int  # which element, in document order
    action: str  # value | delete | unknown-child | duplicate
    value: str = ""

    def apply(self, raw: bytes) -> bytes:
        root = etree.fromstring(raw)
        elements = list(root.iter())
        element = elements[self.position % len(elements)]
        if self.action == "value":
            element.set("value", self.value)
        elif self.action == "delete" and element.getparent() is not None:
            element.getparent().remove(element)
        elif self.action == "unknown-child":
            etree.SubElement(element, f"{FHIR}bogus", value="x")
        elif self.action == "duplicate" and element.getparent() is not None:
            element.addnext(copy.deepcopy(element))
        return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


@BOUNDED
@given(
    mutation=st.builds(
        XmlMutation,
        st.integers(min_value=0, max_value=10_000),
        st.sampled_from(["value", "value", "delete", "unknown-child", "duplicate"]),
        st.sampled_from(XML_VALUES),
    ),
    now=st.sampled_from([WEEKDAY, SATURDAY]),
)
def test_any_mutated_care_communication_in_xml_is_answered(flows: Flows, mutation: XmlMutation, now: datetime) -> None:
    outcome(mutation.apply(CARE_COMMUNICATION_XML), flows, now, STATE)


# -- acknowledgements of our own messages ----------------------------------------------------------


@pytest.fixture(scope="module")
def our_referral_and_ack(pipeline: Pipeline) -> tuple[FixedState, dict[str, Any]]:
    raw = (GOLDEN / "discharge" / "01-municipal-gop-general-sternotomy.event.json").read_bytes()
    (referral,) = transform(raw, pipeline, WEEKDAY).outgoing
    issues = [Issue("invalid", "MSG_BAD_FORMAT", "no", "Patient")]
    ack = acknowledgement(addressing(referral.message), "fatal-error", issues, SATURDAY, pipeline.referral.terminology)
    header = referral.message["entry"][0]["resource"]["id"]
    return FixedState(sent={header: OutboundStatus(header, "awaiting", 0, PATIENT, receiver_of(referral.message))}), ack


@BOUNDED
@given(data=st.data())
def test_any_mutated_acknowledgement_is_answered(
    flows: Flows, our_referral_and_ack: tuple[FixedState, dict[str, Any]], data: st.DataObject
) -> None:
    state, ack = our_referral_and_ack
    mutation = data.draw(mutations(ack))
    outcome(mutation.apply(ack), flows, SATURDAY, state, flow="acknowledgement")


# -- the closing report ----------------------------------------------------------------------------

# Lexical forms by XSD type: what XSD 1.0 admits (and a few it does not); the schema and the reader
# must agree on every one of them.
DATES = [
    "2027-02-15",
    " 2027-02-15 ",
    "2027-02-15Z",
    "2027-02-15+01:00",
    "2027-02-15-14:00",
    "2027-02-15+14:00",
    "2027-02-15+14:01",
    "12027-02-15",
    "-2027-02-15",
    "0001-01-01",
    "0000-01-01",
    "9999-12-31",
    "2027-02-29",
    "2028-02-29",
    "2027-2-15",
    "٢٠٢٧-٠٢-١٥",
]
DATETIMES = [
    "2027-02-20T10:00:00+01:00",
    "2027-02-20T10:00:00Z",
    " 2027-02-20T10:00:00+01:00\n",
    "2027-02-20T24:00:00+01:00",
    "2027-02-20T23:59:60Z",
    "2027-02-20T10:00:00.123456789+01:00",
    "2027-02-20T10:00:00",
    "2027-02-20T10:00+01:00",
    "12027-02-20T10:00:00+01:00",
    "-2027-02-20T10:00:00+01:00",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "2027-02-20T10:00:00+14:01",
    "2027-02-20T10:00:00+15:00",
]
DECIMALS = [
    "85",
    "85.0",
    "85.00",
    "+01.50",
    ".5",
    "5.",
    "-0",
    "0",
    " 85.5 ",
    "0" * 40 + "85",
    "85." + "0" * 40,
    "123456789012345",
    "1234567890123456",
    "0.000000000000001",
    "9" * 400,
    "0." + "1" * 400,
    "1e2",
    "NaN",
    "INF",
    "",
    "1,5",
]
INTEGERS = ["0", "1", "+1", "01", " 2 ", "0" * 5000 + "3", "-0", "3.0", "1e1", "", "٣", "9" * 400]
BOOLEANS = ["true", "false", "1", "0", " true ", "\tfalse\n", "TRUE", "yes", ""]
TEXTS = [
    "Tekst",
    " x ",
    "\u00a0",
    "\u2028",
    "\u0085",
    "a\u0085b",
    "\u00a0x\u00a0",
    "\u007f",
    "x" * 20_000,
    "x" * 20_001,
    "",
    " ",
    "Karen ",
    " Karen",
    "Karen  Jensen",
    "Karen\u00a0",
    "<b>&amp;</b>",
]
DIGITS = ["2512489996", "251248999", "٢٥١٢٤٨٩٩٩٦", "ab", "", "0" * 18, "1" * 19, " 012345 ", "012345"]
FORMS_BY_TYPE = {
    "date": DATES,
    "datetime": DATETIMES,
    "decimal": DECIMALS,
    "integer": INTEGERS,
    "boolean": BOOLEANS,
    "text": TEXTS,
    "digits": DIGITS,
}
# Every typed value of the golden reports, by (element, attribute or None for the text): its XSD type.
TYPED = {
    ("ClosingReport", "version"): "digits",
    ("SentAt", None): "datetime",
    ("Municipality", "code"): "digits",
    ("Municipality", "sor"): "digits",
    ("Municipality", "ean"): "digits",
    ("Name", None): "text",
    ("Patient", "cpr"): "digits",
    ("GivenName", None): "text",
    ("FamilyName", None): "text",
    ("GeneralPractitioner", "sor"): "digits",
    ("GeneralPractitioner", "ydernummer"): "digits",
    ("ReferralRef", None): "text",
    ("Course", "start"): "date",
    ("Course", "end"): "date",
    ("Element", "completed"): "boolean",
    ("Element", "sessions"): "integer",
    ("ClosingConversation", "date"): "date",
    ("Measurement", "before"): "decimal",
    ("Measurement", "after"): "decimal",
    ("Measurement", "unit"): "text",
    ("HADS", "date"): "date",
    ("Item", "n"): "integer",
    ("Item", "score"): "integer",
    ("Anxiety", None): "integer",
    ("Depression", None): "integer",
    ("Summary", None): "text",
    ("FollowUp", None): "text",
    ("HospitalRetainsResponsibility", None): "boolean",
    ("Author", "name"): "text",
    ("Author", "role"): "text",
    ("Author", "phone"): "digits",
}
# Checks after the XSD that a schema-valid change may still fail, legitimately: (field prefix, problem words)
AFTER_THE_SCHEMA = (
    ("ClosingReport.Course", "ends before it starts"),
    ("ClosingReport.HADS", "more than once"),
    ("ClosingReport.Patient.cpr", ""),
    ("ClosingReport.Measurements.Measurement", "is measured in"),
)
REPORTS = [p.read_bytes() for p in sorted((GOLDEN / "closing").glob("*.report.xml"))]


def _places(raw: bytes) -> list[tuple[int, str | None, str]]:
    """(element position, attribute or None, XSD type) of every typed value in the report."""
    root = etree.fromstring(raw)
    found = []
    for position, element in enumerate(root.iter()):
        name = etree.QName(element).localname
        found += [
            (position, a, kind) for (n, a), kind in TYPED.items() if n == name and (a is None or a in element.attrib)
        ]
    return found


@dataclass(frozen=True)
class ReportChange:
    report: int
    place: tuple[int, str | None, str]
    form: str

    def apply(self) -> bytes:
        root = etree.fromstring(REPORTS[self.report])
        position, attribute, _ = self.place
        element = list(root.iter())[position]
        if attribute is None:
            element.text = self.form
        else:
            element.set(attribute, self.form)
        return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _report_changes() -> st.SearchStrategy[ReportChange]:
    def for_report(index: int) -> st.SearchStrategy[ReportChange]:
        places = _places(REPORTS[index])
        return st.sampled_from(places).flatmap(
            lambda place: st.builds(
                ReportChange, st.just(index), st.just(place), st.sampled_from(FORMS_BY_TYPE[place[2]])
            )
        )

    return st.integers(min_value=0, max_value=len(REPORTS) - 1).flatmap(for_report)


NOW_CLOSING = datetime.fromisoformat("2027-02-20T10:05:00+01:00")


@settings(BOUNDED, max_examples=300)
@given(change=_report_changes())
def test_every_lexical_form_of_a_closing_reports_typed_values_is_read_or_refused_by_the_schema(
    flows: Flows, change: ReportChange
) -> None:
    raw = change.apply()
    result = outcome(raw, flows, NOW_CLOSING, STATE)
    assert_field_named(result)
    schema_valid = flows.pipeline.closing_schema.validate(etree.fromstring(raw))
    if schema_valid and isinstance(result, InvalidInput):  # the XSD admitted it: only the later checks may refuse
        assert any(result.field.startswith(prefix) and words in result.problem for prefix, words in AFTER_THE_SCHEMA), (
            f"the XSD admits {change.form!r} but the reader refuses it: {result}"
        )
    if not schema_valid:  # the XSD refused it, and the rejection says where
        assert isinstance(result, InvalidInput) and result.field.startswith("ClosingReport"), result


@dataclass(frozen=True)
class ReportStructure:
    report: int
    position: int
    action: str  # delete | duplicate | unknown-child | unknown-attribute | text

    def apply(self) -> bytes:
        root = etree.fromstring(REPORTS[self.report])
        elements = list(root.iter())
        element = elements[self.position % len(elements)]
        parent = element.getparent()
        if self.action == "delete" and parent is not None:
            parent.remove(element)
        elif self.action == "duplicate" and parent is not None:
            element.addnext(copy.deepcopy(element))
        elif self.action == "unknown-child":
            etree.SubElement(element, f"{{{CLOSING_NS}}}Unknown").text = PATIENT
        elif self.action == "unknown-attribute":
            element.set("extra", PATIENT)
        elif self.action == "text":
            element.text = PATIENT
        return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


@BOUNDED
@given(
    change=st.builds(
        ReportStructure,
        st.integers(min_value=0, max_value=len(REPORTS) - 1),
        st.integers(min_value=0, max_value=200),
        st.sampled_from(["delete", "duplicate", "unknown-child", "unknown-attribute", "text"]),
    )
)
def test_any_restructured_closing_report_is_answered(flows: Flows, change: ReportStructure) -> None:
    result = outcome(change.apply(), flows, NOW_CLOSING, STATE)
    assert not isinstance(result, UnknownMessageKind)
