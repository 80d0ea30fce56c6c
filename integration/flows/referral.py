"""The referral flow: discharge event → risk → pathway → MedCom-style FHIR referral message."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from integration.conformance.validation import validate_message
from integration.domain.course import Course, Responsible, StateChanges
from integration.domain.cpr import Cpr
from integration.domain.directory import Directory
from integration.domain.pathway import Pathway, choose_pathway
from integration.domain.records import DischargeEvent, Organisation, Setting
from integration.domain.referral_rules import ReferralRules, referral_notes
from integration.domain.risk import RiskAssessment, stratify
from integration.fhir.ids import derived_id
from integration.fhir.terminology import Terminology
from integration.flows.results import AuditFact, FlowResult, Outgoing, Route
from integration.messages.envelope import gp_organization, messaging_organization, patient_resource
from integration.messages.referral import (
    exercise_test_observation,
    referral_message,
    risk_assessment,
    service_request,
)


@dataclass(frozen=True, slots=True)
class ReferralRouting:
    exchange: str
    municipality_key: str  # template with {code}
    hospital_key: str  # template with {sor}


@dataclass(frozen=True, slots=True)
class ReferralContext:
    directory: Directory
    rules: ReferralRules
    terminology: Terminology
    routing: ReferralRouting
    validate: Callable[[dict[str, Any]], None] = validate_message  # raises Unsendable; only benchmarks swap it


def _receiver_and_route(event: DischargeEvent, pathway: Pathway, ctx: ReferralContext) -> tuple[Organisation, Route]:
    routing = ctx.routing
    if pathway.performer is Setting.HOSPITAL:
        unit = ctx.directory.rehabilitation_unit(event.hospital)
        return unit, Route(routing.exchange, routing.hospital_key.format(sor=unit.sor))
    code = event.patient.municipality_code
    receiver = ctx.directory.municipal_receiver(code)
    return receiver, Route(routing.exchange, routing.municipality_key.format(code=code))


def _risk_facts(event: DischargeEvent, risk: RiskAssessment) -> list[AuditFact]:
    if not risk.escalated or risk.clinician_group is None:
        return []
    return [
        AuditFact(
            "risk-escalated",
            {
                "eventId": event.event_id,
                "from": risk.clinician_group.value,
                "to": risk.group.value,
                "criteria": list(risk.criteria),
            },
        )
    ]


def build_referral_message(
    event: DischargeEvent,
    risk: RiskAssessment,
    pathway: Pathway,
    receiver: Organisation,
    ctx: ReferralContext,
    now: datetime,
) -> dict[str, Any]:
    terms, rules = ctx.terminology, ctx.rules
    ids = partial(derived_id, event.event_id)
    sender = messaging_organization(event.hospital, terms)
    receiver_org = messaging_organization(receiver, terms)
    gp = event.patient.gp
    gp_org = gp_organization(gp.sor, gp.ydernummer, terms) if gp else None
    patient = patient_resource(event.patient, ids("Patient"), gp_org, terms)
    test = event.exercise_test
    observation = exercise_test_observation(ids("Observation"), test, patient, sender, terms) if test else None
    assessment = risk_assessment(ids("RiskAssessment"), risk, event, patient, sender, observation, rules, terms)
    supporting = [assessment] + ([observation] if observation else [])
    notes = referral_notes(event, risk, pathway, rules)
    request = service_request(
        ids("ServiceRequest"), event, pathway, notes, patient, sender, receiver_org, supporting, rules, terms
    )
    content = [patient, *supporting] + ([gp_org] if gp_org else [])
    return referral_message(ids, request, content, sender, receiver_org, now, terms)


def handle_discharge(event: DischargeEvent, ctx: ReferralContext, now: datetime) -> FlowResult:
    ctx.directory.municipality(event.patient.municipality_code)  # an unknown code is invalid input on every path
    risk = stratify(event.risk_criteria, event.clinician_risk_group, ctx.rules.risk_policy)
    facts = _risk_facts(event, risk)
    pathway = choose_pathway(event, risk)
    if pathway is None:
        facts.append(AuditFact("no-referral", {"eventId": event.event_id, "riskGroup": risk.group.value}))
        return FlowResult(outgoing=(), facts=tuple(facts), patient=event.patient.cpr.key)
    if pathway.decision_overridden:
        facts.append(
            AuditFact(
                "pathway-overridden",
                {
                    "eventId": event.event_id,
                    "decision": event.referral.decision,
                    "riskGroup": risk.group.value,
                    "performer": pathway.performer.value,
                },
            )
        )
    receiver, route = _receiver_and_route(event, pathway, ctx)
    bundle = build_referral_message(event, risk, pathway, receiver, ctx, now)
    ctx.validate(bundle)
    facts.append(
        AuditFact(
            "referral-built",
            {
                "eventId": event.event_id,
                "messageHeaderId": bundle["entry"][0]["resource"]["id"],
                "bundleId": bundle["id"],
                "category": pathway.category,
                "riskGroup": risk.group.value,
                "receiverSor": receiver.sor,
                "routingKey": route.routing_key,
            },
        )
    )
    number = event.patient.cpr
    # Courses are filed under CPR numbers only: a replacement number is temporary (decision 17).
    opened = Course(number.value, event.hospital.sor, event.patient.municipality_code, True, Responsible.HOSPITAL)
    courses = (opened,) if isinstance(number, Cpr) else ()
    return FlowResult(
        outgoing=(Outgoing(route, bundle, expects_ack=True),),
        facts=tuple(facts),
        patient=number.key,
        state=StateChanges(courses=courses),
    )
