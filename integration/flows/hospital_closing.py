"""The hospital's own closing → the GP's follow-up plan, as a document and as a CareCommunication.

The agreement (Region Nordjylland, June 2021, "Afslutning på hjerterehabilitering og opfølgningsplan til
almen praksis"): after a closing conversation at the hospital, the hospital sends an opfølgningsplan to the
patient's GP; a patient who stayed attached to the hospital hands the medical responsibility to the GP
when the hospital discharges them. Both outputs go where the municipality's status goes
(`ClosingContext.gp_key`, `gp.status.{ydernummer}`), the GP status's two forms (decision 9). The course
course is closed with the responsibility handed to the GP (`handle_hospital_closing`).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from functools import partial
from typing import Any

from integration.conformance.validation import validate_document, validate_message
from integration.domain.course import Course, Responsible, Stage, StateChanges
from integration.domain.course_sequence import Step, admit_hospital_closing, hospital_closing_target
from integration.domain.directory import gp_clinic
from integration.domain.hospital_closing import Handover, HospitalClosing, HospitalClosingKind
from integration.domain.records import Organisation
from integration.fhir.ids import derived_id
from integration.flows.closing import ClosingContext
from integration.flows.results import AuditFact, FlowResult, Outgoing, Route, course_stage
from integration.messages.care_communication import Author, new_message
from integration.messages.envelope import gp_organization, messaging_organization, patient_resource
from integration.messages.follow_up_plan import TITLE, follow_up_plan_document, follow_up_text

# The CareCommunication's category (MedCom's category codes) by kind: a follow-up plan coordinates the care
# after rehabilitation; the other closes the hospital's outpatient care.
CATEGORY = {
    HospitalClosingKind.FOLLOW_UP_PLAN: "carecoordination",
    HospitalClosingKind.OUTPATIENT_DISCHARGE: "outpatient",
}


def _message(
    closing: HospitalClosing,
    clinic: Organisation,
    parties: tuple[dict[str, Any], dict[str, Any], dict[str, Any]],
    ctx: ClosingContext,
    now: datetime,
) -> dict[str, Any]:
    """The CareCommunication from the closing department to the GP clinic, through the gate."""
    patient, hospital, gp = parties
    message = new_message(
        seed=f"{closing.event_id}/gp-follow-up-plan",
        sender=hospital,
        receiver=messaging_organization(clinic, ctx.terminology),
        patient=patient,
        category=CATEGORY[closing.kind],
        topic=TITLE,
        text=follow_up_text(closing),
        author=Author(*closing.author),
        now=now,
        terms=ctx.terminology,
        also=[gp],
    )
    validate_message(message)
    return message


def _sent(closing: HospitalClosing) -> AuditFact:
    return AuditFact(
        "follow-up-plan-sent",
        {
            "eventId": closing.event_id,
            "ydernummer": closing.gp.ydernummer,
            "kind": closing.kind.value,
            "responsibilityTransferred": closing.responsibility_transferred,
        },
    )


def follow_up_outputs(
    closing: HospitalClosing, ctx: ClosingContext, now: datetime
) -> tuple[tuple[Outgoing, ...], AuditFact]:
    """((the document, the CareCommunication), the `follow-up-plan-sent` fact) for the patient's GP.

    Both go to Route(ctx.exchange, ctx.gp_key with the GP's ydernummer); the document's message id is its
    Bundle id, the CareCommunication expects MedCom's ack. Ids derive from the event id (`fhir.ids`), so a
    redelivered event rebuilds the same outputs; `now` stamps the CareCommunication only. The fact holds no
    CPR number. Raises InvalidInput when the patient's municipality code is unknown (`Directory.municipality`,
    as the referral flow), ConfigurationError when the GP clinic is not in mappings/gp-clinics.yaml, and
    Unsendable when either output fails the gate (`validate_document`, `validate_message`)."""
    ctx.directory.municipality(closing.patient.municipality_code)
    clinic = gp_clinic(ctx.gp_clinics, closing.gp.ydernummer)
    terms = ctx.terminology
    ids = partial(derived_id, closing.event_id)
    gp = gp_organization(closing.gp.sor, closing.gp.ydernummer, terms)
    patient = patient_resource(closing.patient, ids("Patient"), gp, terms)
    hospital = messaging_organization(closing.hospital, terms)
    document = follow_up_plan_document(closing, patient, hospital, gp, ids, terms)
    validate_document(document)
    message = _message(closing, clinic, (patient, hospital, gp), ctx, now)
    route = Route(ctx.exchange, ctx.gp_key.format(ydernummer=closing.gp.ydernummer))
    outgoing = (Outgoing(route, document, document["id"]), Outgoing(route, message, expects_ack=True))
    return outgoing, _sent(closing)


def _of_an_earlier_course(closing: HospitalClosing, course: Course | None) -> bool:
    """Whether the closing belongs to a course before the patient's present one: dated before its discharge."""
    return (
        course is not None and course.discharged_at is not None and (closing.closing_date < course.discharged_at.date())
    )


