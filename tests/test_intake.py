"""Intake (issue #11, points 1, 4 and 8): what every inbound byte must be before a flow sees it.

Duplicate JSON keys and characters no message may carry are refused naming the JSON path (a MedCom
sender gets a fatal-error ack saying where); the syntax is sniffed after a byte order mark and white
space by one function; XML is read in UTF-8 and UTF-16, JSON in UTF-8 only; and no message we build
leaves when the fast checks of `integration validate` (plus FHIR's narrative rules) fail on it.
"""

from __future__ import annotations

import codecs
import copy
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from integration.conformance.validation import Unsendable, outgoing_findings
from integration.domain.course import Course, FixedState
from integration.errors import InvalidInput, Rejected
from integration.flows.dispatch import Pipeline, answer_unprocessable, transform
from integration.flows.referral import handle_discharge
from integration.flows.results import Refusal
from integration.formats.discharge_event import parse_discharge_event
from integration.formats.json_contract import decode_json
from integration.formats.safe_xml import parse_xml
from integration.formats.syntax import Syntax, sniff
from integration.log import cpr_numbers_in
from tests.cli_runs import run_integration
from tests.conftest import GOLDEN, SHARED, received_at
from tests.refusals import answered

CPR = "2512489996"
STATE = FixedState(courses={CPR: Course(CPR, "715541000016001", "851", True, "hospital")})
WEEKDAY = datetime.fromisoformat("2027-01-12T10:20:00+01:00")
DISCHARGE_NOW = datetime.fromisoformat("2026-11-20T14:30:00+01:00")
EVENT_PATH = GOLDEN / "discharge" / "01-municipal-gop-general-sternotomy.event.json"
EVENT = json.loads(EVENT_PATH.read_text(encoding="utf-8"))
CARE_COMMUNICATION = (GOLDEN / "hotline" / "municipality-routine.carecommunication.json").read_text(encoding="utf-8")
REPORT = (GOLDEN / "closing" / "01-full-items.report.xml").read_bytes()
CASES = SHARED / "cases" / "edge-inputs"
AT = "2026-11-23T10:00:00+01:00"


def _case(name: str) -> Path:
    if not CASES.is_dir():
        pytest.skip(f"../shared is absent ({CASES}); it holds the edge-input cases")
    return CASES / name


def _refused(raw: bytes, **kwargs: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        decode_json(raw, **kwargs)
    assert not cpr_numbers_in(str(caught.value)) and "\n" not in str(caught.value)
    return caught.value


def _event(family: str) -> bytes:
    document = copy.deepcopy(EVENT)
    document["patient"]["familyName"] = family
    return json.dumps(document).encode("utf-8", errors="surrogatepass")


def _ack(refusal: Refusal) -> dict[str, Any]:
    acks = [o.message for o in refusal.answer.outgoing if o.route.exchange == "rehab.ack"]
    assert len(acks) == 1
    return acks[0]


# -- point 1: duplicate keys ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (b'{"a": 1, "a": 2}', "a"),
        (b'{"x": [{"b": {"c": 1, "c" : 2}}]}', "x[0].b.c"),  # white space before the colon
        (b'{"identifier": 1, "ident\\u0069fier": 2}', "identifier"),  # equal once decoded
        (b'{"x": {"a\\u00e6": 1, "a\\u00e6": 2}}', "x.?"),  # a key that is no field name is not repeated
    ],
)
def test_a_key_twice_is_refused_naming_its_path(raw: bytes, path: str) -> None:
    refusal = _refused(raw)
    assert refusal.field == path and "twice" in refusal.problem


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": "x\\":", "b": ":", "c": {"a": 1}}',  # quote-colons inside strings: counted, then read exactly
        b'{"a" :1, "b"\t: [{"a": 1}, {"a": 2}]}',  # equal keys in different objects
        b'{"a": "\\\\u0007"}',  # an escaped backslash, not a control character
    ],
)
def test_what_only_looks_like_a_repeated_key_or_a_control_character_is_read(raw: bytes) -> None:
    assert decode_json(raw) == json.loads(raw)


