"""The referral flow: a hospital event (discharge, visitation talk, step-down) or a GP's referral → risk →
pathway → MedCom-style FHIR referral messages, decided against the patient's course (`course_sequence`).

What each event yields (the agreement's pathway; README, "The pathway"):

- a discharge refers at once, or not yet (the course waits for its visitation talk);
- a visitation refers a patient not yet referred, or changes the referral in force: an update to the same
  receiver (`update-referral`, ServiceRequest.replaces), a cancellation to the old receiver and a new referral
  to the new one, a cancellation when it decides on no rehabilitation, nothing when it changes nothing;
- a step-down refers the patient from specialised rehabilitation to the municipality (ServiceRequest.basedOn
  the specialised referral); the hospital stays responsible;
- a GP's referral refers to municipal rehabilitation; the GP is responsible for that course.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial
from types import MappingProxyType
from typing import Any

from integration.conformance.validation import validate_message
from integration.domain.course import Course, Referrer, Responsible, SentReferral, Stage, StateChanges
from integration.domain.course_sequence import (
    REFERRAL_IN_FORCE,
    Change,
    admit_discharge,
    admit_discharge_update,
    admit_gp_referral,
    admit_step_down,
    admit_visitation,
    cancellable,
    compare,
)
from integration.domain.dcs_suggestions import SuggestionRule, suggest
from integration.domain.dcs_suggestions import compare as compare_criteria
from integration.domain.directory import Directory, gp_clinic
from integration.domain.missed_referral import DischargeSeen
from integration.domain.pathway import Pathway, choose_pathway, has_heart_failure, municipal_pathway
from integration.domain.records import (
    DischargeCancellation,
    DischargeEvent,
    Organisation,
    Patient,
    ReferralRequest,
    RiskGroup,
    Setting,
)
from integration.domain.referral_rules import ReferralRules, cancellation_notes, referral_notes
from integration.domain.risk import RiskAssessment, stratify
from integration.errors import ConfigurationError, InvalidInput
from integration.fhir.ids import derived_id
from integration.fhir.terminology import Terminology
from integration.flows.results import AuditFact, FlowResult, Outgoing, Route, course_stage
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
    gp_clinics: Mapping[str, Organisation] = field(default_factory=dict)  # by ydernummer: a clinic's SOR, EAN
    dcs_suggestions: tuple[SuggestionRule, ...] = ()  # mappings/dcs-suggestions.yaml: audited, never decides


@dataclass(frozen=True, slots=True)
class Decided:
    """What an event decides on its own: the risk, the pathway (None: no referral now), and the referral it
    would send (`proposal`), with its receiver and route."""

    event: DischargeEvent
    risk: RiskAssessment
    pathway: Pathway | None
    receiver: Organisation | None = None
    route: Route | None = None
    proposal: SentReferral | None = None


@dataclass(frozen=True, slots=True)
class Action:
    """One referral message to build: `event` the MedCom event (new | update | cancel, `referralEvents` in
    mappings/terminology.yaml), for the referral `sent` (receiver, category, elements as it says them)."""

    event: str
    sent: SentReferral
    replaces: str | None = None
    based_on: str | None = None
    because: str = "none"  # a cancellation's reason (`referral_rules.CANCELLED_BECAUSE`)


def _receiver_and_route(event: DischargeEvent, pathway: Pathway, ctx: ReferralContext) -> tuple[Organisation, Route]:
    routing = ctx.routing
    if pathway.performer is Setting.HOSPITAL:
        unit = ctx.directory.rehabilitation_unit(event.hospital)
        return unit, Route(routing.exchange, routing.hospital_key.format(sor=unit.sor))
    code = event.patient.municipality_code
    receiver = ctx.directory.municipal_receiver(code)
    return receiver, Route(routing.exchange, routing.municipality_key.format(code=code))


def _sent_referral(
    event: DischargeEvent, risk: RiskAssessment, pathway: Pathway, receiver: Organisation
) -> SentReferral:
    municipal = pathway.performer is Setting.MUNICIPALITY
    return SentReferral(
        service_request=f"urn:uuid:{event.event_id}",
        event_id=event.event_id,
        performer=pathway.performer.value,
        receiver=receiver.sor,
        category=pathway.category,
        risk_group=risk.group.value,
        elements=event.referral.rehab_elements,
        closing_place=pathway.closing_conversation.value,
        ambulatory_control=pathway.ambulatory_control,
        municipality_code=event.patient.municipality_code if municipal else "",
    )


def decide(event: DischargeEvent, pathway: Pathway | None, ctx: ReferralContext) -> Decided:
    """The event's own decision (raises ConfigurationError when the receiver is not in our mappings)."""
    risk = stratify(event.risk_criteria, event.clinician_risk_group, ctx.rules.risk_policy)
    pathway = pathway if pathway is not None else choose_pathway(event, risk)
    if pathway is None:
        return Decided(event, risk, None)
    receiver, route = _receiver_and_route(event, pathway, ctx)
    return Decided(event, risk, pathway, receiver, route, _sent_referral(event, risk, pathway, receiver))


