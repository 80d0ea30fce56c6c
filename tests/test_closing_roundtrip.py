"""The closing report's typed values, from every lexical form the XSD admits to the FHIR output.

`schemas/closing-report.xsd`, type by type, admits these lexical forms (XSD 1.0 §3.2, after its facets);
each is read as XML Schema defines its value and reaches the FHIR output with that value:

- Date (Course start and end, ClosingConversation date, HADS date): `yyyy-mm-dd`, years 1900-2199 (as every
  moment, `domain.moment`), real days only (29 February in 2000 and 2028, not in 2027 or 2100); value: the
  date. The reader adds: a closing conversation not before the course starts.
- ZonedDateTime (SentAt): `yyyy-mm-ddThh:mm:ss`, years 1900-2199 (`domain.moment`), hours 00-23, 0 to 9
  digits of a second, `Z` or `±hh:mm` up to ±14:00 (`+00:00` and `-00:00` included); value: the moment,
  which FHIR gets as the report wrote it.
- xs:boolean (Element completed, HospitalRetainsResponsibility): `true`, `false`, `1`, `0`.
- nonNegativeInteger up to 999 (Element sessions) and xs:integer ranges (HADS Item n 1-14, score 0-3,
  Anxiety and Depression 0-21): digits with any number of leading zeros, a `+`, and `-` on a zero only.
- MeasuredValue (Measurement before and after): above zero; a `+`, digits, a point, digits, either side of
  the point empty (not both), leading zeros, at most 15 digits as written (leading zeros, sign and point
  aside); value: the number, with the digits after the point as its FHIR precision.

All of them with white space (space, tab, CR, LF) around: each is `whiteSpace collapse`.

Strings (identifiers, codes, text) are `whiteSpace preserve`: their value is the text as written, and
their patterns and enumerations refuse the forms we do not want. Unwanted forms of the typed values
(24:00:00, zones on dates, a tenth digit of a second, a sixteenth digit) are refused by the XSD naming
the element: `tests/test_input_classification.py` and the refusals below.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from integration.domain.closing_report import ClosingReport
from integration.domain.course import Course, FixedState
from integration.domain.hads import from_sums, score_items
from integration.errors import InvalidInput
from integration.fhir import fhir_json
from integration.flows.dispatch import Pipeline, transform
from integration.formats.closing_report import parse_closing_report

NOW = datetime.fromisoformat("2030-01-01T10:00:00+01:00")
PATIENT = "2512489996"
BORN = date(1948, 12, 25)
STATE = FixedState(courses={PATIENT: Course(PATIENT, "715541000016001", "851", True, "hospital")})
SPACES = ["", " ", "&#9;", "&#10;", "&#13;", " &#10;  "]  # XSD's collapse removes these; char refs survive
# attribute-value normalisation, so the XSD sees them


# -- one report from typed parts --------------------------------------------------------------------


@dataclass(frozen=True)
class Lexical:
    """A typed value and the form it is written in (with character references for white space)."""

    value: Any
    form: str


@dataclass(frozen=True)
class Parts:
    sent_at: Lexical
    start: Lexical
    end: Lexical
    closing: Lexical
    elements: tuple[tuple[str, Lexical, Lexical | None], ...]  # code, completed, sessions
    measurements: tuple[tuple[str, str, Lexical | None, Lexical | None], ...]  # code, unit, before, after
    hads_date: Lexical
    items: tuple[tuple[Lexical, Lexical], ...] | None  # (n, score); None: the sums
    sums: tuple[Lexical, Lexical] | None
    retains: Lexical

    def xml(self) -> bytes:
        elements = "".join(
            f'<Element code="{code}" completed="{completed.form}"'
            + (f' sessions="{sessions.form}"' if sessions else "")
            + "/>"
            for code, completed, sessions in self.elements
        )
        measurements = "".join(
            f'<Measurement code="{code}" unit="{unit}"'
            + (f' before="{before.form}"' if before else "")
            + (f' after="{after.form}"' if after else "")
            + "/>"
            for code, unit, before, after in self.measurements
        )
        if self.items is not None:
            hads = "".join(f'<Item n="{n.form}" score="{score.form}"/>' for n, score in self.items)
        else:
            assert self.sums is not None
            hads = f"<Anxiety>{self.sums[0].form}</Anxiety><Depression>{self.sums[1].form}</Depression>"
        return f"""<?xml version="1.0" encoding="UTF-8"?>