def test_a_care_communication_naming_two_cpr_numbers_is_answered_fatal_error_naming_the_path(
    pipeline: Pipeline,
) -> None:
    assert '"resourceType": "Patient",' in CARE_COMMUNICATION
    doubled = CARE_COMMUNICATION.replace(
        '"resourceType": "Patient",',
        '"resourceType": "Patient", "identifier": [{"system": "urn:oid:1.2.208.176.1.2", "value": "0101701234"}],',
        1,
    )
    refused = answered(doubled.encode(), pipeline, WEEKDAY, state=STATE)
    assert isinstance(refused.rejection, InvalidInput)
    assert refused.rejection.field == "entry[2].resource.identifier"
    header = _ack(refused)["entry"][0]["resource"]
    assert header["response"]["code"] == "fatal-error"
    entries = _ack(refused)["entry"]
    outcome = next(e["resource"] for e in entries if e["resource"]["resourceType"] == "OperationOutcome")
    assert "entry[2].resource.identifier" in json.dumps(outcome)
    assert not cpr_numbers_in(json.dumps(outcome))


@pytest.mark.parametrize("kind", ["discharge event", "advice form"])
def test_a_key_twice_in_our_own_json_contracts_is_refused(pipeline: Pipeline, kind: str) -> None:
    if kind == "discharge event":
        raw = EVENT_PATH.read_text(encoding="utf-8").replace('"patient": {', '"patient": {"familyName": "X", ', 1)
        path = "patient.familyName"
    else:
        raw = (GOLDEN / "hotline" / "municipality-acute.request.json").read_text(encoding="utf-8")
        raw = raw.replace("{", '{"urgency": "routine", ', 1)
        path = "urgency"
    with pytest.raises(InvalidInput) as caught:
        transform(raw.encode(), pipeline, WEEKDAY, state=STATE)
    assert caught.value.field == path


def test_case_01_is_refused_by_transform_naming_the_path() -> None:
    case = _case("01-duplicate-json-keys.carecommunication.json")
    done = run_integration("transform", str(case), "--at", AT, "--state", str(CASES / "state-open-course.json"))
    stderr = done.stderr.decode() if isinstance(done.stderr, bytes) else done.stderr
    assert done.returncode == 2 and "entry[2].resource.identifier" in stderr and "twice" in stderr
    assert not cpr_numbers_in(stderr)


def test_validate_cannot_read_a_message_with_a_key_twice() -> None:
    case = _case("01-duplicate-json-keys.carecommunication.json")
    done = run_integration("validate", str(case), text=True)
    assert done.returncode != 0 and "entry[2].resource.identifier" in done.stdout + done.stderr
    assert "conforms" not in done.stdout