def _pathway_of(sent: SentReferral) -> Pathway:
    """The pathway a referral in force stated (for its cancellation)."""
    return Pathway(
        performer=Setting(sent.performer),
        category=sent.category,
        closing_conversation=Setting(sent.closing_place),
        ambulatory_control=sent.ambulatory_control,
        decision_overridden=False,
    )


def _route_to(sent: SentReferral, ctx: ReferralContext) -> Route:
    routing = ctx.routing
    if sent.performer == Setting.HOSPITAL.value:
        return Route(routing.exchange, routing.hospital_key.format(sor=sent.receiver))
    return Route(routing.exchange, routing.municipality_key.format(code=sent.municipality_code))


def _receiver_of(sent: SentReferral, ctx: ReferralContext) -> Organisation:
    if sent.performer == Setting.MUNICIPALITY.value:
        return ctx.directory.municipal_receiver(sent.municipality_code)
    department = ctx.directory.departments.get(sent.receiver)
    if department is None:  # the unit was in the mappings when the referral was sent
        return Organisation(sent.receiver, None, sent.receiver)
    return department.organisation


def build_referral_message(
    event: DischargeEvent,
    risk: RiskAssessment,
    pathway: Pathway,
    receiver: Organisation,
    ctx: ReferralContext,
    now: datetime,
    action: Action | None = None,
) -> dict[str, Any]:
    """One referral message for `event`: by default its own new referral; `action` a cancellation, an update
    or a new referral that replaces or follows another (ids seeded by the event and the action's event, so
    that the cancellation and the new referral of one event never share an id)."""
    terms, rules = ctx.terminology, ctx.rules
    seed = event.event_id if action is None or action.event != "cancel" else f"{event.event_id}/cancel"
    ids = partial(derived_id, seed)
    sender = messaging_organization(event.hospital, terms)
    receiver_org = messaging_organization(receiver, terms)
    gp = event.patient.gp
    # A GP's own referral: the clinic that sends it is the patient's GP, named once (one resource per SOR).
    referred_by_gp = gp is not None and gp.sor == event.hospital.sor
    gp_org = gp_organization(gp.sor, gp.ydernummer, terms) if gp and not referred_by_gp else None
    patient = patient_resource(event.patient, ids("Patient"), sender if referred_by_gp else gp_org, terms)
    test = event.exercise_test
    observation = exercise_test_observation(ids("Observation"), test, patient, sender, terms) if test else None
    assessment = risk_assessment(ids("RiskAssessment"), risk, event, patient, sender, observation, rules, terms)
    supporting = [assessment] + ([observation] if observation else [])
    cancelled = action is not None and action.event == "cancel"
    notes = (
        cancellation_notes(action.because, rules)
        if cancelled and action
        else referral_notes(event, risk, pathway, rules)
    )
    request = service_request(
        ids("ServiceRequest"),
        event,
        pathway,
        notes,
        patient,
        sender,
        receiver_org,
        supporting,
        rules,
        terms,
        **_request_options(action),
    )
    content = [patient, *supporting] + ([gp_org] if gp_org else [])
    kind = action.event if action else "new"
    return referral_message(ids, request, content, sender, receiver_org, now, terms, event=kind)


def _request_options(action: Action | None) -> dict[str, Any]:
    if action is None:
        return {}
    if action.event == "cancel":  # the referral as it was sent, withdrawn
        return {"status": "revoked", "identifier": action.sent.service_request}
    return {"replaces": action.replaces, "based_on": action.based_on}