<ClosingReport xmlns="urn:dk:hjerterehab:closing-report:1" version="1">
  <ReportId>7d9e3c52-1f0a-4c7e-9b1e-2f5a8c0d4e61</ReportId>
  <SentAt>{self.sent_at.form}</SentAt>
  <Municipality code="851" sor="434751000016002" ean="5790008515204"><Name>Aalborg Kommune</Name></Municipality>
  <Patient cpr="{PATIENT}"><GivenName>Nancy</GivenName><FamilyName>Berggren</FamilyName></Patient>
  <GeneralPractitioner sor="123451000016008" ydernummer="012345"/>
  <Course start="{self.start.form}" end="{self.end.form}">{elements}</Course>
  <ClosingConversation date="{self.closing.form}" place="municipality"/>
  <Measurements>{measurements}</Measurements>
  <HADS date="{self.hads_date.form}">{hads}</HADS>
  <Summary>Gennemført.</Summary>
  <HospitalRetainsResponsibility>{self.retains.form}</HospitalRetainsResponsibility>
  <Author name="Karen Jensen" role="Sygeplejerske" phone="+4599312345"/>
</ClosingReport>""".encode()


# -- the XSD's value space, in every lexical form ---------------------------------------------------

spaces = st.sampled_from(SPACES)


def _wrapped(core: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(spaces, core, spaces).map("".join)


def xs_dates(lo: date = date(1900, 1, 1), hi: date = date(2199, 12, 31)) -> st.SearchStrategy[Lexical]:
    return st.dates(lo, hi).flatmap(lambda d: _wrapped(st.just(d.isoformat())).map(lambda f: Lexical(d, f)))


@st.composite
def zoned_datetimes(draw: st.DrawFn) -> Lexical:
    moment = draw(st.datetimes(datetime(1900, 1, 1), datetime(2199, 12, 31, 23, 59, 59)))
    digits = draw(st.integers(0, 9))
    nanos = draw(st.integers(0, 10**digits - 1)) if digits else 0
    fraction = f".{nanos:0{digits}d}" if digits else ""
    minutes = draw(st.integers(-14 * 60, 14 * 60))
    zone_form = draw(
        st.sampled_from(["Z", "+00:00", "-00:00"])
        if minutes == 0
        else st.just(f"{'+' if minutes > 0 else '-'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}")
    )
    text = moment.strftime("%Y-%m-%dT%H:%M:%S").rjust(19, "0") + fraction + zone_form
    micro = (nanos * 10 ** (9 - digits)) // 1000 if digits else 0  # the XSD's value, to the microsecond
    value = moment.replace(microsecond=micro, tzinfo=timezone(timedelta(minutes=minutes)))
    return Lexical((value, text), draw(_wrapped(st.just(text))))


def xs_booleans() -> st.SearchStrategy[Lexical]:
    return st.sampled_from([(True, "true"), (True, "1"), (False, "false"), (False, "0")]).flatmap(
        lambda vf: _wrapped(st.just(vf[1])).map(lambda f: Lexical(vf[0], f))
    )


@st.composite
def xs_integers(draw: st.DrawFn, lo: int, hi: int) -> Lexical:
    value = draw(st.integers(lo, hi))
    sign = draw(st.sampled_from(["", "+", "-"] if value == 0 else ["", "+"]))
    zeros = "0" * draw(st.sampled_from([0, 0, 1, 3, 40]))
    return Lexical(value, draw(_wrapped(st.just(f"{sign}{zeros}{value}"))))


@st.composite
def measured_values(draw: st.DrawFn) -> Lexical:
    """(Decimal value, the text FHIR gets) in a form of at most 15 digits as written."""
    whole = draw(st.integers(0, 15))
    fraction = draw(st.integers(0, 15 - whole))
    ints = draw(st.text("0123456789", min_size=whole, max_size=whole))
    fracs = draw(st.text("0123456789", min_size=fraction, max_size=fraction))
    if not (ints + fracs).strip("0"):  # every measured value is above zero (the XSD's minExclusive)
        if fracs:
            fracs = fracs[:-1] + draw(st.sampled_from("123456789"))
        else:
            ints = (ints or "0")[:-1] + draw(st.sampled_from("123456789"))
    point = "." if fracs or (ints and draw(st.booleans())) else ""
    sign = draw(st.sampled_from(["", "+"]))
    zeros = "0" * draw(st.sampled_from([0, 0, 1, 4]))
    form = f"{sign}{zeros}{ints}{point}{fracs}"
    value = Decimal(f"{sign}{ints or '0'}.{fracs or '0'}")
    significant = ints.lstrip("0") or "0"
    text = ("-" if sign == "-" and value != 0 else "") + significant + (f".{fracs}" if fracs else "")
    return Lexical((value, text), draw(_wrapped(st.just(form))))


UNITS = {"six-minute-walk": "m", "body-weight": "kg", "waist": "cm", "ldl-cholesterol": "mmol/L", "hba1c": "mmol/mol"}
ELEMENTS = ("physical-activity", "diet", "patient-education", "smoking-cessation")


@st.composite
def reports(draw: st.DrawFn) -> Parts:
    start = draw(xs_dates(BORN, date(2199, 12, 30)))  # a course cannot start before the patient is born
    end = draw(xs_dates(start.value))
    codes = draw(st.lists(st.sampled_from(ELEMENTS), min_size=1, max_size=4, unique=True))
    elements = tuple((code, draw(xs_booleans()), draw(st.none() | xs_integers(0, 999))) for code in codes)
    measured = draw(st.lists(st.sampled_from(sorted(UNITS)), min_size=1, max_size=5, unique=True))
    measurements = tuple(
        (code, UNITS[code], draw(st.none() | measured_values()), draw(st.none() | measured_values()))
        for code in measured
    )
    if draw(st.booleans()):
        numbers = draw(st.permutations(range(1, 15)))
        items = tuple((draw(xs_integers(n, n)), draw(xs_integers(0, 3))) for n in numbers)
        sums = None
    else:
        items, sums = None, (draw(xs_integers(0, 21)), draw(xs_integers(0, 21)))
    return Parts(
        sent_at=draw(zoned_datetimes()),
        start=start,
        end=end,
        closing=draw(xs_dates(start.value)),  # not before the course starts
        elements=elements,
        measurements=measurements,
        hads_date=draw(xs_dates()),
        items=items,
        sums=sums,
        retains=draw(xs_booleans()),
    )


# -- what the reader and the FHIR output must say --------------------------------------------------


def _expected_hads(parts: Parts) -> Any:
    if parts.items is not None:
        return score_items({n.value: score.value for n, score in parts.items})
    assert parts.sums is not None
    return from_sums(parts.sums[0].value, parts.sums[1].value)


def assert_read_as_the_xsd_defines(report: ClosingReport, parts: Parts) -> None:
    moment, text = parts.sent_at.value
    assert report.sent_at == moment and report.sent_at.utcoffset() == moment.utcoffset()
    assert report.sent_at_instant == text
    assert (report.course_start, report.course_end) == (parts.start.value, parts.end.value)
    assert report.closing_date == parts.closing.value and report.hads_date == parts.hads_date.value
    assert [(e.code, e.completed, e.sessions) for e in report.elements] == [
        (code, completed.value, sessions.value if sessions else None) for code, completed, sessions in parts.elements
    ]
    for m, (code, unit, before, after) in zip(report.measurements, parts.measurements, strict=True):
        assert (m.code, m.unit) == (code, unit)
        for read, written in ((m.before, before), (m.after, after)):
            assert (read is None) == (written is None)
            if read is not None and written is not None:
                assert read == written.value[0] and fhir_json.decimal_text(read) == written.value[1]
    assert report.hads == _expected_hads(parts)
    assert report.hospital_retains_responsibility is parts.retains.value


def _resources(document: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in document["entry"] if e["resource"]["resourceType"] == kind]


def assert_fhir_carries_the_values(result: Any, parts: Parts) -> None:
    document = result.outgoing[0].message
    published = fhir_json.dumps(document)
    moment, text = parts.sent_at.value
    (composition,) = _resources(document, "Composition")
    assert composition["date"] == document["timestamp"] == text
    assert datetime.fromisoformat(text) == moment  # the instant is the XSD's moment
    assert composition["extension"][0]["valueBoolean"] is (not parts.retains.value)
    course = composition["section"][0]["text"]["div"]
    assert f"{parts.start.value.isoformat()} til {parts.end.value.isoformat()}" in course
    assert f"afsluttende samtale {parts.closing.value.isoformat()}" in course
    for _code, completed, sessions in parts.elements:
        state = "gennemført" if completed.value else "ikke gennemført"
        assert f": {state}" + (f" ({sessions.value} gange)" if sessions else "") + "<" in course
    observations = _resources(document, "Observation")
    hads = {o["code"]["coding"][0]["code"]: o for o in observations if o["code"]["coding"][0]["code"].isdigit()}
    expected = _expected_hads(parts)
    for code, subscale in (("401319005", expected.anxiety), ("401320004", expected.depression)):
        assert hads[code]["effectiveDateTime"] == parts.hads_date.value.isoformat()
        assert hads[code].get("valueInteger") == subscale.score
    measured = [o for o in observations if not o["code"]["coding"][0]["code"].isdigit()]
    for observation, (_, unit, before, after) in zip(measured, parts.measurements, strict=True):
        period = observation["effectivePeriod"]
        assert (period["start"], period["end"]) == (parts.start.value.isoformat(), parts.end.value.isoformat())
        written = [v for v in (before, after) if v is not None]
        components = observation.get("component", [])
        assert [(c["valueQuantity"]["value"], c["valueQuantity"]["code"]) for c in components] == [
            (v.value[0], unit) for v in written
        ]
    # the bytes: each value with exactly its digits after the point, in the order written
    texts = [v.value[1] for _, _, before, after in parts.measurements for v in (before, after) if v is not None]
    assert re.findall(rb'"valueQuantity":\{"value":([^,]+),', published) == [t.encode() for t in texts]


# -- the property: generated from the XSD's value space, valid, read and carried -------------------


@pytest.fixture(scope="module")
def flows(pipeline: Pipeline) -> Any:
    class Flows:  # a short repr for Hypothesis' report of a failing example
        def __init__(self) -> None:
            self.pipeline = pipeline

        def __repr__(self) -> str:
            return "<the session's pipeline>"

    return Flows()


@settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(parts=reports())
def test_a_report_from_the_xsds_value_space_reaches_fhir_with_the_xsds_values(flows: Any, parts: Parts) -> None:
    raw = parts.xml()
    schema = flows.pipeline.closing_schema
    assert schema.validate(etree.fromstring(raw)), schema.error_log.last_error  # the generator stays in the XSD
    try:
        report = parse_closing_report(raw, schema, 10**6)
    except InvalidInput as refused:  # the one rule after the XSD these parts can break
        assert refused.field == "ClosingReport.Course" and parts.end.value < parts.start.value
        return
    assert_read_as_the_xsd_defines(report, parts)
    assert_fhir_carries_the_values(transform(raw, flows.pipeline, NOW, state=STATE), parts)


# -- one test per lexical form, with the value XML Schema gives it ----------------------------------


def _moment(text: str, micro: int = 0) -> tuple[datetime, str]:
    """The XSD's moment of a zoned date-time (to the microsecond) and the FHIR instant we write."""
    return datetime.fromisoformat(text).replace(microsecond=micro), text


