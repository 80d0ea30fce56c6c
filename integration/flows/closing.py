"""The closing flow: the municipality's closing report → GP status (document and CareCommunication),
the DHRD notice to the hospital, and the handover of medical responsibility in the course state."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from integration.conformance.validation import validate_document, validate_message
from integration.domain.closing_report import ClosingReport
from integration.domain.course import Course, State, StateChanges
from integration.domain.directory import Directory
from integration.domain.records import GeneralPractitioner, Organisation, Patient
from integration.errors import ConfigurationError
from integration.fhir.fhir_json import decimal_text
from integration.fhir.ids import derived_id
from integration.fhir.terminology import Terminology
from integration.flows.results import AuditFact, FlowResult, Outgoing, Route
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


def handle_closing_report(report: ClosingReport, state: State, ctx: ClosingContext, now: datetime) -> FlowResult:
    terms = ctx.terminology
    clinic = ctx.gp_clinics.get(report.gp_ydernummer)
    if clinic is None:
        raise ConfigurationError(f"GP clinic with ydernummer {report.gp_ydernummer} is not in mappings/gp-clinics.yaml")
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
    document = status_document(
        report, patient, municipality, gp, lambda role: derived_id(report.report_id, role), terms
    )
    validate_document(document)
    author = Author(*report.author)

    def message_to(receiver: Organisation, purpose: str, topic: str, text: str) -> dict[str, Any]:
        message = new_message(
            seed=f"{report.report_id}/{purpose}",
            sender=municipality,
            receiver=messaging_organization(receiver, terms),
            patient=patient,
            category="carecoordination",
            topic=topic,
            text=text,
            author=author,
            now=now,
            terms=terms,
            also=[gp],
        )
        validate_message(message)
        return message

    gp_message = message_to(clinic, "gp-status", "Status efter hjerterehabilitering", status_text(report))
    gp_route = Route(ctx.exchange, ctx.gp_key.format(ydernummer=report.gp_ydernummer))
    outgoing = [Outgoing(gp_route, document, document["id"]), Outgoing(gp_route, gp_message, expects_ack=True)]
    course = state.course(report.patient.value)
    facts = [
        AuditFact(
            "gp-status-sent",
            {
                "reportId": report.report_id,
                "ydernummer": report.gp_ydernummer,
                "hadsAttention": bool(report.hads and report.hads.needs_attention),
                "responsibilityTransferred": not report.hospital_retains_responsibility,
            },
        )
    ]
    if course is None:
        facts.append(AuditFact("closing-without-course", {"reportId": report.report_id}))
    if report.closing_place == "municipality":
        department = ctx.directory.departments.get(course.referring_department) if course else None
        if department is None:
            facts.append(
                AuditFact(
                    "dhrd-notice-not-sent",
                    {"reportId": report.report_id, "reason": "the referring department is not known"},
                )
            )
        else:
            notice = message_to(department.organisation, "dhrd", "HADS-screening til DHRD", dhrd_text(report))
            outgoing.append(
                Outgoing(
                    Route(ctx.exchange, ctx.dhrd_key.format(sor=department.organisation.sor)), notice, expects_ack=True
                )
            )
    closed = Course(
        report.patient.value,
        course.referring_department if course else "",
        report.municipality_code,
        open=False,
        responsible="hospital" if report.hospital_retains_responsibility else "gp",
    )
    return FlowResult(
        outgoing=tuple(outgoing),
        facts=tuple(facts),
        patient=report.patient.value,
        state=StateChanges(courses=(closed,)),
    )
