"""Bad input is a rejection, never our bug (issue #10, point 6): one regression test per form.

Each input here made a flow raise something other than a Rejected (ValueError, KeyError, TypeError,
AttributeError, RecursionError, OverflowError, a BuildError from content we repeated), which the
runtime retries six times and dead-letters as `internal-error`, answering a MedCom sender
`transient-error`. Now each is rejected on its first attempt, naming the field, and a MedCom sender
gets `fatal-error`; the message never repeats a CPR number or a name.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fhir.resources.R4B.bundle import Bundle
from lxml import etree

from integration.conformance.validation import fhir_problems, messaging_problems
from integration.domain.course import Course, FixedState, OutboundStatus
from integration.errors import InvalidInput, Rejected
from integration.flows.dispatch import Pipeline, transform
from integration.flows.results import FlowResult
from integration.formats.closing_report import parse_closing_report
from integration.log import cpr_numbers_in
from integration.messages.acknowledgement import Issue, acknowledgement, addressing, receiver_of
from tests.conftest import GOLDEN
from tests.refusals import refusal

CPR = "2512489996"
STATE = FixedState(courses={CPR: Course(CPR, "715541000016001", "851", True, "hospital")})
WEEKDAY = datetime.fromisoformat("2027-01-12T10:20:00+01:00")
SATURDAY = datetime.fromisoformat("2027-01-16T10:20:00+01:00")  # after hours: the reply is built too
CLOSING_NOW = datetime(2027, 2, 20, 10, 5, tzinfo=ZoneInfo("Europe/Copenhagen"))
DISCHARGE_NOW = datetime(2026, 11, 20, 14, 30, tzinfo=ZoneInfo("Europe/Copenhagen"))

REPORT = (GOLDEN / "closing" / "01-full-items.report.xml").read_text(encoding="utf-8")
EVENT = json.loads((GOLDEN / "discharge" / "01-municipal-gop-general-sternotomy.event.json").read_text())
EVENT_WITH_TEST = json.loads((GOLDEN / "discharge" / "08-exercise-test-with-results.event.json").read_text())
CARE_COMMUNICATION = json.loads((GOLDEN / "hotline" / "municipality-routine.carecommunication.json").read_text())


def refused(raw: bytes, pipeline: Pipeline, now: datetime, **kwargs: Any) -> tuple[Rejected, FlowResult | None]:
    """The rejection of `raw` and the answer its sender gets with it (None: raised without one), checked to
    repeat nothing personal; any other exception fails the test."""
    rejection, answer = refusal(raw, pipeline, now, **kwargs)
    texts = [str(rejection), getattr(rejection, "field", ""), *getattr(rejection, "details", ())]
    for text in texts:
        assert not cpr_numbers_in(text) and "Berggren" not in text and "Nancy" not in text, text
        assert "\n" not in text
    return rejection, answer


def rejected(raw: bytes, pipeline: Pipeline, now: datetime, **kwargs: Any) -> Rejected:
    """The rejection of `raw` (`refused`), whatever its answer."""
    return refused(raw, pipeline, now, **kwargs)[0]


def ack_code(answer: FlowResult | None) -> str | None:
    """The response code of the ack a MedCom sender gets with the rejection (None: no ack possible)."""
    assert isinstance(answer, FlowResult)
    acks = [o.message for o in answer.outgoing if o.route.exchange == "rehab.ack"]
    return acks[0]["entry"][0]["resource"]["response"]["code"] if acks else None


def report(old: str, new: str) -> bytes:
    assert old in REPORT, old
    return REPORT.replace(old, new, 1).encode()


def event(path: str, value: Any, base: dict[str, Any] = EVENT) -> bytes:
    document = copy.deepcopy(base)
    *parents, last = path.split(".")
    node = document
    for part in parents:
        node = node[part]
    node[last] = value
    return json.dumps(document).encode()


def spliced(raw: bytes, placeholder: str, json_text: str) -> bytes:
    """Put JSON text in place of a string value: what json.dumps cannot write (a thousand-deep array)."""
    marker = json.dumps(placeholder).encode()
    assert marker in raw
    return raw.replace(marker, json_text.encode())


def care_communication(change: Callable[[dict[str, Any]], None]) -> bytes:
    bundle = copy.deepcopy(CARE_COMMUNICATION)
    change(bundle)
    return json.dumps(bundle).encode()


def resource(bundle: dict[str, Any], rtype: str) -> dict[str, Any]:
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype)


# -- the closing report: forms XSD 1.0 admits that the reader could not read ----------------------


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ('start="2026-12-01"', 'start="2026-12-01+01:00"', "ClosingReport.Course.start"),
        ('end="2027-02-15"', 'end="2027-02-15Z"', "ClosingReport.Course.end"),
        ('ClosingConversation date="2027-02-15"', 'ClosingConversation date="2027-02-15-05:00"', "date"),
        ('HADS date="2027-02-15"', 'HADS date="2027-02-15+14:00"', "ClosingReport.HADS.date"),
    ],
    ids=["course-start", "course-end", "closing-conversation", "hads"],
)
def test_a_date_with_a_zone_is_refused_by_the_schema_naming_the_attribute(
    pipeline: Pipeline, old: str, new: str, field: str
) -> None:
    rejection = rejected(report(old, new), pipeline, CLOSING_NOW, state=STATE)
    assert isinstance(rejection, InvalidInput) and rejection.field.endswith(field)
    assert rejection.problem == "not a date yyyy-mm-dd (a year from 1900 to 2199, no time zone)"


def test_the_patterns_put_in_words_are_the_schemas_own() -> None:
    from integration.config import PROJECT_ROOT
    from integration.formats.closing_report import _PATTERN_WORDS

    xsd = (PROJECT_ROOT / "schemas" / "closing-report.xsd").read_text(encoding="utf-8")
    assert all(f'<xs:pattern value="{pattern}"/>' in xsd for pattern in _PATTERN_WORDS)


def test_the_shared_date_with_a_zone_is_refused_naming_the_closing_conversation(
    shared: Path, pipeline: Pipeline
) -> None:
    raw = (shared / "cases" / "edge-inputs" / "10-xsd-date-with-zone.closing.xml").read_bytes()
    rejection = rejected(raw, pipeline, CLOSING_NOW)
    assert isinstance(rejection, InvalidInput) and rejection.field == "ClosingReport.ClosingConversation.date"


def test_24_00_00_is_refused_by_the_schema_naming_sent_at(pipeline: Pipeline) -> None:
    rejection = rejected(report("2027-02-20T10:00:00+01:00", "2027-02-20T24:00:00+01:00"), pipeline, CLOSING_NOW)
    assert isinstance(rejection, InvalidInput) and rejection.field == "ClosingReport.SentAt"


def test_the_shared_24_00_00_is_refused_naming_sent_at(shared: Path, pipeline: Pipeline) -> None:
    raw = (shared / "cases" / "edge-inputs" / "11-xsd-datetime-2400.closing.xml").read_bytes()
    rejection = rejected(raw, pipeline, CLOSING_NOW)
    assert isinstance(rejection, InvalidInput) and rejection.field == "ClosingReport.SentAt"


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("2027-02-20T10:00:00+01:00", "12027-02-20T10:00:00+01:00", "ClosingReport.SentAt"),
        ("2027-02-20T10:00:00+01:00", "-2027-02-20T10:00:00+01:00", "ClosingReport.SentAt"),
        ('start="2026-12-01"', 'start="12026-12-01"', "ClosingReport.Course.start"),
        ('start="2026-12-01"', 'start="-2026-12-01"', "ClosingReport.Course.start"),
    ],
    ids=["five-digit-sent-at", "negative-sent-at", "five-digit-date", "negative-date"],
)
def test_a_year_beyond_four_digits_is_refused_by_the_schema(pipeline: Pipeline, old: str, new: str, field: str) -> None:
    rejection = rejected(report(old, new), pipeline, CLOSING_NOW)
    assert isinstance(rejection, InvalidInput) and rejection.field == field


def test_a_leap_second_in_the_closing_report_is_refused_naming_sent_at(pipeline: Pipeline) -> None:
    rejection = rejected(report("2027-02-20T10:00:00+01:00", "2016-12-31T23:59:60Z"), pipeline, CLOSING_NOW)
    assert isinstance(rejection, InvalidInput) and rejection.field == "ClosingReport.SentAt"


@pytest.mark.parametrize(
    "digits", ["9" * 400, "0." + "1" * 400, "1234567890123456"], ids=["400-digits", "400-decimals", "16-digits"]
)
def test_a_measurement_of_more_than_15_digits_is_refused_naming_the_attribute(pipeline: Pipeline, digits: str) -> None:
    rejection = rejected(report('after="85.0"', f'after="{digits}"'), pipeline, CLOSING_NOW, state=STATE)
    assert isinstance(rejection, InvalidInput)
    assert rejection.field == "ClosingReport.Measurements.Measurement[2].after" and "totalDigits" in rejection.problem
    assert digits not in str(rejection)


def test_an_integer_with_thousands_of_leading_zeros_is_read_as_the_schema_reads_it(pipeline: Pipeline) -> None:
    raw = report('<Item n="1" score="1"/>', f'<Item n="{"0" * 5000}1" score="{"0" * 5000}1"/>')
    schema = pipeline.closing_schema
    assert parse_closing_report(raw, schema, len(raw)).hads == parse_closing_report(REPORT.encode(), schema, 10**6).hads
    assert transform(raw, pipeline, CLOSING_NOW, state=STATE).outgoing


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('completed="true" sessions', 'completed=" true " sessions'),
        ('completed="true" sessions', 'completed="&#9;1&#10;" sessions'),
        ("<HospitalRetainsResponsibility>false", "<HospitalRetainsResponsibility>\n  0  "),
    ],
    ids=["spaces", "tab-and-newline-one", "element-zero"],
)
def test_a_boolean_with_white_space_is_read_as_the_schema_reads_it(pipeline: Pipeline, old: str, new: str) -> None:
    raw = report(old, new)
    schema = pipeline.closing_schema
    read, golden = parse_closing_report(raw, schema, 10**6), parse_closing_report(REPORT.encode(), schema, 10**6)
    assert read.elements == golden.elements
    assert read.hospital_retains_responsibility is golden.hospital_retains_responsibility


def test_xsd_lexical_forms_of_numbers_are_read_as_the_schema_reads_them(pipeline: Pipeline) -> None:
    raw = report('after="85.0"', 'after=" +085.0 "').replace(b'sessions="16"', b'sessions="+016"')
    read = parse_closing_report(raw, pipeline.closing_schema, 10**6)
    assert str(read.measurements[1].after) == "85.0" and read.elements[0].sessions == 16


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ('ydernummer="012345"', 'ydernummer="٠١٢٣٤٥"', "ClosingReport.GeneralPractitioner.ydernummer"),
        ('cpr="2512489996"', 'cpr="٢٥١٢٤٨٩٩٩٦"', "ClosingReport.Patient.cpr"),
        ('sor="434751000016002"', 'sor="４３４７５１００００１６００２"', "ClosingReport.Municipality.sor"),
    ],
    ids=["arabic-indic-ydernummer", "arabic-indic-cpr", "fullwidth-sor"],
)
def test_digits_of_other_scripts_are_refused_by_the_schema(pipeline: Pipeline, old: str, new: str, field: str) -> None:
    rejection = rejected(report(old, new), pipeline, CLOSING_NOW)
    assert isinstance(rejection, InvalidInput) and rejection.field == field


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("<FamilyName>Berggren</FamilyName>", "<FamilyName>&#xa0;</FamilyName>", "ClosingReport.Patient.FamilyName"),
        ('role="Sygeplejerske"', 'role="&#x2028;"', "ClosingReport.Author.role"),
        ("<Name>Aalborg Kommune, Sundhedscenter</Name>", "<Name>&#x85;</Name>", "ClosingReport.Municipality.Name"),
    ],
    ids=["no-break-space", "line-separator", "next-line"],
)
def test_text_of_nothing_but_spaces_of_any_kind_is_refused_by_the_schema(
    pipeline: Pipeline, old: str, new: str, field: str
) -> None:
    rejection = rejected(report(old, new), pipeline, CLOSING_NOW)
    assert isinstance(rejection, InvalidInput) and rejection.field == field


@pytest.mark.parametrize("name", ["Karen ", "Karen\u00a0", " Karen  Jensen ", "Karen\tJensen"])
def test_an_author_name_with_stray_spaces_makes_a_valid_practitioner(pipeline: Pipeline, name: str) -> None:
    raw = REPORT.replace('name="Karen Jensen"', f'name="{name}"').encode()
    result = transform(raw, pipeline, CLOSING_NOW, state=STATE)
    message = result.outgoing[1].message
    (practitioner,) = [e["resource"] for e in message["entry"] if e["resource"]["resourceType"] == "Practitioner"]
    assert practitioner["name"][0]["family"] in ("Karen", "Jensen")


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ("25124899961", "ClosingReport.Patient.cpr"),
        ("'25124899961' is not a valid value of x", "ClosingReport.Patient.cpr"),
    ],
    ids=["eleven-digits", "quote-in-value"],
)
def test_a_schema_violation_never_repeats_the_value(pipeline: Pipeline, value: str, field: str) -> None:
    rejection = rejected(report('cpr="2512489996"', f'cpr="{value}"'), pipeline, CLOSING_NOW)
    assert isinstance(rejection, InvalidInput) and rejection.field == field
    assert "2512489996" not in str(rejection) and "valid value of x" not in str(rejection)


# -- JSON: discharge events and advice requests ----------------------------------------------------


def test_a_thousand_deep_array_in_a_note_is_refused_naming_the_note(pipeline: Pipeline) -> None:
    raw = spliced(event("referral.note", "DEEP"), "DEEP", "[" * 1000 + "]" * 1000)
    rejection = rejected(raw, pipeline, DISCHARGE_NOW)
    assert isinstance(rejection, InvalidInput) and rejection.field.startswith("referral.note")
    assert "nested more than 64 levels" in rejection.problem


@pytest.mark.parametrize("depth", [65, 300])
def test_deep_nesting_anywhere_is_refused_where_it_starts(pipeline: Pipeline, depth: int) -> None:
    raw = spliced(event("patient.givenNames", "DEEP"), "DEEP", '{"a":' * depth + "1" + "}" * depth)
    rejection = rejected(raw, pipeline, DISCHARGE_NOW)
    assert isinstance(rejection, InvalidInput) and rejection.field.startswith("patient.givenNames")


@pytest.mark.parametrize("number", ["1" * 400, "1e400", "-" + "9" * 400 + ".5"])
def test_a_number_beyond_a_double_is_refused_naming_the_field(pipeline: Pipeline, number: str) -> None:
    raw = spliced(event("exerciseTest.mets", "HUGE", EVENT_WITH_TEST), "HUGE", number)
    rejection = rejected(raw, pipeline, DISCHARGE_NOW)
    assert isinstance(rejection, InvalidInput) and rejection.field == "exerciseTest.mets"


@pytest.mark.parametrize("zone", ["+23:59", "-14:01", "+15:00"])
def test_a_time_zone_beyond_14_hours_is_refused_by_the_schema(pipeline: Pipeline, zone: str) -> None:
    rejection = rejected(event("occurredAt", f"2026-11-20T14:05:00{zone}"), pipeline, DISCHARGE_NOW)
    assert isinstance(rejection, InvalidInput) and rejection.field == "occurredAt"


def test_an_advice_request_with_a_zone_beyond_14_hours_is_refused(pipeline: Pipeline) -> None:
    request = json.loads((GOLDEN / "hotline" / "municipality-routine.request.json").read_text())
    request["sentAt"] = "2026-11-23T09:58:00+23:00"
    rejection = rejected(json.dumps(request).encode(), pipeline, WEEKDAY, state=STATE)
    assert isinstance(rejection, InvalidInput) and rejection.field == "sentAt"


@pytest.mark.parametrize("surgery", ["9999-12-31", "9999-11-20"])
def test_a_surgery_date_whose_bicycle_test_date_is_past_9999_is_refused(pipeline: Pipeline, surgery: str) -> None:
    rejection = rejected(event("surgery.date", surgery), pipeline, DISCHARGE_NOW)
    assert isinstance(rejection, InvalidInput) and rejection.field == "surgery.date"


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("clinicianRiskGroup", CPR, "clinicianRiskGroup"),
        ("clinicianRiskGroup", "Nancy Berggren", "clinicianRiskGroup"),
        ("clinicianRiskGroup", [CPR], "clinicianRiskGroup"),
        ("patient." + CPR, "x", "patient.?"),
    ],
    ids=["cpr-as-code", "name-as-code", "list-as-code", "cpr-as-key"],
)
def test_an_unknown_value_or_key_is_not_repeated_unless_it_looks_like_a_code(
    pipeline: Pipeline, path: str, value: Any, field: str
) -> None:
    rejection = rejected(event(path, value), pipeline, DISCHARGE_NOW)
    assert isinstance(rejection, InvalidInput) and rejection.field == field


# -- MedCom CareCommunication (JSON and XML) -------------------------------------------------------


@pytest.mark.parametrize("now", [WEEKDAY, SATURDAY], ids=["in-hours", "after-hours"])
@pytest.mark.parametrize("rtype", ["Patient", "Communication", "MessageHeader", "Provenance", "Practitioner"])
def test_a_resource_without_narrative_gets_fatal_error_naming_its_text(
    pipeline: Pipeline, rtype: str, now: datetime
) -> None:
    rejection, answer = refused(
        care_communication(lambda b: resource(b, rtype).pop("text")), pipeline, now, state=STATE
    )
    assert isinstance(rejection, InvalidInput) and rejection.field == f"{rtype}.text"
    assert ack_code(answer) == "fatal-error"


def test_a_provenance_without_id_cannot_be_acknowledged_and_says_so(pipeline: Pipeline) -> None:
    rejection, answer = refused(care_communication(lambda b: resource(b, "Provenance").pop("id")), pipeline, SATURDAY)
    assert isinstance(rejection, InvalidInput) and rejection.field == "Provenance.id"
    assert ack_code(answer) is None


@pytest.mark.parametrize("rtype", ["Practitioner", "PractitionerRole", "Patient", "Organization"])
def test_a_resource_id_that_is_not_a_uuid_gets_fatal_error_naming_it(pipeline: Pipeline, rtype: str) -> None:
    rid = resource(CARE_COMMUNICATION, rtype)["id"]
    raw = json.dumps(CARE_COMMUNICATION).replace(rid, "not-a-uuid").encode()  # the id and every reference to it
    rejection = rejected(raw, pipeline, SATURDAY, state=STATE)
    assert isinstance(rejection, InvalidInput) and rejection.field == f"{rtype}.id"


def test_a_practitioner_without_id_gets_fatal_error_naming_it(pipeline: Pipeline) -> None:
    rejection, answer = refused(care_communication(lambda b: resource(b, "Practitioner").pop("id")), pipeline, SATURDAY)
    assert isinstance(rejection, InvalidInput) and rejection.field == "Practitioner.id"
    assert ack_code(answer) == "fatal-error"


@pytest.mark.parametrize(
    ("timestamp", "words"),
    [("2016-12-31T23:59:60Z", "leap second"), ("2027-01-12T10:15:60+01:00", "leap second"), (None, "missing")],
    ids=["leap-second-utc", "second-60", "missing"],
)
def test_a_timestamp_with_second_60_or_none_gets_fatal_error_naming_it(
    pipeline: Pipeline, timestamp: str | None, words: str
) -> None:
    def stamped(bundle: dict[str, Any]) -> None:
        if timestamp is None:
            del bundle["timestamp"]
        else:
            bundle["timestamp"] = timestamp

    rejection, answer = refused(care_communication(stamped), pipeline, WEEKDAY, state=STATE)
    assert isinstance(rejection, InvalidInput) and rejection.field == "Bundle.timestamp" and words in str(rejection)
    assert ack_code(answer) == "fatal-error"


def test_a_thousand_deep_array_in_a_communication_note_is_refused_naming_where(pipeline: Pipeline) -> None:
    raw = spliced(
        care_communication(lambda b: resource(b, "Communication").update(note=[{"text": "DEEP"}])),
        "DEEP",
        "[" * 1000 + "]" * 1000,
    )
    rejection = rejected(raw, pipeline, WEEKDAY, state=STATE)
    assert isinstance(rejection, InvalidInput) and rejection.field.startswith("entry[1].resource.note[0].text")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda b: b["entry"].__setitem__(2, None), "Bundle.entry"),
        (lambda b: b["entry"].insert(1, "text"), "Bundle.entry[1]"),
        (lambda b: b.update(id=[["nested"]]), "Bundle.id"),
        (lambda b: resource(b, "Patient").update(identifier=[None]), "Patient.identifier"),
        (lambda b: resource(b, "Patient").update(identifier={"value": CPR}), "Patient.identifier"),
        (lambda b: b["entry"][0]["resource"]["source"].update(endpoint=5), "MessageHeader.source.endpoint"),
        (lambda b: b.update(timestamp=5), "Bundle.timestamp"),
        (lambda b: resource(b, "Patient").update(id=CPR), "Patient.id"),  # a UUID, MedCom says (fast checks)
    ],
    ids=[
        "entry-null",
        "entry-string",
        "bundle-id-list",
        "identifier-null",
        "identifier-object",
        "endpoint-number",
        "timestamp-number",
        "patient-id-is-a-cpr",
    ],
)
def test_a_carecommunication_of_the_wrong_shape_is_rejected_naming_where(
    pipeline: Pipeline, change: Callable[[dict[str, Any]], None], field: str
) -> None:
    rejection = rejected(care_communication(change), pipeline, SATURDAY, state=STATE)
    assert isinstance(rejection, InvalidInput) and rejection.field.startswith(field), rejection.field


def test_a_url_that_is_not_a_string_is_a_content_error_not_a_crash_of_the_validator(pipeline: Pipeline) -> None:
    def numeric_url(bundle: dict[str, Any]) -> None:
        resource(bundle, "Communication")["payload"][0]["contentAttachment"] = {"url": 5, "contentType": "text/plain"}

    rejection, answer = refused(care_communication(numeric_url), pipeline, WEEKDAY, state=STATE)
    assert isinstance(rejection, InvalidInput) and rejection.field.startswith("Communication.payload")
    assert ack_code(answer) == "fatal-error"


def test_a_patient_id_that_is_a_cpr_number_is_never_repeated_in_fhir_content_errors(pipeline: Pipeline) -> None:
    def cpr_as_id(bundle: dict[str, Any]) -> None:
        patient = resource(bundle, "Patient")
        patient["id"], patient["birthDate"] = CPR, "1948-13-45"

    rejection = rejected(care_communication(cpr_as_id), pipeline, WEEKDAY, state=STATE)
    assert isinstance(rejection, InvalidInput) and rejection.field == "Patient.birthDate"


def test_a_sender_sor_that_is_not_digits_cannot_become_a_routing_key(pipeline: Pipeline) -> None:
    def long_sor(bundle: dict[str, Any]) -> None:
        sender_ref = bundle["entry"][0]["resource"]["sender"]["reference"]
        sender = next(e["resource"] for e in bundle["entry"] if f"Organization/{e['resource']['id']}" == sender_ref)
        sender["identifier"][0]["value"] = "x" * 300

    rejection = rejected(care_communication(long_sor), pipeline, SATURDAY, state=STATE)
    assert isinstance(rejection, InvalidInput) and rejection.field == "MessageHeader.sender"


def test_a_cpr_identifier_of_use_usual_is_refused_before_our_reply_would_repeat_it(pipeline: Pipeline) -> None:
    rejection, answer = refused(
        care_communication(lambda b: resource(b, "Patient")["identifier"][0].update(use="usual")),
        pipeline,
        SATURDAY,
        state=STATE,
    )
    assert isinstance(rejection, InvalidInput) and rejection.field == "Patient.identifier"
    assert ack_code(answer) == "fatal-error"


def _as_xml(bundle: dict[str, Any]) -> bytes:
    xml = Bundle.model_validate(bundle).model_dump_xml()
    return xml if isinstance(xml, bytes) else xml.encode()


def test_an_xml_element_fhir_does_not_define_is_refused(pipeline: Pipeline) -> None:
    root = etree.fromstring(_as_xml(CARE_COMMUNICATION))
    etree.SubElement(root, "{http://hl7.org/fhir}bogus", value="1")
    rejection = rejected(etree.tostring(root), pipeline, WEEKDAY, state=STATE)
    assert isinstance(rejection, InvalidInput) and rejection.field == "Bundle.bogus"


def test_an_xml_carecommunication_without_narrative_gets_fatal_error(pipeline: Pipeline) -> None:
    bundle = copy.deepcopy(CARE_COMMUNICATION)
    resource(bundle, "Patient").pop("text")
    rejection, answer = refused(_as_xml(bundle), pipeline, SATURDAY, state=STATE)
    assert isinstance(rejection, InvalidInput) and rejection.field == "Patient.text"
    assert ack_code(answer) == "fatal-error"


def test_an_xml_timestamp_with_second_60_gets_fatal_error(pipeline: Pipeline) -> None:
    raw = _as_xml(CARE_COMMUNICATION).replace(b"2027-01-12T10:15:00+01:00", b"2027-01-12T10:15:60+01:00", 1)
    rejection = rejected(raw, pipeline, WEEKDAY, state=STATE)
    assert isinstance(rejection, InvalidInput) and rejection.field == "Bundle.timestamp"


# -- acknowledgements of our messages, and the validators on anything -----------------------------


def test_an_ack_for_an_unknown_id_does_not_repeat_it(pipeline: Pipeline) -> None:
    (referral,) = transform(json.dumps(EVENT).encode(), pipeline, DISCHARGE_NOW).outgoing
    issues = [Issue("invalid", "MSG_BAD_FORMAT", "no", "Patient")]
    ack = acknowledgement(addressing(referral.message), "fatal-error", issues, SATURDAY, pipeline.referral.terminology)
    ack["entry"][0]["resource"]["response"]["identifier"] = CPR
    header = referral.message["entry"][0]["resource"]["id"]
    state = FixedState(sent={header: OutboundStatus(header, "awaiting", 0, CPR, receiver_of(referral.message))})
    rejection = rejected(json.dumps(ack).encode(), pipeline, SATURDAY, flow="acknowledgement", state=state)
    assert isinstance(rejection, InvalidInput) and rejection.field == "MessageHeader.response.identifier"


@pytest.mark.parametrize(
    "bundle",
    [
        {"resourceType": "Bundle", "type": "message", "entry": [{"resource": {"id": "x"}}]},
        {"resourceType": "Bundle", "entry": {"a": 1}},
        {"resourceType": "Bundle", "entry": [None, "x", {"resource": []}]},
        {"resourceType": "Bundle", "id": [1], "timestamp": 5, "entry": [{"resource": {"resourceType": 5}}]},
        [1, 2],
    ],
    ids=["no-resource-type", "entry-object", "entries-of-other-types", "values-of-other-types", "not-an-object"],
)
def test_the_validators_report_findings_on_any_json_and_never_fail(bundle: Any) -> None:
    assert messaging_problems(bundle) and isinstance(fhir_problems(bundle), list)


# A message of far more JSON values than any message is refused before it is checked: 330,000 empty extensions in
# 1 MiB took ~9 s to refuse (every schema error built, every rule run over every element), 500,000 numbers 9 s.
SPRAWL = "JSON values: at most 20000 are read"


def _sprawling(bundle: dict[str, Any], extensions: int) -> dict[str, Any]:
    bundle = copy.deepcopy(bundle)
    resource(bundle, "Communication")["extension"] = [{"url": "urn:x"} for _ in range(extensions)]
    return bundle


def _xml_with_repeats(where: str, tag: str, count: int, **attributes: str) -> bytes:
    """The CareCommunication in FHIR XML with `count` more `tag` elements in the element at path `where`."""
    root = etree.fromstring(_as_xml(CARE_COMMUNICATION))
    parent = root.find(where)
    assert parent is not None
    for _ in range(count):
        etree.SubElement(parent, f"{{http://hl7.org/fhir}}{tag}", **attributes)
    return etree.tostring(root)


def _refused_for_its_size(raw: bytes, pipeline: Pipeline) -> InvalidInput:
    """Refused naming the value limit, with the fatal-error ack a MedCom sender gets for any content error."""
    rejection, answer = refused(raw, pipeline, WEEKDAY, state=STATE)
    assert isinstance(rejection, InvalidInput) and SPRAWL in str(rejection)
    assert ack_code(answer) == "fatal-error"
    return rejection


def test_a_carecommunication_of_too_many_json_values_gets_fatal_error_before_any_check(pipeline: Pipeline) -> None:
    rejection = _refused_for_its_size(json.dumps(_sprawling(CARE_COMMUNICATION, 30_000)).encode(), pipeline)
    assert rejection.field == ""


def test_an_xml_carecommunication_of_too_many_elements_gets_fatal_error(pipeline: Pipeline) -> None:
    _refused_for_its_size(_as_xml(_sprawling(CARE_COMMUNICATION, 30_000)), pipeline)


def test_a_discharge_event_of_too_many_json_values_is_refused_naming_the_limit(pipeline: Pipeline) -> None:
    event = json.loads((GOLDEN / "discharge" / "01-municipal-gop-general-sternotomy.event.json").read_bytes())
    event["padding"] = [[] for _ in range(25_000)]
    rejection = rejected(json.dumps(event).encode(), pipeline, WEEKDAY)
    assert isinstance(rejection, InvalidInput) and SPRAWL in str(rejection)


def test_a_message_twice_the_largest_we_know_is_processed(pipeline: Pipeline) -> None:
    result = transform(json.dumps(_sprawling(CARE_COMMUNICATION, 5_000)).encode(), pipeline, WEEKDAY, state=STATE)
    assert isinstance(result, FlowResult)  # 5,000 extensions of a url FHIR allows: processed


def test_a_flat_array_of_numbers_counts_as_the_values_it_holds(pipeline: Pipeline) -> None:
    """The first cap counted objects and arrays only: 500,000 numbers in one array took 9 s to refuse."""
    bundle = copy.deepcopy(CARE_COMMUNICATION)
    resource(bundle, "Communication")["extension"] = [1] * 30_000
    _refused_for_its_size(json.dumps(bundle).encode(), pipeline)


def test_an_xml_patient_of_thirty_thousand_given_names_is_refused_not_forwarded(pipeline: Pipeline) -> None:
    raw = _xml_with_repeats(".//{http://hl7.org/fhir}Patient/{http://hl7.org/fhir}name", "given", 30_000, value="a")
    _refused_for_its_size(raw, pipeline)


def test_repeated_unknown_xml_elements_are_read_in_linear_time(pipeline: Pipeline) -> None:
    """Each repeat of an unknown element copied the list so far: 200,000 of them took a minute of CPU."""
    raw = _xml_with_repeats(".//{http://hl7.org/fhir}Communication", "zz", 150_000)
    started = time.process_time()
    rejection, _ = refused(raw, pipeline, WEEKDAY, state=STATE)
    assert SPRAWL in str(rejection)
    assert time.process_time() - started < 10  # about 1 s in linear time; ~25 s when each repeat copied