def _decimal(value: str, text: str) -> tuple[Decimal, str]:
    return Decimal(value), text


BASE = Parts(
    sent_at=Lexical(_moment("2027-02-20T10:00:00+01:00"), "2027-02-20T10:00:00+01:00"),
    start=Lexical(date(2026, 12, 1), "2026-12-01"),
    end=Lexical(date(2027, 2, 15), "2027-02-15"),
    closing=Lexical(date(2027, 2, 15), "2027-02-15"),
    elements=(("physical-activity", Lexical(True, "true"), Lexical(16, "16")),),
    measurements=(("body-weight", "kg", Lexical(_decimal("88.5", "88.5"), "88.5"), None),),
    hads_date=Lexical(date(2027, 2, 15), "2027-02-15"),
    items=None,
    sums=(Lexical(6, "6"), Lexical(11, "11")),
    retains=Lexical(False, "false"),
)
_W = "2027-02-20T10:00:00"
FORMS: list[tuple[str, str, Any, str]] = [
    # (field, id, value, form)
    *(
        ("start", f"date-{i}", date.fromisoformat(d), f)
        for i, (d, f) in enumerate(
            [
                ("2026-12-01", " 2026-12-01 "),
                ("2026-12-01", "&#9;2026-12-01&#10;"),
                ("2026-12-01", "&#13;2026-12-01"),
                ("2000-02-29", "2000-02-29"),
            ]
        )
    ),
    ("end", "date-leap-2028", date(2028, 2, 29), "2028-02-29"),
    ("closing", "date-2199", date(2199, 12, 31), "2199-12-31"),
    ("hads_date", "date-1900", date(1900, 1, 1), "1900-01-01"),
    ("hads_date", "date-spaces", date(2027, 2, 15), " &#10; 2027-02-15 &#9;"),
    *(
        ("sent_at", f"datetime-{name}", _moment(text, micro), form)
        for name, text, micro, form in [
            ("z", f"{_W}Z", 0, f"{_W}Z"),
            ("minus-zero", f"{_W}-00:00", 0, f"{_W}-00:00"),
            ("plus-zero", f"{_W}+00:00", 0, f"{_W}+00:00"),
            ("plus-14", f"{_W}+14:00", 0, f"{_W}+14:00"),
            ("minus-14", f"{_W}-14:00", 0, f"{_W}-14:00"),
            ("minus-13-59", f"{_W}-13:59", 0, f"{_W}-13:59"),
            ("one-digit", f"{_W}.5+01:00", 500_000, f"{_W}.5+01:00"),
            ("seven-digits-dotnet", f"{_W}.1234567+01:00", 123_456, f"{_W}.1234567+01:00"),
            ("nine-digits", f"{_W}.123456789Z", 123_456, f"{_W}.123456789Z"),
            ("zero-fraction", f"{_W}.000000000Z", 0, f"{_W}.000000000Z"),
            ("spaces", f"{_W}+01:00", 0, f"&#10;  {_W}+01:00&#9;"),
            ("leap-day", "2028-02-29T23:59:59.999999999-12:00", 999_999, "2028-02-29T23:59:59.999999999-12:00"),
            ("first-moment", "1900-01-01T00:00:00+14:00", 0, "1900-01-01T00:00:00+14:00"),
            ("last-moment", "2199-12-31T23:59:59.999999999-14:00", 999_999, "2199-12-31T23:59:59.999999999-14:00"),
        ]
    ),
    *(
        ("completed", f"boolean-{i}", value, form)
        for i, (value, form) in enumerate(
            [
                (True, "true"),
                (False, "false"),
                (True, "1"),
                (False, "0"),
                (True, " true "),
                (False, "&#9;0&#10;"),
            ]
        )
    ),
    ("retains", "boolean-element-one", True, " 1 "),
    ("retains", "boolean-element-false", False, "&#10;false&#10;"),
    *(
        ("sessions", f"integer-{form.replace('&#9;', 'tab').strip()}", value, form)
        for value, form in [
            (16, "16"),
            (16, "+016"),
            (16, "0016"),
            (0, "-0"),
            (0, "+0"),
            (0, "-00"),
            (999, " 999 "),
            (7, "0" * 40 + "7"),
            (0, "&#9;0"),
        ]
    ),
    ("anxiety", "integer-element-spaces", 6, "&#10; 06 &#10;"),
    ("anxiety", "integer-element-plus-21", 21, "+21"),
    ("anxiety", "integer-element-minus-zero", 0, "-0"),
    *(
        ("after", f"decimal-{name}", _decimal(value, text), form)
        for name, value, text, form in [
            ("trailing-zeros", "85.00", "85.00", "85.00"),
            ("integer", "85", "85", "85"),
            ("leading-point", "0.5", "0.5", ".5"),
            ("trailing-point", "5", "5", "5."),
            ("plus-sign", "1.50", "1.50", "+1.50"),
            ("leading-zeros", "85.50", "85.50", "0085.50"),
            ("spaces", "85.5", "85.5", " 85.5 "),
            ("fifteen-places", "0.000000000000001", "0.000000000000001", "0.000000000000001"),
            ("fifteen-digits", "123456789012345", "123456789012345", "123456789012345"),
            ("fifteen-with-point", "123456789012345", "123456789012345", "123456789012345."),
            ("fourteen-and-one", "12345678901234.5", "12345678901234.5", "+00012345678901234.5"),
        ]
    ),
]


