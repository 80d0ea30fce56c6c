"""The municipality's closing report (XML, `schemas/closing-report.xsd`) → ClosingReport.

Parsed hardened (`safe_xml`), validated against the XSD, then checked for what XSD 1.0 cannot say:
each measurement's UCUM unit, distinct HADS items, each course element once, real dates, a closing
conversation not before the course starts, a CPR number with a real birth date. The XSD itself keeps
every date in the years 1900-2199 (as every moment, `domain.moment`) and every measured value above zero.
Typed values are read as XSD 1.0 defines them (white space collapsed, `1`/`0` booleans, signs and
leading zeros in numbers); the forms the report has no use for are refused by the XSD itself, so
the two never disagree. What the FHIR output needs beyond the XSD's value is kept too: a measured
value's digits after the point (a Decimal: `85.00` stays `85.00`; a sign, leading zeros and a point
with nothing after it are not kept), and SentAt as written (every digit of its second, `Z` or its
offset), which is already a FHIR instant. Errors name the element and never repeat a value from the
report.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal

from lxml import etree

from integration.domain.closing_report import ClosingReport, CourseElement, Measurement
from integration.domain.course import ClosingPlace
from integration.domain.cpr import born_by, parse_cpr
from integration.domain.hads import HadsResult, from_sums, score_items
from integration.errors import InvalidInput
from integration.formats.safe_xml import parse_xml

NS = "urn:dk:hjerterehab:closing-report:1"
UNITS = {
    "six-minute-walk": "m",
    "max-workload": "W",
    "vo2-peak": "mL/min/kg",
    "body-weight": "kg",
    "waist": "cm",
    "systolic-blood-pressure": "mm[Hg]",
    "diastolic-blood-pressure": "mm[Hg]",
    "ldl-cholesterol": "mmol/L",
    "hba1c": "mmol/mol",
}
# libxml2 puts the offending value first ("'V' is not a valid value of the atomic type 'T'") or after
# "The value" ("[facet 'pattern'] The value 'V' is not accepted by …"); greedy, so a quote inside V cannot
# end it early: what follows the last " is/has/does" is the schema's, never the report's.
_VALUE_FIRST = re.compile(r"^'.*'(?= is not a valid value of )", re.DOTALL)
_THE_VALUE = re.compile(r"[Tt]he value '.*'(?= (?:is|has|does|must) )", re.DOTALL)
_NAMESPACE = re.compile(r"\{[^{}']*:[^{}']*\}")  # {urn:…}Element; not a pattern's {4} or \p{Z}
_ATTRIBUTE = re.compile(r"attribute '([^']+)'")
_XML_SPACE = " \t\r\n"  # what XSD's whiteSpace collapse removes; Python's strip() would remove more


def _q(name: str) -> str:
    return f"{{{NS}}}{name}"


def _element_path(element: etree._Element) -> str:
    """ClosingReport.Course.Element[2]: local names, with a position where siblings share the name."""
    parts = []
    current: etree._Element | None = element
    while current is not None:
        name = etree.QName(current).localname
        parent = current.getparent()
        same = [] if parent is None else [s for s in parent if s.tag == current.tag]
        parts.append(f"{name}[{same.index(current) + 1}]" if len(same) > 1 else name)
        current = parent
    return ".".join(reversed(parts))


# A measured value of at most 15 digits as written (leading zeros, sign and point aside): k digits before
# the point leave 15 - k after it.
_MEASURED_VALUE = (
    "[+\\-]?0*(\\.[0-9]{1,15}|[0-9](\\.[0-9]{0,14})?|"
    + "|".join(f"[0-9]{{{k}}}(\\.[0-9]{{0,{15 - k}}})?" for k in range(2, 15))
    + "|[0-9]{15}\\.?)"
)
# The patterns of schemas/closing-report.xsd that say more in words than as a regular expression.
_PATTERN_WORDS = {
    "(19|20|21)[0-9]{2}-[0-9]{2}-[0-9]{2}": "not a date yyyy-mm-dd (a year from 1900 to 2199, no time zone)",
    "(19|20|21)[0-9]{2}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?"
    "(Z|[+\\-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00))": (
        "not a date and time yyyy-mm-ddThh:mm:ss with a time zone (a year from 1900 to 2199, hours 00 to 23, "
        "at most nine digits of a second, a zone from -14:00 to +14:00)"
    ),
    _MEASURED_VALUE: (
        "has more than 15 digits (the schema's totalDigits, counting the zeros after the point as written: "
        "they are the value's precision)"
    ),
    "[\\s\\S]*[^\\s\\p{Z}\\p{Cc}][\\s\\S]*": "holds nothing but spaces or control characters",
}
_PATTERN = re.compile(r"\[facet 'pattern'\] the value is not accepted by the pattern '(.*)'\.$", re.DOTALL)


def _without_values(detail: str, value: str | None) -> str:
    """libxml2's description of a violation without the offending value (they go to logs and headers)."""
    if detail.startswith("[facet 'minExclusive']"):  # only MeasuredValue has one: its limit is 0
        return "must be above 0 (no measurement the report carries is 0 or below)"
    detail = _THE_VALUE.sub("the value", _VALUE_FIRST.sub("the value", detail))
    if value:
        detail = detail.replace(f"'{value}'", "the value")
    pattern = _PATTERN.match(detail)
    if pattern and pattern.group(1) in _PATTERN_WORDS:
        return _PATTERN_WORDS[pattern.group(1)]
    return " ".join(_NAMESPACE.sub("", detail).split())


