"""FHIR XML is carried exactly or refused naming the element (attack on issue #11, F1), and an XML message
is a closing report by its root element's namespace, not by text near its start (F6).

fhir.resources' XML reader kept the last of two `<value>` in an identifier (routing the message to
another patient), dropped text inside an element and unknown attributes, and read an element of a
foreign namespace as FHIR. Each such input is now refused naming the element, FHIR style, through the
pipeline (a fatal-error ack), `integration transform` (exit 2) and `integration validate` (a finding,
exit 1); every MedCom XML example and every golden FHIR message written as XML is read unchanged. (An element
FHIR R4 does not define is carried, and refused by the FHIR content check as in JSON:
tests/test_xml_content_refusals.py.)
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from fhir.resources.R4B.bundle import Bundle
from lxml import etree

from integration.domain.course import Course, FixedState
from integration.errors import InvalidInput
from integration.flows.dispatch import Pipeline, transform
from integration.flows.results import Refusal
from integration.formats.care_communication import decode_xml_bundle
from integration.formats.fhir_xml_fidelity import NotCarried
from integration.formats.json_contract import decode_json
from integration.log import cpr_numbers_in
from tests.cli_runs import run_integration
from tests.conftest import GOLDEN, SHARED
from tests.refusals import answered

CASES = SHARED / "cases" / "edge-inputs"
CASE_15 = CASES / "15-xml-carecommunication-with-bom.xml"
STATE = CASES / "state-open-course.json"
AT = "2026-11-23T10:00:00+01:00"
CPR_ELEMENT = '<value value="0101701234"/>'
FHIR = "{http://hl7.org/fhir}"


def _message() -> str:
    if not CASE_15.is_file():
        pytest.skip(f"../shared is absent ({CASES}); it holds the edge-input cases")
    return CASE_15.read_bytes().decode("utf-8-sig")


def _changed(old: str, new: str) -> bytes:
    text = _message()
    assert old in text, old
    return text.replace(old, new, 1).encode()


# The attack's inputs, and the path each must be refused at.
MUTATIONS: dict[str, tuple[str, str, str]] = {
    "a second value in the CPR identifier": (
        CPR_ELEMENT,
        CPR_ELEMENT + '<value value="2512489996"/>',
        "Patient.identifier.value",
    ),
    "a second family name": (
        '<family value="Testesen"/>',
        '<family value="Testesen"/><family value="Andersen"/>',
        "Patient.name.family",
    ),
    "text inside a value element": (
        CPR_ELEMENT,
        '<value value="0101701234">2512489996</value>',
        "Patient.identifier.value",
    ),
    "an unknown attribute": (CPR_ELEMENT, '<value value="0101701234" foo="x"/>', "Patient.identifier.value"),
    "text between elements": (CPR_ELEMENT, CPR_ELEMENT + "2512489996", "Patient.identifier"),
    "an element of another namespace": (
        CPR_ELEMENT,
        CPR_ELEMENT + '<x:value xmlns:x="urn:x" value="2512489996"/>',
        "Patient.identifier.value",
    ),
    "a second status": (
        '<status value="unknown"/>',
        '<status value="unknown"/><status value="completed"/>',
        "Communication.status",
    ),
}


def _refused(raw: bytes) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        decode_xml_bundle(raw, 10**7)
    assert not cpr_numbers_in(str(caught.value)) and "\n" not in str(caught.value)
    return caught.value


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_what_fhir_json_would_not_carry_is_refused_naming_the_element(mutation: str) -> None:
    old, new, path = MUTATIONS[mutation]
    assert _refused(_changed(old, new)).field == path


def _state() -> FixedState:
    return FixedState(courses={"0101701234": Course("0101701234", "715541000016001", "851", True, "hospital")})


def _ack(refusal: Refusal) -> dict[str, Any]:
    (ack,) = [o.message for o in refusal.answer.outgoing if o.route.exchange == "rehab.ack"]
    return ack


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_the_pipeline_answers_fatal_error_naming_the_element(pipeline: Pipeline, mutation: str) -> None:
    old, new, path = MUTATIONS[mutation]
    refused = answered(_changed(old, new), pipeline, datetime.fromisoformat(AT), state=_state())
    assert isinstance(refused.rejection, InvalidInput)
    ack = _ack(refused)
    assert ack["entry"][0]["resource"]["response"]["code"] == "fatal-error"
    (outcome,) = [e["resource"] for e in ack["entry"] if e["resource"]["resourceType"] == "OperationOutcome"]
    assert outcome["issue"][0]["expression"] == [path]
    assert not cpr_numbers_in(json.dumps(outcome))


def test_transform_and_validate_refuse_the_second_cpr_value(tmp_path: Path) -> None:
    old, new, path = MUTATIONS["a second value in the CPR identifier"]
    message = tmp_path / "two-values.xml"
    message.write_bytes(_changed(old, new))
    done = run_integration("transform", str(message), "--at", AT, "--state", str(STATE), text=True)
    assert done.returncode == 2 and f"{path}: more than once where FHIR R4 allows one" in done.stderr
    assert "fatal-error" in done.stdout and not cpr_numbers_in(done.stderr)
    checked = run_integration("validate", str(message), text=True)
    assert checked.returncode == 1 and f"- {path}: more than once where FHIR R4 allows one" in checked.stdout
    assert not cpr_numbers_in(checked.stdout + checked.stderr)


@pytest.mark.parametrize("mutation", ["text inside a value element", "an element of another namespace"])
def test_validate_reports_xml_content_errors_as_findings(tmp_path: Path, mutation: str) -> None:
    old, new, path = MUTATIONS[mutation]
    message = tmp_path / "changed.xml"
    message.write_bytes(_changed(old, new))
    checked = run_integration("validate", str(message), text=True)
    assert checked.returncode == 1 and f"- {path}: " in checked.stdout, checked.stdout + checked.stderr


# -- the whole class: any element repeated, any attribute or text added ------------------------------
def _elements(root: etree._Element) -> Iterator[etree._Element]:
    for element in root.iter(f"{FHIR}*"):
        if element is not root and element.getparent() is not None and etree.QName(element).localname != "div":
            yield element


def _each_changed(change: Callable[[etree._Element], None]) -> Iterator[tuple[str, bytes]]:
    root = etree.fromstring(_message().encode())
    for index in range(sum(1 for _ in _elements(root))):
        copy_root = copy.deepcopy(root)
        element = list(_elements(copy_root))[index]
        change(element)
        yield etree.QName(element).localname, etree.tostring(copy_root)


def _repeat(element: etree._Element) -> None:
    element.addnext(copy.deepcopy(element))


def test_any_element_repeated_is_carried_or_refused_never_dropped() -> None:
    baseline = decode_xml_bundle(_message().encode(), 10**7)
    carried = refused = 0
    for name, raw in _each_changed(_repeat):
        try:
            decoded = decode_xml_bundle(raw, 10**7)
        except InvalidInput as exc:
            assert exc.field.split(".")[-1] in (name, "Bundle") or exc.field.endswith("resource"), (name, exc.field)
            refused += 1
            continue
        assert decoded != baseline, f"a repeated <{name}> was dropped without a word"
        carried += 1
    assert carried > 10 and refused > 10  # both kinds: 0..* elements carried twice, 0..1 elements refused


@pytest.mark.parametrize(
    "change",
    [
        lambda e: e.set("foo", "x"),
        lambda e: e.set("{urn:x}value", "x"),
        lambda e: setattr(e, "text", "2512489996") if len(e) == 0 else e[0].addprevious(etree.Comment("x")),
    ],
    ids=["attribute", "foreign attribute", "text"],
)
def test_any_attribute_or_text_fhir_xml_does_not_define_is_refused(change: Callable[[etree._Element], None]) -> None:
    for name, raw in _each_changed(change):
        if b"<!--x-->" in raw:
            continue  # a comment is no content (the parser drops it)
        exc = _refused(raw)
        assert exc.field.split(".")[-1] == name or exc.field.endswith("resource"), (name, exc.field)


# -- no false refusals ---------------------------------------------------------------------------------
def _medcom_xml() -> list[Path]:
    medcom = SHARED / "medcom"
    if not medcom.is_dir():
        return []
    return sorted(p for p in medcom.rglob("*.xml") if b'<Bundle xmlns="http://hl7.org/fhir"' in p.read_bytes())


@pytest.mark.parametrize("path", _medcom_xml() or [None], ids=lambda p: p.name if p else "absent")
def test_every_medcom_xml_example_is_read_unchanged(path: Path | None) -> None:
    if path is None:
        pytest.skip(f"../shared/medcom is absent ({SHARED}); it holds MedCom's XML examples")
    raw = path.read_bytes()
    assert _values_in_json(decode_xml_bundle(raw, 10**7)) == _values_in_xml(etree.fromstring(raw))


def _lexical(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)  # the examples write numbers canonically


def _values_in_xml(root: etree._Element) -> Counter[str]:
    """Every attribute value and narrative of a FHIR XML document, as a multiset (independent of the reader)."""
    found: Counter[str] = Counter()
    for element in root.iter():
        if any(etree.QName(a).localname == "div" for a in element.iterancestors()):
            continue
        if etree.QName(element).localname == "div" and etree.QName(element).namespace != FHIR[1:-1]:
            found[_canonical_div(etree.tostring(element, with_tail=False).decode()).decode()] += 1
            continue
        found.update(element.attrib.values())
    return found


def _values_in_json(document: Any) -> Counter[str]:
    found: Counter[str] = Counter()
    pending = [document]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            for key, child in value.items():
                if key == "div":
                    found[_canonical_div(child).decode()] += 1
                elif key != "resourceType":
                    pending.append(child)
        elif isinstance(value, list):
            pending.extend(value)
        elif value is not None:
            found[_lexical(value)] += 1
    return found


def _divs_canonical(value: Any) -> Any:
    """The document with each narrative `div` in canonical XML: the reader writes it its own way
    (`&#230;` for `æ`), the same XHTML."""
    if isinstance(value, dict):
        return {k: _canonical_div(v) if k == "div" else _divs_canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_divs_canonical(v) for v in value]
    return value


def _canonical_div(div: str) -> bytes:
    return etree.tostring(etree.fromstring(div.encode()), method="c14n", exclusive=True)


def _golden_fhir_messages() -> list[tuple[str, dict[str, Any]]]:
    messages = []
    for path in sorted(GOLDEN.rglob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        items = document if isinstance(document, list) else [{"message": document}]
        for index, item in enumerate(items):
            message = item.get("message") if isinstance(item, dict) else None
            if isinstance(message, dict) and message.get("resourceType") == "Bundle":
                messages.append((f"{path.relative_to(GOLDEN)}[{index}]", message))
    return messages


@pytest.mark.parametrize(("name", "message"), _golden_fhir_messages(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_golden_fhir_message_written_as_xml_is_read_as_its_json(name: str, message: dict[str, Any]) -> None:
    xml = Bundle.model_validate(copy.deepcopy(message)).model_dump_xml()
    decoded = decode_xml_bundle(xml, 10**7)
    as_json = decode_json(orjson.dumps(message))  # decimals as the JSON reader gives them: Decimal, not float
    assert _divs_canonical(decoded) == _divs_canonical(as_json), name


def test_a_fraction_of_a_second_is_carried_as_sent() -> None:
    raw = _changed(
        '<timestamp value="2027-01-12T10:15:00+01:00"/>', '<timestamp value="2027-01-12T10:15:00.000+01:00"/>'
    )
    assert decode_xml_bundle(raw, 10**7)["timestamp"] == "2027-01-12T10:15:00.000+01:00"


def test_the_narrative_is_carried_as_one_unit() -> None:
    raw = _changed("<p><b>Navn</b>: Test Testesen</p>", "<p><b>Navn</b>: Test <i>Testesen</i></p>")
    patient = next(
        e["resource"] for e in decode_xml_bundle(raw, 10**7)["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    assert "<i>Testesen</i>" in patient["text"]["div"]


def test_the_refusal_carries_the_document_for_the_ack() -> None:
    old, new, _ = MUTATIONS["a second family name"]
    with pytest.raises(NotCarried) as caught:
        decode_xml_bundle(_changed(old, new), 10**7)
    assert caught.value.document["resourceType"] == "Bundle"


# -- F6: a closing report is known by its root element ------------------------------------------------
REPORT = (GOLDEN / "closing" / "01-full-items.report.xml").read_text(encoding="utf-8")
CLOSING_NOW = datetime.fromisoformat("2027-02-20T10:05:00+01:00")


def _after_declaration(text: str, inserted: str) -> bytes:
    declaration, rest = text.split("?>", 1)
    return (declaration + "?>" + inserted + rest).encode()


@pytest.mark.parametrize(
    "padding", ["<!--" + "x" * 5000 + "-->", " " * 4100, "<?pi " + "y" * 5000 + "?>"], ids=["comment", "spaces", "pi"]
)
def test_a_closing_report_after_a_long_prolog_is_a_closing_report(pipeline: Pipeline, padding: str) -> None:
    state = FixedState(courses={})
    expected = [o.as_json() for o in transform(REPORT.encode(), pipeline, CLOSING_NOW, state=state).outgoing]
    padded = _after_declaration(REPORT, padding)
    assert [o.as_json() for o in transform(padded, pipeline, CLOSING_NOW, state=state).outgoing] == expected


def test_a_care_communication_naming_the_closing_report_namespace_is_a_care_communication(pipeline: Pipeline) -> None:
    text = _message()
    plain = text.encode()
    mentioned = _after_declaration(text, "<!-- urn:dk:hjerterehab:closing-report:1 -->")
    now = datetime.fromisoformat(AT)
    expected = [o.as_json() for o in transform(plain, pipeline, now, state=_state()).outgoing]
    assert [o.as_json() for o in transform(mentioned, pipeline, now, state=_state()).outgoing] == expected