def _with(field: str, value: Any, form: str) -> Parts:
    lexical = Lexical(value, form)
    code, completed, sessions = BASE.elements[0]
    changes: dict[str, Any] = {
        "completed": {"elements": ((code, lexical, sessions),)},
        "sessions": {"elements": ((code, completed, lexical),)},
        "after": {"measurements": (("body-weight", "kg", BASE.measurements[0][2], lexical),)},
        "anxiety": {"sums": (lexical, BASE.sums[1] if BASE.sums else None)},
    }.get(field, {field: lexical})
    if field == "start" and value is not None and value > BASE.end.value:
        changes["end"] = Lexical(date(2199, 12, 31), "2199-12-31")
    return replace(BASE, **changes)


@pytest.mark.parametrize(("field", "value", "form"), [f[0::2] + f[3:] for f in FORMS], ids=[f[1] for f in FORMS])
def test_each_lexical_form_is_read_as_the_xsd_defines_and_carried_to_fhir(
    flows: Any, field: str, value: Any, form: str
) -> None:
    parts = _with(field, value, form)
    raw = parts.xml()
    schema = flows.pipeline.closing_schema
    assert schema.validate(etree.fromstring(raw)), schema.error_log.last_error
    assert_read_as_the_xsd_defines(parse_closing_report(raw, schema, 10**6), parts)
    assert_fhir_carries_the_values(transform(raw, flows.pipeline, NOW, state=STATE), parts)