def _message(decided: Decided, action: Action, ctx: ReferralContext, now: datetime) -> tuple[Outgoing, AuditFact]:
    """The message for one action, through the gate, and the audit fact that says what it was."""
    event, sent = decided.event, action.sent
    if action.event == "cancel":  # said as the referral in force said it: its receiver, pathway and elements
        event = replace(event, referral=replace(event.referral, rehab_elements=sent.elements))
        pathway, receiver, route = _pathway_of(sent), _receiver_of(sent, ctx), _route_to(sent, ctx)
    else:
        assert decided.pathway and decided.receiver and decided.route
        pathway, receiver, route = decided.pathway, decided.receiver, decided.route
    bundle = build_referral_message(event, decided.risk, pathway, receiver, ctx, now, action)
    ctx.validate(bundle)
    fact = AuditFact(
        FACT_BY_ACTION[action.event],
        {
            "eventId": decided.event.event_id,
            "messageHeaderId": bundle["entry"][0]["resource"]["id"],
            "bundleId": bundle["id"],
            "category": sent.category,
            "riskGroup": sent.risk_group,
            "receiverSor": sent.receiver,
            "routingKey": route.routing_key,
            **({"replaces": action.replaces} if action.replaces else {}),
            **({"basedOn": action.based_on} if action.based_on else {}),
            **({"cancels": sent.service_request} if action.event == "cancel" else {}),
        },
    )
    return Outgoing(route, bundle, expects_ack=True), fact


FACT_BY_ACTION: Mapping[str, str] = MappingProxyType(
    {"new": "referral-built", "update": "referral-updated", "cancel": "referral-cancelled"}
)


def _actions(
    change: Change, in_force: SentReferral | None, proposal: SentReferral | None, because: str = "none"
) -> tuple[Action, ...]:
    """The messages a change of the referral in force takes (decision 18): an update replaces it at the same
    receiver; a new receiver gets a new referral that replaces it, after the old one's cancellation; a
    cancellation says why (`because`, a key of `referral_rules.CANCELLED_BECAUSE`)."""
    if change is Change.NEW and proposal:
        return (Action("new", proposal),)
    if change is Change.UPDATE and proposal and in_force:
        return (Action("update", proposal, replaces=in_force.service_request),)
    if change is Change.RE_ROUTE and proposal and in_force:
        return (
            Action("cancel", in_force, because="re-route"),
            Action("new", proposal, replaces=in_force.service_request),
        )
    if change is Change.CANCEL and in_force:
        return (Action("cancel", in_force, because=because),)
    return ()


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


def _decision_facts(decided: Decided) -> list[AuditFact]:
    event, pathway = decided.event, decided.pathway
    facts = _risk_facts(event, decided.risk)
    if pathway is None:
        facts.append(AuditFact("no-referral", {"eventId": event.event_id, "riskGroup": decided.risk.group.value}))
    elif pathway.decision_overridden:
        detail = {
            "eventId": event.event_id,
            "decision": event.referral.decision,
            "riskGroup": decided.risk.group.value,
            "performer": pathway.performer.value,
        }
        facts.append(AuditFact("pathway-overridden", detail))
    return facts


def _stage_for(referral: SentReferral | None) -> Stage:
    if referral is None:
        return Stage.NOT_REFERRED
    return Stage.SPECIALISED if referral.performer == Setting.HOSPITAL.value else Stage.MUNICIPAL


def _result(
    decided: Decided,
    actions: tuple[Action, ...],
    course: Course | None,
    ctx: ReferralContext,
    now: datetime,
    facts: list[AuditFact],
) -> FlowResult:
    built = [_message(decided, action, ctx, now) for action in actions]
    number = decided.event.patient.cpr
    courses = (course,) if course is not None else ()  # filed under the number's key (decision 18)
    return FlowResult(
        outgoing=tuple(outgoing for outgoing, _ in built),
        facts=(*facts, *(fact for _, fact in built), *_stage_fact(decided.event, course), *_suggested(decided, ctx)),
        patient=number.key,
        state=StateChanges(courses=courses),
    )