def test_a_state_file_with_a_key_twice_names_the_path(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text('{"courses": [{"patient": "2512489996", "patient": "0101701234"}]}')
    done = run_integration("transform", str(EVENT_PATH), "--state", str(state), text=True)
    assert done.returncode == 2 and "courses[0].patient" in done.stderr and not cpr_numbers_in(done.stderr)


# -- point 4: characters no message may carry -------------------------------------------------------
@pytest.mark.parametrize(
    ("family", "code"),
    [
        ("Hansen\u0007", "U+0007"),  # as \u0007 in the JSON text
        ("Han\u0000sen", "U+0000"),
        ("Hansen\b", "U+0008"),  # as the short escape \b
        ("Hansen\f", "U+000C"),
        ("Hansen\u001f", "U+001F"),
        ("Hansen\ud800", "U+D800"),  # a lone surrogate
        ("Hansen\ufffe", "U+FFFE"),  # not an XML character
    ],
)
def test_a_forbidden_character_in_any_string_is_refused_naming_the_field(family: str, code: str) -> None:
    escaped = _refused(_event(family))
    assert escaped.field == "patient.familyName" and code in escaped.problem
    document = copy.deepcopy(EVENT)
    document["patient"]["familyName"] = family
    literal = json.dumps(document, ensure_ascii=False).encode("utf-8", errors="surrogatepass")  # raw in the text
    # a lone surrogate written raw is no UTF-8 at all: refused as such, with the byte's offset
    assert _refused(literal).field == ("" if code == "U+D800" else "patient.familyName")


def test_a_forbidden_character_in_a_key_is_refused_without_repeating_the_key() -> None:
    refusal = _refused(b'{"patient": {"family\\u0007": "x"}}')
    assert refusal.field == "patient.?"


@pytest.mark.parametrize(
    "family",
    ["Hansen\tJensen", "Hansen\r\n", "Ærø\u00a0Øster", "Hansen \U0001f600", "Hansen\u200b", "Hansen\x7f\x85\x98"],
)
def test_tab_cr_lf_del_c1_and_other_text_are_accepted(family: str) -> None:
    """DEL and C1 too: FHIR strings and XML 1.0 allow them, and our outputs carry them (see FORBIDDEN)."""
    assert decode_json(_event(family))["patient"]["familyName"] == family


def test_case_02_is_refused_by_transform_naming_the_field() -> None:
    case = _case("02-control-char-in-name.discharge.json")
    done = run_integration("transform", str(case), "--at", AT, text=True)
    assert done.returncode == 2 and "patient.familyName" in done.stderr and "U+0007" in done.stderr


@pytest.mark.parametrize("reference", ["&#7;", "&#x1;", "&#x1F;", "&#xFFFE;", "&#xD800;"])
def test_an_xml_character_reference_to_a_forbidden_character_is_refused(pipeline: Pipeline, reference: str) -> None:
    assert b"<FamilyName>" in REPORT
    broken = REPORT.replace(b"<FamilyName>", f"<FamilyName>{reference}".encode(), 1)
    with pytest.raises(InvalidInput, match="malformed XML: .*invalid xmlChar"):
        transform(broken, pipeline, WEEKDAY)
    with pytest.raises(InvalidInput, match="malformed XML: .*invalid xmlChar"):
        parse_xml(f'<Bundle xmlns="http://hl7.org/fhir"><id value="a{reference}"/></Bundle>'.encode(), 10_000)


def test_an_output_failing_the_narrative_rules_refuses_its_input_and_never_leaves(pipeline: Pipeline) -> None:
    """A discharge event read from a dict (as a caller of the reader other than the JSON intake would) with a
    noncharacter in the name: the reader takes it, the referral's narrative cannot hold it. Before the gate
    checked narratives the referral was emitted (and `validate` failed it: txt-1, txt-2)."""
    document = copy.deepcopy(EVENT)
    document["patient"]["familyName"] = "Hansen\uffff"
    event = parse_discharge_event(document, pipeline.discharge_contract)
    with pytest.raises(Unsendable) as caught:
        handle_discharge(event, pipeline.referral, DISCHARGE_NOW)
    assert isinstance(caught.value, Rejected) and caught.value.field == "Patient.text.div"
    assert "txt-1" in caught.value.problem and "Hansen" not in str(caught.value)


def test_every_golden_output_passes_the_gate(pipeline: Pipeline) -> None:
    for path in sorted((GOLDEN / "discharge").glob("*.event.json")):
        for outgoing in transform(path.read_bytes(), pipeline, max(DISCHARGE_NOW, received_at(path))).outgoing:
            assert outgoing_findings(outgoing.message) == [], path.name


# -- point 8: encodings -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "syntax", "encoding"),
    [
        (b"<a/>", Syntax.XML, "UTF-8"),
        (b"\xef\xbb\xbf \r\n\t<a/>", Syntax.XML, "UTF-8"),
        (b"\xef\xbb\xbf{}", Syntax.JSON, "UTF-8"),
        (codecs.BOM_UTF16_LE + "  <a/>".encode("utf-16-le"), Syntax.XML, "UTF-16LE"),
        (codecs.BOM_UTF16_BE + "<a/>".encode("utf-16-be"), Syntax.XML, "UTF-16BE"),
        ("{}".encode("utf-16-le"), Syntax.JSON, "UTF-16LE"),
        (codecs.BOM_UTF32_LE + "<a/>".encode("utf-32-le"), Syntax.XML, "UTF-32LE"),
        (b"", Syntax.JSON, "UTF-8"),
        (b" x", Syntax.JSON, "UTF-8"),
    ],
)
def test_the_syntax_is_sniffed_after_the_byte_order_mark_and_white_space(
    raw: bytes, syntax: Syntax, encoding: str
) -> None:
    sniffed = sniff(raw)
    assert (sniffed.syntax, sniffed.encoding) == (syntax, encoding)


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_json_in_utf16_or_utf32_is_refused_naming_the_encoding(codec: str) -> None:
    refusal = _refused(EVENT_PATH.read_text(encoding="utf-8").encode(codec))
    assert "must be UTF-8" in refusal.problem and "UTF-" in refusal.problem


def _xml_care_communication() -> bytes:
    raw = _case("15-xml-carecommunication-with-bom.xml").read_bytes()
    assert raw.startswith(codecs.BOM_UTF8)
    return raw[len(codecs.BOM_UTF8) :]