def _schema_violation(root: etree._Element, error: etree._LogEntry) -> InvalidInput:
    found = root.getroottree().xpath(error.path) if error.path else []
    element = found[0] if found and isinstance(found[0], etree._Element) else None
    field = _element_path(element) if element is not None else "ClosingReport"
    attribute = _ATTRIBUTE.search(error.message)
    value = element.text if element is not None else None
    if attribute:
        field += f".{attribute.group(1)}"
        value = element.get(attribute.group(1)) if element is not None else None
    detail = error.message.split(": ", 1)[-1]
    return InvalidInput(field, _without_values(detail, value))


def check_against_schema(root: etree._Element, schema: etree.XMLSchema) -> None:
    if root.tag != _q("ClosingReport"):
        raise InvalidInput("", f'not a closing report: expected <ClosingReport xmlns="{NS}">')
    if not schema.validate(root):
        error = schema.error_log.last_error
        raise _schema_violation(root, error) if error else InvalidInput("ClosingReport", "schema violation")


def _text(parent: etree._Element, name: str) -> str | None:
    child = parent.find(_q(name))
    return child.text if child is not None else None


def _collapsed(value: str | None) -> str:
    return (value or "").strip(_XML_SPACE)


def _xs_boolean(value: str | None) -> bool:
    return _collapsed(value) in ("true", "1")


def _xs_integer(value: str | None) -> int:
    """An xs:integer the XSD admitted: a sign and any number of leading zeros (Python's int() refuses
    more than 4300 digits, zeros included)."""
    text = _collapsed(value)
    digits = text.lstrip("+-").lstrip("0") or "0"
    return -int(digits) if text.startswith("-") else int(digits)


def _xs_decimal(value: str | None) -> Decimal | None:
    """The XSD's value, with the exponent its digits after the point give (Decimal('85.00'))."""
    text = _collapsed(value)
    return Decimal(text) if text else None


def _xs_date(value: str | None, field: str) -> date:
    try:
        return date.fromisoformat(_collapsed(value))
    except ValueError:
        raise InvalidInput(field, "not a real date") from None


def _xs_datetime(value: str | None, field: str) -> datetime:
    try:
        return datetime.fromisoformat(_collapsed(value))
    except ValueError:
        raise InvalidInput(field, "not a real date and time") from None


def _measurements(root: etree._Element) -> tuple[Measurement, ...]:
    found = []
    for i, m in enumerate(root.iterfind(f"{_q('Measurements')}/{_q('Measurement')}"), start=1):
        code, unit = m.get("code"), m.get("unit")
        if UNITS[code] != unit:
            raise InvalidInput(f"ClosingReport.Measurements.Measurement[{i}]", f"{code} is measured in {UNITS[code]}")
        found.append(Measurement(code, unit, _xs_decimal(m.get("before")), _xs_decimal(m.get("after"))))
    return tuple(found)