def _suggested(decided: Decided, ctx: ReferralContext) -> tuple[AuditFact, ...]:
    """The `dcs-suggested` fact: the DCS criteria the event's codes suggest (mappings/dcs-suggestions.yaml) beside
    the clinician's, when any is suggested. Audited only: the risk group and the pathway were decided from the
    clinician's criteria alone (`decide`), and no message reads it."""
    event = decided.event
    found = suggest(event.diagnoses, event.procedures, ctx.dcs_suggestions)
    if not found:
        return ()
    seen = compare_criteria(found, event.risk_criteria)
    detail = {
        "eventId": event.event_id,
        "suggested": [{"criterion": s.criterion, "codes": list(s.codes)} for s in seen.suggestions],
        "clinicianCriteria": list(seen.clinician),
        "notTicked": list(seen.not_ticked),
        "tickedWithoutCode": list(seen.without_code),
        "riskGroup": decided.risk.group.value,
    }
    return (AuditFact("dcs-suggested", detail),)


def _stage_fact(event: DischargeEvent, course: Course | None) -> tuple[AuditFact, ...]:
    if course is None:
        return ()
    return (course_stage(course, eventId=event.event_id),)


def _opened(event: DischargeEvent, decided: Decided) -> Course:
    """The course a discharge opens: waiting for the visitation talk, or with the referral it sent."""
    referral = decided.proposal
    return Course(
        event.patient.cpr.key,
        event.hospital.sor,
        event.patient.municipality_code,
        True,
        Responsible.HOSPITAL,
        stage=Stage.AWAITING_VISITATION if referral is None else _stage_for(referral),
        referral=referral,
        discharge_event=event.event_id,
        discharged_at=event.discharged_at,
        heart_failure=has_heart_failure(event),
        episode=event.episode,
    )


def handle_discharge(
    event: DischargeEvent, ctx: ReferralContext, now: datetime, course: Course | None = None
) -> FlowResult:
    """A discharge: stratified, referred at once or not yet; it opens the patient's course. A readmission while a
    referral is in force changes that referral as a visitation would (never a second one), or keeps it until
    the visitation talk when it decides nothing yet. Raises OutOfOrder when it comes from before the end of the
    patient's last course."""
    ctx.directory.municipality(event.patient.municipality_code)  # an unknown code is invalid input on every path
    admit_discharge(course, event.discharged_at)
    decided = decide(event, None, ctx)
    facts = _decision_facts(decided)
    if course is not None and course.current in REFERRAL_IN_FORCE and course.referral is not None:
        return _readmission(decided, course, ctx, now, facts)
    if course is not None and course.current.open:
        facts.append(AuditFact("course-superseded", {"eventId": event.event_id, "stage": course.current.value}))
    actions = (Action("new", decided.proposal),) if decided.proposal else ()
    return _result(decided, actions, _opened(event, decided), ctx, now, facts)


def _readmission(
    decided: Decided, course: Course, ctx: ReferralContext, now: datetime, facts: list[AuditFact]
) -> FlowResult:
    """A discharge that meets a referral in force (a readmission during the course, or a hospital stay during a
    course the GP referred): the referral in force is updated, re-routed or kept — never doubled; the hospital's
    pathway holds the patient from now on. `none` keeps it until the visitation talk decides (no cancellation
    at discharge: the agreement lets the visitation decide)."""
    event, in_force = decided.event, course.referral
    assert in_force is not None
    change = compare(in_force, decided.proposal) if decided.proposal else Change.UNCHANGED
    facts.append(AuditFact("readmission", {"eventId": event.event_id, "change": change.value}))
    referral = decided.proposal if change is not Change.UNCHANGED else in_force
    after = replace(
        _opened(event, decided),
        stage=_stage_for(referral),
        referral=referral,
        specialised_referral=None,  # a new hospital episode: its visitation may follow
    )
    return _result(decided, _actions(change, in_force, decided.proposal), after, ctx, now, facts)


def _superseded_visitation(event: DischargeEvent) -> FlowResult:
    """A visitation talk older than the one that last decided the referral, arriving after it (with competing
    consumers they may be taken in either order): it decides nothing and sends nothing; audited (decision 31)."""
    fact = AuditFact("visitation-superseded", {"eventId": event.event_id, "occurredAt": event.occurred_at.isoformat()})
    return FlowResult(outgoing=(), facts=(fact,), patient=event.patient.cpr.key)


