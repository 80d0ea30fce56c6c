"""The closing flow: the municipality's closing report → GP status (document and CareCommunication),
the DHRD notice to the hospital, and the handover of medical responsibility in the course state."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from integration.conformance.validation import validate_document, validate_message
from integration.domain.closing_report import ClosingReport
from integration.domain.course import ClosingPlace, Course, Referrer, Responsible, Stage, State, StateChanges
from integration.domain.course_sequence import HOSPITAL_HOLDS, MOVED_BY_STATUS
from integration.domain.directory import Directory, gp_clinic
from integration.domain.records import GeneralPractitioner, Organisation, Patient
from integration.fhir.fhir_json import decimal_text
from integration.fhir.ids import derived_id
from integration.fhir.terminology import Terminology
from integration.flows.results import AuditFact, FlowResult, Outgoing, Route, course_stage
from integration.messages.care_communication import Author, new_message
from integration.messages.envelope import gp_organization, messaging_organization, patient_resource
from integration.messages.status_document import (
    ELEMENT_LABELS,
    MEASUREMENT_LABELS,
    hads_lines,
    handover_line,
    status_document,
)


@dataclass(frozen=True, slots=True)
class ClosingContext:
    terminology: Terminology
    directory: Directory
    gp_clinics: Mapping[str, Organisation]  # by ydernummer
    exchange: str
    gp_key: str  # template with {ydernummer}
    dhrd_key: str  # template with {sor}


def _value(value: Decimal | None) -> str:
    """A measured value as the report wrote it (85.00 stays 85.00), or a dash."""
    return "–" if value is None else decimal_text(value)


def status_text(report: ClosingReport) -> str:
    """The status in readable Danish, for GP systems that only show a CareCommunication."""
    elements = ", ".join(
        f"{ELEMENT_LABELS[e.code]} ({'gennemført' if e.completed else 'ikke gennemført'})" for e in report.elements
    )
    lines = [
        f"Status efter kommunalt hjerterehabiliteringsforløb {report.course_start.isoformat()} – "
        f"{report.course_end.isoformat()}.",
        f"Elementer: {elements}.",
        f"Effekt: {report.summary}",
        *(
            f"{MEASUREMENT_LABELS[m.code]}: før {_value(m.before)}, efter {_value(m.after)} {m.unit}"
            for m in report.measurements
        ),
        *hads_lines(report.hads),
        handover_line(report),
        *([f"Opfølgning: {report.follow_up}"] if report.follow_up else []),
    ]
    return "\n".join(lines)


def dhrd_text(report: ClosingReport) -> str:
    hads = report.hads
    scores = (
        "ikke udført"
        if hads is None
        else f"angst {hads.anxiety.score if hads.anxiety.score is not None else 'ikke beregnelig'}, "
        f"depression {hads.depression.score if hads.depression.score is not None else 'ikke beregnelig'}"
    )
    return (
        f"HADS-screening ved afsluttende samtale i kommunen {report.closing_date.isoformat()} er foretaget "
        f"(dato {report.hads_date.isoformat() if report.hads_date else '–'}; {scores}). Til registrering i DHRD."
    )


@dataclass(frozen=True, slots=True)
class _Parties:
    """The FHIR resources every message of one closing report shares."""

    patient: dict[str, Any]
    gp: dict[str, Any]
    municipality: dict[str, Any]


def _parties(report: ClosingReport, terms: Terminology) -> _Parties:
    patient_record = Patient(
        report.patient,
        report.given_names,
        report.family_name,
        report.municipality_code,
        GeneralPractitioner(report.gp_sor, report.gp_ydernummer),
    )
    gp = gp_organization(report.gp_sor, report.gp_ydernummer, terms)
    patient = patient_resource(patient_record, derived_id(report.report_id, "Patient"), gp, terms)
    municipality = messaging_organization(
        Organisation(report.municipality_sor, report.municipality_ean, report.municipality_name), terms
    )
    return _Parties(patient, gp, municipality)


def _gp_status_document(report: ClosingReport, parties: _Parties, terms: Terminology) -> dict[str, Any]:
    """The status document for the GP, through the gate (Unsendable when it fails it)."""
    document = status_document(
        report,
        parties.patient,
        parties.municipality,
        parties.gp,
        lambda role: derived_id(report.report_id, role),
        terms,
    )
    validate_document(document)
    return document


def _message_to(
    receiver: Organisation,
    purpose: str,
    content: tuple[str, str],
    report: ClosingReport,
    parties: _Parties,
    terms: Terminology,
    now: datetime,
) -> dict[str, Any]:
    """A CareCommunication from the municipality (`content`: its topic and text), through the gate."""
    topic, text = content
    message = new_message(
        seed=f"{report.report_id}/{purpose}",
        sender=parties.municipality,
        receiver=messaging_organization(receiver, terms),
        patient=parties.patient,
        category="carecoordination",
        topic=topic,
        text=text,
        author=Author(*report.author),
        now=now,
        terms=terms,
        also=[parties.gp],
    )
    validate_message(message)
    return message


def _gp_status_sent(report: ClosingReport) -> AuditFact:
    return AuditFact(
        "gp-status-sent",
        {
            "reportId": report.report_id,
            "ydernummer": report.gp_ydernummer,
            "hadsAttention": bool(report.hads and report.hads.needs_attention),
            "responsibilityTransferred": report.hands_over,
        },
    )


def _dhrd_notice(
    report: ClosingReport, course: Course | None, parties: _Parties, ctx: ClosingContext, now: datetime
) -> tuple[tuple[Outgoing, ...], tuple[AuditFact, ...]]:
    """The HADS notice to the referring department for DHRD, when the closing conversation was in the
    municipality; an audit fact instead when the department is not known."""
    if report.closing_place != ClosingPlace.MUNICIPALITY:
        return (), ()
    department = ctx.directory.departments.get(course.referring_department) if course else None
    if department is None:
        reason = (
            "a course the GP referred: no hospital department registers it"
            if course is not None and course.referrer is Referrer.GP
            else "the referring department is not known"
        )
        why = {"reportId": report.report_id, "reason": reason}
        return (), (AuditFact("dhrd-notice-not-sent", why),)
    content = ("HADS-screening til DHRD", dhrd_text(report))
    notice = _message_to(department.organisation, "dhrd", content, report, parties, ctx.terminology, now)
    route = Route(ctx.exchange, ctx.dhrd_key.format(sor=department.organisation.sor))
    return (Outgoing(route, notice, expects_ack=True),), ()


def _stage_after_status(report: ClosingReport, course: Course | None) -> Stage:
    """Where the municipality's status leaves a municipal course (`course_sequence.TRANSITIONS`,
    municipal-status): closed when the GP referred it or the hospital has closed its part already; else by the
    report, waiting for the hospital's follow-up plan or kept by the hospital when it says so."""
    if course is not None and (course.referrer is Referrer.GP or course.hospital_done):
        return Stage.CLOSED
    if report.closing_place != ClosingPlace.MUNICIPALITY:
        return Stage.AWAITING_HOSPITAL_CLOSING  # the hospital's follow-up plan closes it
    return Stage.HOSPITAL_FOLLOW_UP if report.hospital_retains_responsibility else Stage.CLOSED