REFUSED = [
    ("sent_at", "ten-digits-of-a-second", f"{_W}.1234567890Z", "ClosingReport.SentAt", "nine digits"),
    ("sent_at", "not-a-leap-year", "2027-02-29T10:00:00Z", "ClosingReport.SentAt", ""),
    ("sent_at", "year-1899", "1899-12-31T23:59:59-14:00", "ClosingReport.SentAt", "1900 to 2199"),
    ("sent_at", "year-2200", "2200-01-01T00:00:00+14:00", "ClosingReport.SentAt", "1900 to 2199"),
    ("sent_at", "year-0001", "0001-01-01T00:00:00+14:00", "ClosingReport.SentAt", "1900 to 2199"),
    ("sent_at", "year-9999", "9999-12-31T23:59:59-14:00", "ClosingReport.SentAt", "1900 to 2199"),
    ("end", "2100-is-no-leap-year", "2100-02-29", "ClosingReport.Course.end", ""),
    ("closing", "year-9999", "9999-12-31", "ClosingReport.ClosingConversation.date", "1900 to 2199"),
    ("closing", "year-0001", "0001-01-01", "ClosingReport.ClosingConversation.date", "1900 to 2199"),
    ("hads_date", "year-1899", "1899-12-31", "ClosingReport.HADS.date", "1900 to 2199"),
    ("start", "year-2200", "2200-01-01", "ClosingReport.Course.start", "1900 to 2199"),
    ("after", "zero", "0", "ClosingReport.Measurements.Measurement.after", "above 0"),
    ("after", "minus-zero", "-0.00", "ClosingReport.Measurements.Measurement.after", "above 0"),
    ("after", "negative", "-85.0", "ClosingReport.Measurements.Measurement.after", "above 0"),
    ("after", "sixteen-digits-as-written", "85.00000000000000", "ClosingReport.Measurements.Measurement.after", "15"),
    ("after", "sixteen-digit-value", "1234567890123456", "ClosingReport.Measurements.Measurement.after", "15"),
    ("after", "exponent", "8.5E1", "ClosingReport.Measurements.Measurement.after", ""),
    ("after", "bare-point", ".", "ClosingReport.Measurements.Measurement.after", ""),
    ("sessions", "negative", "-1", "ClosingReport.Course.Element.sessions", ""),
    ("completed", "upper-case", "TRUE", "ClosingReport.Course.Element.completed", ""),
    ("anxiety", "decimal-point", "6.0", "ClosingReport.HADS.Anxiety", ""),
]


@pytest.mark.parametrize(
    ("field", "form", "where", "words"), [r[0:1] + r[2:] for r in REFUSED], ids=[r[1] for r in REFUSED]
)
def test_an_unwanted_form_is_refused_by_the_xsd_naming_the_element(
    flows: Any, field: str, form: str, where: str, words: str
) -> None:
    raw = _with(field, None, form).xml()
    schema = flows.pipeline.closing_schema
    assert not schema.validate(etree.fromstring(raw))
    with pytest.raises(InvalidInput) as refused:
        parse_closing_report(raw, schema, 10**6)
    assert refused.value.field == where and words in refused.value.problem, refused.value
    assert f"'{form}'" not in str(refused.value)  # errors never repeat a value from the report