def handle_visitation(event: DischargeEvent, course: Course | None, ctx: ReferralContext, now: datetime) -> FlowResult:
    """The visitation talk: refers a patient not yet referred, or changes the referral in force (an update, a
    cancellation and a new referral, a cancellation), or changes nothing (audited, nothing sent). Raises
    OutOfOrder when no discharge is known for the patient, or the course is past its visitation."""
    ctx.directory.municipality(event.patient.municipality_code)
    known = admit_visitation(course, event.occurred_at)
    if known.decided_at is not None and event.occurred_at < known.decided_at:
        return _superseded_visitation(event)
    decided = decide(event, None, ctx)
    facts = _decision_facts(decided)
    change = compare(known.referral, decided.proposal)
    facts.append(AuditFact("visitation", {"eventId": event.event_id, "change": change.value}))
    if change is Change.UNCHANGED:  # nothing sent, but it is now the last decision
        unchanged = _result(decided, (), None, ctx, now, facts)
        return replace(unchanged, state=StateChanges(courses=(replace(known, decided_at=event.occurred_at),)))
    referral = decided.proposal
    after = replace(
        known,
        decided_at=event.occurred_at,
        stage=_stage_for(referral),
        referral=referral,
        open=referral is not None,
        responsible=Responsible.HOSPITAL if referral is not None else Responsible.GP,
        municipality_code=event.patient.municipality_code,
        heart_failure=known.heart_failure or has_heart_failure(event),
        closed_on=None if referral is not None else event.occurred_at.date(),
        municipal_status=False,  # a new referral in force: what came for the old one does not count
        hospital_done=False,
    )
    return _result(decided, _actions(change, known.referral, referral), after, ctx, now, facts)


def handle_discharge_update(
    event: DischargeEvent, course: Course | None, ctx: ReferralContext, now: datetime
) -> FlowResult:
    """A discharge changed after it was sent (HL7 v2 ADT^A08; eventType `discharge-update`): decided again as
    the discharge it now is, against the referral that discharge sent, as a visitation would (an update to the
    same receiver, a cancellation and a new referral, nothing when nothing changed); a corrected discharge that
    refers no one yet cancels the referral and leaves the course to its visitation talk. Raises OutOfOrder
    (`episodeOfCare`) when no course of the patient is for that episode, ReferralSettled (`eventType`) when its
    referral can no longer change (`course_sequence.admit_discharge_update`)."""
    ctx.directory.municipality(event.patient.municipality_code)
    known = admit_discharge_update(course, event.episode)
    decided = decide(event, None, ctx)
    facts = _decision_facts(decided)
    in_force = known.referral if known.current in REFERRAL_IN_FORCE else None
    change = compare(in_force, decided.proposal)
    facts.append(
        AuditFact("discharge-updated", {"eventId": event.event_id, "episode": known.episode, "change": change.value})
    )
    if change is Change.UNCHANGED:
        return _result(decided, (), None, ctx, now, facts)
    referral = decided.proposal
    after = replace(
        known,
        stage=Stage.AWAITING_VISITATION if referral is None else _stage_for(referral),
        referral=referral,
        referring_department=event.hospital.sor,
        municipality_code=event.patient.municipality_code,
        discharge_event=event.event_id,  # the discharge as it now stands: a later update is checked against it
        discharged_at=event.discharged_at,
        heart_failure=has_heart_failure(event),
    )
    actions = _actions(change, in_force, referral, because="deferred")
    return _result(decided, actions, after, ctx, now, facts)


