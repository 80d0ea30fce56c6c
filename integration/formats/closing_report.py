"""The municipality's closing report (XML, `schemas/closing-report.xsd`) → ClosingReport.

Parsed hardened (`safe_xml`), validated against the XSD, then checked for what XSD 1.0 cannot say:
each measurement's UCUM unit, distinct HADS items, real dates, a CPR number with a real birth date.
Errors name the element and never repeat a value from the report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from lxml import etree

from integration.domain.cpr import Cpr, parse_cpr
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
_OFFENDING_VALUE = re.compile(r"[Tt]he value '[^']*'")
_NAMESPACE = re.compile(r"\{[^}]*\}")
_ATTRIBUTE = re.compile(r"attribute '([^']+)'")


@dataclass(frozen=True, slots=True)
class CourseElement:
    code: str
    completed: bool
    sessions: int | None


@dataclass(frozen=True, slots=True)
class Measurement:
    code: str
    unit: str
    before: Decimal | None
    after: Decimal | None


@dataclass(frozen=True, slots=True)
class ClosingReport:
    report_id: str
    sent_at: datetime
    municipality_code: str
    municipality_sor: str
    municipality_ean: str
    municipality_name: str
    patient: Cpr
    given_names: tuple[str, ...]
    family_name: str
    gp_sor: str
    gp_ydernummer: str
    referral_ref: str | None
    course_start: date
    course_end: date
    elements: tuple[CourseElement, ...]
    closing_date: date
    closing_place: str  # municipality | hospital
    measurements: tuple[Measurement, ...]
    smoking: tuple[str, str] | None  # (before, after)
    hads_date: date | None
    hads: HadsResult | None
    summary: str
    follow_up: str | None
    hospital_retains_responsibility: bool
    author: tuple[str, str, str]  # name, role, phone


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


def _schema_violation(root: etree._Element, error: etree._LogEntry) -> InvalidInput:
    found = root.getroottree().xpath(error.path) if error.path else []
    field = _element_path(found[0]) if found else "ClosingReport"
    attribute = _ATTRIBUTE.search(error.message)
    if attribute:
        field += f".{attribute.group(1)}"
    detail = error.message.split(": ", 2 if attribute else 1)[-1]
    return InvalidInput(field, _NAMESPACE.sub("", _OFFENDING_VALUE.sub("the value", detail)))


def check_against_schema(root: etree._Element, schema: etree.XMLSchema) -> None:
    if root.tag != _q("ClosingReport"):
        raise InvalidInput("", f'not a closing report: expected <ClosingReport xmlns="{NS}">')
    if not schema.validate(root):
        error = schema.error_log.last_error
        raise _schema_violation(root, error) if error else InvalidInput("ClosingReport", "schema violation")


def _text(parent: etree._Element, name: str) -> str | None:
    child = parent.find(_q(name))
    return child.text if child is not None else None


def _measurements(root: etree._Element) -> tuple[Measurement, ...]:
    found = []
    for i, m in enumerate(root.iterfind(f"{_q('Measurements')}/{_q('Measurement')}"), start=1):
        code, unit = m.get("code"), m.get("unit")
        if UNITS[code] != unit:
            raise InvalidInput(f"ClosingReport.Measurements.Measurement[{i}]", f"{code} is measured in {UNITS[code]}")
        found.append(Measurement(code, unit, *(Decimal(m.get(k)) if m.get(k) else None for k in ("before", "after"))))
    return tuple(found)


def _hads(root: etree._Element) -> tuple[date | None, HadsResult | None]:
    element = root.find(_q("HADS"))
    if element is None:
        return None, None
    when = date.fromisoformat(element.get("date"))
    items = element.findall(_q("Item"))
    if not items:
        return when, from_sums(int(_text(element, "Anxiety") or 0), int(_text(element, "Depression") or 0))
    numbers = [int(i.get("n")) for i in items]
    if len(set(numbers)) != len(numbers):
        raise InvalidInput("ClosingReport.HADS", "an item appears more than once")
    return when, score_items({int(i.get("n")): int(i.get("score")) for i in items})


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
    start, end = date.fromisoformat(course.get("start")), date.fromisoformat(course.get("end"))
    if end < start:
        raise InvalidInput("ClosingReport.Course", "ends before it starts")
    smoking = root.find(f"{_q('Measurements')}/{_q('SmokingStatus')}")
    hads_date, hads = _hads(root)
    return ClosingReport(
        report_id=(_text(root, "ReportId") or "").lower(),
        sent_at=datetime.fromisoformat(_text(root, "SentAt") or ""),
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
        elements=tuple(
            CourseElement(
                e.get("code"),
                e.get("completed") in ("true", "1"),
                int(e.get("sessions")) if e.get("sessions") else None,
            )
            for e in course.findall(_q("Element"))
        ),
        closing_date=date.fromisoformat(closing.get("date")),
        closing_place=closing.get("place"),
        measurements=_measurements(root),
        smoking=(smoking.get("before"), smoking.get("after")) if smoking is not None else None,
        hads_date=hads_date,
        hads=hads,
        summary=_text(root, "Summary") or "",
        follow_up=_text(root, "FollowUp"),
        hospital_retains_responsibility=(_text(root, "HospitalRetainsResponsibility") or "").strip() in ("true", "1"),
        author=(author.get("name"), author.get("role"), author.get("phone")),
    )