def _hads(root: etree._Element) -> tuple[date | None, HadsResult | None]:
    element = root.find(_q("HADS"))
    if element is None:
        return None, None
    when = _xs_date(element.get("date"), "ClosingReport.HADS.date")
    items = element.findall(_q("Item"))
    if not items:
        return when, from_sums(_xs_integer(_text(element, "Anxiety")), _xs_integer(_text(element, "Depression")))
    numbers = [_xs_integer(i.get("n")) for i in items]
    if len(set(numbers)) != len(numbers):
        raise InvalidInput("ClosingReport.HADS", "an item appears more than once")
    return when, score_items(dict(zip(numbers, (_xs_integer(i.get("score")) for i in items), strict=True)))


def _element(e: etree._Element) -> CourseElement:
    sessions = e.get("sessions")
    return CourseElement(e.get("code"), _xs_boolean(e.get("completed")), _xs_integer(sessions) if sessions else None)


def _elements(course: etree._Element) -> tuple[CourseElement, ...]:
    """Each course element once: one reported twice (perhaps completed and not) leaves which is true a guess."""
    found: list[CourseElement] = []
    for e in course.findall(_q("Element")):
        element = _element(e)
        if any(f.code == element.code for f in found):
            raise InvalidInput(_element_path(e), "reports a course element that an earlier Element reports")
        found.append(element)
    return tuple(found)


def parse_closing_report(raw: bytes, schema: etree.XMLSchema, max_bytes: int) -> ClosingReport:
    root = parse_xml(raw, max_bytes)
    check_against_schema(root, schema)
    municipality, patient, gp = (
        root.find(_q("Municipality")),
        root.find(_q("Patient")),
        root.find(_q("GeneralPractitioner")),
    )
    course, closing, author = root.find(_q("Course")), root.find(_q("ClosingConversation")), root.find(_q("Author"))
    try:
        cpr = parse_cpr(patient.get("cpr"))
    except ValueError as exc:
        raise InvalidInput("ClosingReport.Patient.cpr", str(exc)) from None
    start = _xs_date(course.get("start"), "ClosingReport.Course.start")
    end = _xs_date(course.get("end"), "ClosingReport.Course.end")
    if end < start:
        raise InvalidInput("ClosingReport.Course", "ends before it starts")
    try:
        born_by(cpr, start)  # a course does not start before the patient is born
    except ValueError as exc:
        raise InvalidInput("ClosingReport.Patient.cpr", str(exc)) from None
    closing_date = _xs_date(closing.get("date"), "ClosingReport.ClosingConversation.date")
    if closing_date < start:
        raise InvalidInput("ClosingReport.ClosingConversation.date", "is before the course starts (Course.start)")
    smoking = root.find(f"{_q('Measurements')}/{_q('SmokingStatus')}")
    hads_date, hads = _hads(root)
    return ClosingReport(
        report_id=(_text(root, "ReportId") or "").lower(),
        sent_at=_xs_datetime(_text(root, "SentAt"), "ClosingReport.SentAt"),
        sent_at_instant=_collapsed(_text(root, "SentAt")),
        municipality_code=municipality.get("code").lstrip("0").zfill(3),
        municipality_sor=municipality.get("sor"),
        municipality_ean=municipality.get("ean"),
        municipality_name=_text(municipality, "Name") or "",
        patient=cpr,
        given_names=tuple(g.text or "" for g in patient.findall(_q("GivenName"))),
        family_name=_text(patient, "FamilyName") or "",
        gp_sor=gp.get("sor"),
        gp_ydernummer=gp.get("ydernummer"),
        referral_ref=_text(root, "ReferralRef"),
        course_start=start,
        course_end=end,
        elements=_elements(course),
        closing_date=closing_date,
        closing_place=ClosingPlace(closing.get("place")),  # the XSD admits exactly these values
        measurements=_measurements(root),
        smoking=(smoking.get("before"), smoking.get("after")) if smoking is not None else None,
        hads_date=hads_date,
        hads=hads,
        summary=_text(root, "Summary") or "",
        follow_up=_text(root, "FollowUp"),
        hospital_retains_responsibility=_xs_boolean(_text(root, "HospitalRetainsResponsibility")),
        author=(author.get("name"), author.get("role"), author.get("phone")),
    )