def handle_discharge_cancellation(
    cancel: DischargeCancellation, course: Course | None, ctx: ReferralContext, now: datetime
) -> FlowResult:
    """The hospital withdrew a discharge (HL7 v2 ADT^A13) or the admission (ADT^A11): the course of that
    episode closes as cancelled (the GP responsible), and a referral it has in force is cancelled at its
    receiver (ServiceRequest `revoked`, event `cancel-referral`). No course for the episode (another episode's,
    none, or one past where a cancellation changes anything): nothing is sent, `nothing-to-cancel` audited — a
    withdrawn discharge we never referred is normal. Raises InvalidInput (`patient`) when a referral must be
    cancelled but the cancellation does not name the patient (`person`: the message's Patient needs a name),
    ConfigurationError when the department that referred is no longer in mappings/departments.yaml."""
    known = cancellable(course, cancel.episode)
    detail = {"eventId": cancel.event_id, "episode": cancel.episode, "trigger": cancel.trigger}
    if known is None:
        stage = {"stage": course.current.value} if course is not None and course.episode == cancel.episode else {}
        fact = AuditFact("nothing-to-cancel", {**detail, **stage})
        return FlowResult(outgoing=(), facts=(fact,), patient=cancel.patient.key)
    in_force = known.referral if known.current in REFERRAL_IN_FORCE else None
    after = replace(
        known,
        stage=Stage.CANCELLED,
        open=False,
        responsible=Responsible.GP,
        referral=None,
        closed_on=cancel.occurred_at.date(),
    )
    fact = AuditFact("discharge-cancelled", {**detail, "cancels": in_force.service_request if in_force else None})
    if in_force is None:
        changes = StateChanges(courses=(after,))
        stage_fact = course_stage(after, eventId=cancel.event_id)
        return FlowResult(outgoing=(), facts=(fact, stage_fact), patient=cancel.patient.key, state=changes)
    event = _cancelling_event(cancel, known, in_force, ctx)
    risk = RiskAssessment(RiskGroup(in_force.risk_group), (), None)
    decided = Decided(event, risk, None)
    return _result(decided, (Action("cancel", in_force, because="withdrawn"),), after, ctx, now, [fact])


_DECISION_OF = {Setting.HOSPITAL.value: "hospital", Setting.MUNICIPALITY.value: "municipal"}


def _cancelling_event(
    cancel: DischargeCancellation, course: Course, sent: SentReferral, ctx: ReferralContext
) -> DischargeEvent:
    """The event a cancellation's message is built from: the patient as the cancellation names them, the
    department that referred as sender, and the referral as it was sent (its elements, its risk group dated
    at the discharge); no diagnoses (the message names the ServiceRequest it cancels)."""
    person = replace(_named_patient(cancel.person), cpr=cancel.patient)
    sender = _department(course.referring_department or cancel.hospital_sor, ctx)
    discharged = course.discharged_at or cancel.occurred_at
    request = ReferralRequest(_DECISION_OF[sent.performer], True, sent.elements, sent.ambulatory_control, False, None)
    return DischargeEvent(
        event_id=cancel.event_id,
        event_type="discharge-cancellation",
        occurred_at=cancel.occurred_at,
        hospital=sender,
        patient=replace(person, municipality_code=sent.municipality_code or person.municipality_code),
        admitted_at=discharged,
        discharged_at=discharged,
        diagnoses=(),
        surgery=None,
        risk_criteria=(),
        clinician_risk_group=None,
        exercise_test=None,
        referral=request,
        episode=cancel.episode,
    )


def _named_patient(person: Patient | None) -> Patient:
    if person is None or not person.family_name:
        raise InvalidInput(
            "patient",
            "the cancellation of a referral sent must name the patient (HL7 v2 PID-5): the cancellation message's "
            "Patient needs a name (medcom-core-patient)",
        )
    return person


def _department(sor: str, ctx: ReferralContext) -> Organisation:
    department = ctx.directory.departments.get(sor)
    if department is None:
        raise ConfigurationError(
            f"the department with SOR {sor} that sent the referral is not in mappings/departments.yaml: its "
            "cancellation cannot name its sender"
        )
    return department.organisation


def handle_step_down(event: DischargeEvent, course: Course | None, ctx: ReferralContext, now: datetime) -> FlowResult:
    """From specialised rehabilitation at the hospital to the municipality: a municipal referral that follows
    (basedOn) the specialised one; the hospital keeps the medical responsibility during the municipal course.
    Raises OutOfOrder when the patient has no specialised course running."""
    ctx.directory.municipality(event.patient.municipality_code)
    specialised = admit_step_down(course)
    assert specialised.referral is not None
    decided = decide(event, municipal_pathway(event.referral), ctx)
    assert decided.proposal is not None
    action = Action("new", decided.proposal, based_on=specialised.referral.service_request)
    after = replace(
        specialised,
        stage=Stage.MUNICIPAL,
        referral=decided.proposal,
        specialised_referral=specialised.referral.service_request,
        municipality_code=event.patient.municipality_code,
        municipal_status=False,
        hospital_done=False,
    )
    return _result(decided, (action,), after, ctx, now, _risk_facts(event, decided.risk))