def _as_utf16(raw: bytes, codec: str) -> bytes:
    text = raw.decode("utf-8").replace('encoding="UTF-8"', 'encoding="UTF-16"')
    return (codecs.BOM_UTF16_LE if codec == "utf-16-le" else codecs.BOM_UTF16_BE) + text.encode(codec)


def _outputs(raw: bytes, pipeline: Pipeline) -> list[Any]:
    state = FixedState(courses={"0101701234": Course("0101701234", "715541000016001", "851", True, "hospital")})
    now = datetime.fromisoformat(AT)
    return [o.as_json() for o in transform(raw, pipeline, now, state=state).outgoing]


@pytest.mark.parametrize("form", ["utf-8 with BOM", "utf-8 BOM and white space", "utf-16-le", "utf-16-be"])
def test_an_xml_care_communication_is_read_alike_in_every_accepted_encoding(pipeline: Pipeline, form: str) -> None:
    plain = _xml_care_communication()
    raw = {
        "utf-8 with BOM": codecs.BOM_UTF8 + plain,
        "utf-8 BOM and white space": codecs.BOM_UTF8 + b"\n  " + plain[plain.index(b"<Bundle") :],
        "utf-16-le": _as_utf16(plain, "utf-16-le"),
        "utf-16-be": _as_utf16(plain, "utf-16-be"),
    }[form]
    expected = _outputs(plain, pipeline)
    assert [o["route"]["exchange"] for o in expected] == ["rehab.hotline", "rehab.ack"]
    assert _outputs(raw, pipeline) == expected
    assert answer_unprocessable(raw, pipeline, datetime.fromisoformat(AT)) is not None  # a transient-error ack


def test_case_15_is_processed_as_xml_by_transform_and_validate() -> None:
    case = _case("15-xml-carecommunication-with-bom.xml")
    done = run_integration("transform", str(case), "--at", AT, "--state", str(CASES / "state-open-course.json"))
    assert done.returncode == 0
    checked = run_integration("validate", str(case), text=True)
    assert "cannot read" not in checked.stdout + checked.stderr and "malformed JSON" not in checked.stdout


def test_a_closing_report_in_utf16_is_read_as_in_utf8(pipeline: Pipeline) -> None:
    state = FixedState(courses={})
    now = datetime.fromisoformat("2027-02-20T10:05:00+01:00")
    text = REPORT.decode("utf-8")
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    utf16 = codecs.BOM_UTF16_LE + text.replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16-le")
    expected = [o.as_json() for o in transform(REPORT, pipeline, now, state=state).outgoing]
    assert [o.as_json() for o in transform(utf16, pipeline, now, state=state).outgoing] == expected


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ('<?xml version="1.0" encoding="UTF-16"?><a/>'.encode("utf-16-le"), "UTF-16LE without a byte order mark"),
        (codecs.BOM_UTF32_LE + "<a/>".encode("utf-32-le"), "this is UTF-32LE"),
        ('<?xml version="1.0" encoding="ISO-8859-1"?><a>Ø</a>'.encode("latin-1"), "the declaration names ISO-8859-1"),
        (codecs.BOM_UTF16_LE + '<?xml version="1.0" encoding="UTF-8"?><a/>'.encode("utf-16-le"), "encoding UTF-8"),
        (codecs.BOM_UTF8 + b'<?xml version="1.0" encoding="UTF-16"?><a/>', "names encoding UTF-16"),
        (codecs.BOM_UTF16_LE + "<!DOCTYPE a><a/>".encode("utf-16-le"), "DOCTYPE"),
    ],
)
def test_xml_in_an_encoding_we_do_not_read_is_refused_naming_it(raw: bytes, says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        parse_xml(raw, 10_000)


@pytest.mark.parametrize("number", ["0e400111111111111111111111111111111", "1e-401", "0.0e-500"])
def test_a_number_decimal_cannot_hold_or_we_would_not_write_out_is_refused_naming_its_field(number: str) -> None:
    """Found by the fuzzer: `0e400111…` is a double (0.0) but no Decimal; `1e-401` would be written as 401 digits."""
    with pytest.raises(InvalidInput) as caught:
        decode_json(f'{{"exerciseTest": {{"mets": {number}}}}}'.encode())
    assert caught.value.field == "exerciseTest.mets" and number not in str(caught.value)
