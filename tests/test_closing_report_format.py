"""The closing report's contract: the XSD, the checks after it, and hostile or broken XML, in bounded time."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from lxml import etree

from integration.config import PROJECT_ROOT
from integration.domain.hads import Band
from integration.errors import InvalidInput
from integration.formats.closing_report import parse_closing_report
from tests.conftest import GOLDEN

SCHEMA = etree.XMLSchema(etree.parse(str(PROJECT_ROOT / "schemas" / "closing-report.xsd")))
REPORT = (GOLDEN / "closing" / "01-full-items.report.xml").read_bytes()
LIMIT = 1024 * 1024


def parse(raw: bytes):
    return parse_closing_report(raw, SCHEMA, LIMIT)


def test_a_full_report_is_read() -> None:
    report = parse(REPORT)
    assert report.patient.value == "2512489996" and report.gp_ydernummer == "012345"
    assert [e.code for e in report.elements] == ["physical-activity", "diet", "patient-education"]
    assert report.elements[0].sessions == 16 and report.elements[2].completed is False
    assert [(m.code, str(m.before), str(m.after)) for m in report.measurements][1] == ("body-weight", "88.5", "85.0")
    assert report.smoking == ("smoker", "ex-smoker") and report.closing_place == "municipality"
    assert (report.hads.anxiety.score, report.hads.depression.score) == (5, 9)
    assert report.hads.depression.band is Band.BORDERLINE and report.hads.needs_attention
    assert report.hospital_retains_responsibility is False


def test_subscale_sums_instead_of_items() -> None:
    raw = REPORT.replace(
        REPORT[REPORT.index(b"<Item") : REPORT.index(b"</HADS>")], b"<Anxiety>6</Anxiety><Depression>11</Depression>"
    )
    report = parse(raw)
    assert (report.hads.anxiety.score, report.hads.depression.band) == (6, Band.ABNORMAL)


def _replace(old: bytes, new: bytes) -> bytes:
    assert old in REPORT
    return REPORT.replace(old, new, 1)


BROKEN = [
    (
        "xxe",
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><ClosingReport>&x;</ClosingReport>',
        "",
        "DOCTYPE",
    ),
    (
        "billion-laughs",
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
        b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
        b"<ClosingReport>&lol3;</ClosingReport>",
        "",
        "DOCTYPE",
    ),
    ("fifty-megabytes", b"<ClosingReport>" + b" " * (50 * 1024 * 1024) + b"</ClosingReport>", "", "payload too large"),
    (
        "wrong-namespace",
        REPORT.replace(b"urn:dk:hjerterehab:closing-report:1", b"urn:example:other"),
        "",
        "not a closing report",
    ),
    ("truncated", REPORT[: len(REPORT) // 2], "", "malformed XML"),
    ("non-utf8", _replace(b"Karen Jensen", "Søren Ærø".encode("latin-1")), "", "malformed XML"),
    (
        "missing-summary",
        _replace(b"<Summary>", b"<Resume>").replace(b"</Summary>", b"</Resume>"),
        "ClosingReport.Resume",
        "not expected",
    ),
    (
        "bad-element-code",
        _replace(b'code="diet"', b'code="yoga"'),
        "ClosingReport.Course.Element[2].code",
        "not an element of the set",
    ),
    (
        "item-score-4",
        _replace(b'<Item n="1" score="1"/>', b'<Item n="1" score="4"/>'),
        "ClosingReport.HADS.Item[1].score",
        "greater than the maximum",
    ),
    (
        "sum-22",
        REPORT.replace(
            REPORT[REPORT.index(b"<Item") : REPORT.index(b"</HADS>")],
            b"<Anxiety>22</Anxiety><Depression>1</Depression>",
        ),
        "ClosingReport.HADS.Anxiety",
        "21",
    ),
    (
        "item-twice",
        _replace(b'<Item n="2" score="2"/>', b'<Item n="1" score="2"/>'),
        "ClosingReport.HADS",
        "more than once",
    ),
    ("wrong-unit", _replace(b'unit="kg"', b'unit="lb"'), "ClosingReport.Measurements.Measurement[2]", "measured in kg"),
    (
        "impossible-cpr-date",
        _replace(b'cpr="2512489996"', b'cpr="3213489996"'),
        "ClosingReport.Patient.cpr",
        "not a real date",
    ),
    ("course-backwards", _replace(b'end="2027-02-15"', b'end="2026-11-01"'), "ClosingReport.Course", "ends before"),
    (
        "bad-place",
        _replace(b'place="municipality"', b'place="home"'),
        "ClosingReport.ClosingConversation.place",
        "not an element of the set",
    ),
]


@pytest.mark.parametrize(("raw", "field", "words"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_hostile_and_broken_reports_are_rejected_clearly_and_fast(raw: bytes, field: str, words: str) -> None:
    started = time.perf_counter()
    with pytest.raises(InvalidInput) as caught:
        parse_closing_report(raw, SCHEMA, LIMIT)
    assert time.perf_counter() - started < 2
    message = str(caught.value)
    assert caught.value.field == field and words in message, message
    assert "\n" not in message and "3213489996" not in message and "/etc/passwd" not in message


def test_the_xsd_is_a_valid_schema() -> None:
    assert isinstance(SCHEMA, etree.XMLSchema) and Path(PROJECT_ROOT / "schemas" / "closing-report.xsd").is_file()