def handle_gp_referral(event: DischargeEvent, course: Course | None, ctx: ReferralContext, now: datetime) -> FlowResult:
    """A GP's referral to municipal rehabilitation: the GP is the responsible clinician of the course it opens;
    a second one from the GP changes the GP's running course (an update, or nothing when nothing changed).
    Raises ConflictsWithCourse while the hospital's pathway holds the patient, InvalidInput (riskCriteria) for
    a high-risk patient, whom the agreement starts in specialised rehabilitation at the hospital,
    ConfigurationError for a clinic not in mappings/gp-clinics.yaml."""
    ctx.directory.municipality(event.patient.municipality_code)
    admit_gp_referral(course)
    event = with_clinic(event, ctx)
    decided = decide(event, municipal_pathway(event.referral), ctx)
    if decided.risk.group is RiskGroup.HIGH:
        raise _high_risk_gp_referral()
    assert decided.proposal is not None and event.patient.gp is not None
    opened = Course(
        event.patient.cpr.key,
        "",
        event.patient.municipality_code,
        True,
        Responsible.GP,
        stage=Stage.MUNICIPAL,
        referral=decided.proposal,
        referrer=Referrer.GP,
        gp=event.patient.gp.ydernummer,
    )
    facts = _risk_facts(event, decided.risk)
    in_force = course.referral if course is not None and course.current.open else None  # the GP's own
    change = compare(in_force, decided.proposal)
    if in_force is not None:
        facts.append(AuditFact("gp-referral-changed", {"eventId": event.event_id, "change": change.value}))
    after = None if change is Change.UNCHANGED else opened
    return _result(decided, _actions(change, in_force, decided.proposal), after, ctx, now, facts)


def with_clinic(event: DischargeEvent, ctx: ReferralContext) -> DischargeEvent:
    """A GP's referral sent from the clinic as our mappings know it (its EAN: a MedCom sender needs one; and the
    course's closing status goes back to that clinic). Raises ConfigurationError naming the ydernummer when
    mappings/gp-clinics.yaml does not list the clinic under the referral's SOR."""
    gp = event.patient.gp
    if gp is None:
        raise ConfigurationError("a GP's referral names no GP clinic: mappings/gp-clinics.yaml cannot give its EAN")
    clinic = gp_clinic(ctx.gp_clinics, gp.ydernummer)
    if clinic.sor != event.hospital.sor:
        raise ConfigurationError(
            f"GP clinic with ydernummer {gp.ydernummer} has SOR {clinic.sor} in mappings/gp-clinics.yaml, not the "
            "referral's SOR"
        )
    return replace(event, hospital=clinic)


def _high_risk_gp_referral() -> InvalidInput:
    return InvalidInput(
        "riskCriteria",
        "high risk: the agreement starts high-risk patients in specialised rehabilitation at the hospital; "
        "refer through the hospital",
    )


HANDLERS: Mapping[str, Callable[[DischargeEvent, Course | None, ReferralContext, datetime], FlowResult]] = (
    MappingProxyType(
        {
            "discharge": lambda event, course, ctx, now: handle_discharge(event, ctx, now, course),
            "visitation": handle_visitation,
            "step-down": handle_step_down,
            "gp-referral": handle_gp_referral,
            "discharge-update": handle_discharge_update,
        }
    )
)


def handle_referral_event(
    event: DischargeEvent, course: Course | None, ctx: ReferralContext, now: datetime
) -> FlowResult:
    """Any referral event, by its type (a key of HANDLERS), against the patient's course (None: none known),
    filed under the patient's number: a CPR number, or a replacement number as `system|value` (decision 18).
    A hospital's event also settles a watched discharge home it belongs to (`StateChanges.discharges`)."""
    result = HANDLERS[event.event_type](event, course, ctx, now)
    if event.event_type == "gp-referral":
        return result
    seen = DischargeSeen(event.event_id, event.patient.cpr.key, event.hospital.sor, event.episode, event.discharged_at)
    return result.plus((), (), StateChanges(discharges=(seen,)))