def _after_status(report: ClosingReport, course: Course | None) -> Course:
    """The course after the municipality's status: closed with the responsibility handed to the GP, waiting for
    the hospital's follow-up plan, or kept by the hospital. A course at another stage (closed, in specialised
    rehabilitation, waiting for its visitation talk or the hospital's plan) is only noted as having had it:
    a status cannot hand over what the municipality does not hold."""
    if course is not None and course.current not in MOVED_BY_STATUS:
        return replace(course, municipal_status=True)
    stage = _stage_after_status(report, course)
    known = course or Course(report.patient.value, "", report.municipality_code, False, Responsible.GP)
    return replace(
        known,
        municipality_code=report.municipality_code,
        stage=stage,
        open=stage.open,
        responsible=Responsible.GP if stage is Stage.CLOSED else Responsible.HOSPITAL,
        municipal_status=True,
        closed_on=report.closing_date if not stage.open else None,
    )


def handle_closing_report(report: ClosingReport, state: State, ctx: ClosingContext, now: datetime) -> FlowResult:
    """The GP's status (document and CareCommunication), the DHRD notice, and the course closed.

    Raises ConfigurationError when the GP clinic is not in our mappings, Unsendable when what we built
    fails the gate."""
    clinic = gp_clinic(ctx.gp_clinics, report.gp_ydernummer)
    course = state.course(report.patient.value)
    if course is not None and course.current in HOSPITAL_HOLDS:  # the status cannot hand over what it does not hold
        report = replace(report, hospital_retains_responsibility=True)
    elif course is not None and course.current in MOVED_BY_STATUS:
        report = replace(report, gp_referred=course.referrer is Referrer.GP, hospital_done=course.hospital_done)
    terms = ctx.terminology
    parties = _parties(report, terms)
    document = _gp_status_document(report, parties, terms)
    status = ("Status efter hjerterehabilitering", status_text(report))
    gp_message = _message_to(clinic, "gp-status", status, report, parties, terms, now)
    gp_route = Route(ctx.exchange, ctx.gp_key.format(ydernummer=report.gp_ydernummer))
    notice, notice_facts = _dhrd_notice(report, course, parties, ctx, now)
    after = _after_status(report, course)
    return FlowResult(
        outgoing=(Outgoing(gp_route, document, document["id"]), Outgoing(gp_route, gp_message, expects_ack=True))
        + notice,
        facts=(_gp_status_sent(report), *_course_facts(report, course, after), *notice_facts),
        patient=report.patient.value,
        state=StateChanges(courses=(after,)),
    )


def _course_facts(report: ClosingReport, course: Course | None, after: Course) -> tuple[AuditFact, ...]:
    """What the status did to the course: none known, already closed by the hospital, or where it now stands."""
    if course is None:
        return (AuditFact("closing-without-course", {"reportId": report.report_id}),)
    if course.current not in MOVED_BY_STATUS:
        detail = {"reportId": report.report_id, "stage": course.current.value}
        return (AuditFact("status-does-not-move-course", detail),)
    return (course_stage(after, reportId=report.report_id),)