def _earlier_course_closed(closing: HospitalClosing, ctx: ClosingContext, now: datetime) -> FlowResult:
    """A late closing of an earlier course: the GP gets it (the responsibility for that course is the GP's);
    the present course is not touched."""
    closing = replace(closing, handover=Handover.EARLIER_COURSE)
    outgoing, sent = follow_up_outputs(closing, ctx, now)
    fact = AuditFact("closing-of-an-earlier-course", {"eventId": closing.event_id})
    return FlowResult(outgoing=outgoing, facts=(sent, fact), patient=closing.patient.cpr.key)


def _handover(course: Course | None, step: Step) -> Handover:
    """What the closing does to the responsibility, by where the course stands (`Handover`)."""
    if course is not None and (course.responsible is Responsible.GP or course.current is Stage.CLOSED):
        return Handover.ALREADY_GP
    if hospital_closing_target(course, step) is Stage.MUNICIPAL:
        return Handover.AT_MUNICIPAL_STATUS
    return Handover.NOW


def _after_hospital_closing(closing: HospitalClosing, course: Course | None, step: Step) -> Course:
    """The course after the hospital's closing: closed with the GP responsible; a municipal course still
    running stays open (the hospital's hotline too) until the municipality's status; a closed course as it was."""
    if course is not None and course.current in (Stage.CLOSED, Stage.NOT_REFERRED, Stage.CANCELLED):
        return course
    known = course or Course(
        closing.patient.cpr.key, closing.hospital.sor, closing.patient.municipality_code, False, Responsible.GP
    )
    if hospital_closing_target(course, step) is Stage.MUNICIPAL:
        return replace(known, hospital_done=True)
    return replace(
        known,
        stage=Stage.CLOSED,
        open=False,
        responsible=Responsible.GP,
        closed_on=closing.closing_date,
        hospital_done=True,
    )


def handle_hospital_closing(
    closing: HospitalClosing, course: Course | None, ctx: ClosingContext, now: datetime
) -> FlowResult:
    """The hospital's own closing: its follow-up plan (opfølgningsplan) to the GP, as a FHIR document and a
    CareCommunication, and the course closed with the responsibility handed to the GP (the agreement: "Ved
    afslutningen af et specialiseret genoptræningsforløb ... sender efterfølgende en opfølgningsplan til
    patientens egen læge"; "Når patienten på et senere tidspunkt afsluttes fra hospitalet, overgives
    behandleransvaret herfra til egen læge"). During a municipal course the course stays open and the
    responsibility moves with the municipality's status; a course already closed stays as it is (the plan is
    sent all the same). Raises OutOfOrder before the visitation talk has decided the referral, or for an
    outpatient discharge of a patient the hospital does not hold; ConfigurationError for a GP clinic not in
    our mappings."""
    if _of_an_earlier_course(closing, course):  # sent all the same; the course it meets is another one
        return _earlier_course_closed(closing, ctx, now)
    step = Step(closing.kind.value)
    admit_hospital_closing(step, course)
    closing = replace(closing, handover=_handover(course, step))
    outgoing, sent = follow_up_outputs(closing, ctx, now)
    after = _after_hospital_closing(closing, course, step)
    facts = [sent]
    if course is None:
        facts.append(AuditFact("closing-without-course", {"eventId": closing.event_id}))
    elif after is course:
        facts.append(AuditFact("course-already-closed", {"eventId": closing.event_id}))
    else:
        facts.append(course_stage(after, eventId=closing.event_id))
    return FlowResult(
        outgoing=outgoing,
        facts=tuple(facts),
        patient=closing.patient.cpr.key,
        state=StateChanges(courses=() if after is course else (after,)),
    )
