"""The hotline flow: an advice request → the department's inbox or on-call, or triage, and an automatic reply."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from integration.conformance.validation import validate_message
from integration.domain.course import Course, OpenRequest, State, StateChanges
from integration.domain.directory import Department
from integration.domain.hotline import AdviceRequest, Decision, Hotline, OnCall, Outcome, route
from integration.domain.identifiers import is_replacement_key
from integration.errors import BuildError, InvalidInput
from integration.fhir.ids import derived_id
from integration.fhir.terminology import Terminology
from integration.flows.results import FHIR_JSON, AuditFact, FlowResult, Outgoing, Route
from integration.formats.json_contract import JsonContract
from integration.messages.care_communication import forward_message, reply_message
from integration.messages.envelope import messaging_organization

JSON = "application/json"
REPLY_KIND = {
    Outcome.ACUTE_TO_ON_CALL: "on-call",
    Outcome.ACUTE_TO_TRIAGE: "on-call",
    Outcome.TO_DEPARTMENT_AFTER_HOURS: "after-hours",
    Outcome.RESPONSIBILITY_WITH_GP: "responsibility-with-gp",
    Outcome.TO_GP: "to-gp",
    Outcome.ACUTE_TO_GP: "on-call",
}
# The reply text of each outcome that has one (`replies` in mappings/hotlines.yaml).
REPLY_TEXT = {
    Outcome.ACUTE_TO_ON_CALL: "onCall",
    Outcome.ACUTE_TO_TRIAGE: "acuteToTriage",
    Outcome.ACUTE_TO_GP: "acuteToGp",
    Outcome.TO_DEPARTMENT_AFTER_HOURS: "afterHours",
    Outcome.RESPONSIBILITY_WITH_GP: "responsibilityWithGp",
    Outcome.TO_GP: "toGp",
}


@dataclass(frozen=True, slots=True)
class HotlineContext:
    hotlines: Mapping[str, Hotline]
    timezone: ZoneInfo
    replies: Mapping[str, str]  # onCall, acuteToTriage, afterHours, responsibilityWithGp
    exchange: str
    queue_key: str  # template with {queue}
    reply_key: str  # template with {sender}
    reply_contract: JsonContract
    triage_phone: str
    terminology: Terminology
    regional_on_call: OnCall  # whom an acute request routed to triage is told to ring
    # mappings/departments.yaml by SOR: where a copy goes while the patient is admitted (`copies_to_admitting`)
    departments: Mapping[str, Department] = field(default_factory=dict)


def _on_call(decision: Decision, ctx: HotlineContext) -> OnCall | None:
    """Whom an acute request's sender should ring: the department's on-call, else the region's."""
    if decision.outcome is Outcome.ACUTE_TO_ON_CALL and decision.department:
        return OnCall(decision.department.on_call_name, decision.department.on_call_phone)
    return ctx.regional_on_call if decision.outcome in (Outcome.ACUTE_TO_TRIAGE, Outcome.ACUTE_TO_GP) else None


def _reply_text(decision: Decision, ctx: HotlineContext) -> str:
    text = ctx.replies[REPLY_TEXT[decision.outcome]]
    hotline, on_call = decision.department, _on_call(decision, ctx)
    if on_call is not None:
        return text.format(name=on_call.name, phone=on_call.phone)
    if decision.outcome is Outcome.TO_DEPARTMENT_AFTER_HOURS and hotline and decision.answer_from:
        return text.format(department=hotline.name, answer_from=decision.answer_from.strftime("%d-%m-%Y kl. %H:%M"))
    return text


def json_reply(request: AdviceRequest, decision: Decision, ctx: HotlineContext, now: datetime) -> dict[str, Any]:
    recipient = "ydernummer" if len(request.sender_id) == 6 else "sor"  # SOR ids have 11 digits or more
    reply: dict[str, Any] = {
        "schemaVersion": "1",
        "replyId": derived_id(request.request_id, "reply"),
        "inReplyTo": request.request_id,
        "recipient": {recipient: request.sender_id},
        "kind": REPLY_KIND[decision.outcome],
        "text": _reply_text(decision, ctx),
        "sentAt": now.isoformat(timespec="seconds"),
    }
    if decision.department:
        reply["department"] = decision.department.department
    if on_call := _on_call(decision, ctx):
        reply["onCall"] = {"name": on_call.name, "phone": on_call.phone}
    if decision.answer_from:
        reply["answerFrom"] = decision.answer_from.isoformat(timespec="minutes")
    try:
        ctx.reply_contract.check(reply)
    except InvalidInput as exc:
        raise BuildError(f"automatic reply is invalid: {exc}") from None
    return reply


def handle_advice_request(
    request: AdviceRequest, document: dict[str, Any], course: Course | None, ctx: HotlineContext, now: datetime
) -> FlowResult:
    """Route the request (forwarded unchanged) and, where the agreement's rules call for one, reply."""
    course = _course_of(request, lambda _: course)
    decision = route(request, course, ctx.hotlines, now.astimezone(ctx.timezone))
    outgoing = [
        Outgoing(Route(ctx.exchange, ctx.queue_key.format(queue=decision.queue)), document, request.request_id, JSON)
    ]
    if decision.replies:
        reply = json_reply(request, decision, ctx, now)
        outgoing.append(
            Outgoing(Route(ctx.exchange, ctx.reply_key.format(sender=request.sender_id)), reply, reply["replyId"], JSON)
        )
    copy = copies_to_admitting(request, decision, course, ctx, lambda _: document, JSON)
    return FlowResult(
        outgoing=(*outgoing, *copy.outgoing),
        facts=(_routed(request, decision, course), *copy.facts),
        patient=request.patient,
        state=_opened(request, decision),
    )


def _opened(request: AdviceRequest, decision: Decision) -> StateChanges:
    department = decision.department.department if decision.department else None
    return StateChanges(
        opened=(OpenRequest(request.request_id, request.thread_id, request.sender_id, department, request.patient),)
    )


def _department_answer(request: AdviceRequest, bundle: dict[str, Any], state: State, ctx: HotlineContext) -> FlowResult:
    """A department's reply in a request's thread goes back to whoever asked; an unknown thread to triage."""
    requester = state.requester(request.thread_id) if request.thread_id else None
    key = ctx.reply_key.format(sender=requester) if requester else ctx.queue_key.format(queue="unmatched")
    fact = AuditFact(
        "hotline-answered" if requester else "hotline-answer-unmatched",
        {"thread": request.thread_id, "department": request.sender_id, "requester": requester},
    )
    answered = (request.thread_id,) if requester and request.thread_id else ()
    return FlowResult(
        outgoing=(Outgoing(Route(ctx.exchange, key), bundle, request.request_id),),
        facts=(fact,),
        patient=request.patient,
        state=StateChanges(answered=answered),
    )


def handle_care_communication(
    request: AdviceRequest, bundle: dict[str, Any], state: State, ctx: HotlineContext, now: datetime
) -> FlowResult:
    """Route a CareCommunication (forwarded unchanged); where a reply is due, it is a MedCom reply-message.

    One sent by a hotline department is its answer to a request, and goes back to the requester by thread.
    """
    if request.sender_id in ctx.hotlines:
        return _department_answer(request, bundle, state, ctx)
    course = _course_of(request, state.course)
    decision = route(request, course, ctx.hotlines, now.astimezone(ctx.timezone))
    outgoing = [Outgoing(Route(ctx.exchange, ctx.queue_key.format(queue=decision.queue)), bundle, request.request_id)]
    if decision.replies:
        on_call, desk = _on_call(decision, ctx), decision.department
        phone = on_call.phone if on_call else desk.on_call_phone if desk else ctx.triage_phone
        reply = reply_message(bundle, _reply_text(decision, ctx), phone, now, ctx.terminology)
        validate_message(reply)
        route_back = Route(ctx.exchange, ctx.reply_key.format(sender=request.sender_id))
        outgoing.append(Outgoing(route_back, reply, expects_ack=True))
    phone = decision.department.on_call_phone if decision.department else ctx.triage_phone
    forward = partial(_forwarded, bundle, ctx, phone, now)
    copy = copies_to_admitting(request, decision, course, ctx, forward, expects_ack=True)
    return FlowResult(
        outgoing=(*outgoing, *copy.outgoing),
        facts=(_routed(request, decision, course), *copy.facts),
        patient=request.patient,
        state=_opened(request, decision),
    )


@dataclass(frozen=True, slots=True)
class Copies:
    outgoing: tuple[Outgoing, ...] = ()
    facts: tuple[AuditFact, ...] = ()


def copies_to_admitting(
    request: AdviceRequest,
    decision: Decision,
    course: Course | None,
    ctx: HotlineContext,
    copy_for: Callable[[Department], dict[str, Any]],
    content_type: str | None = None,
    *,
    expects_ack: bool = False,
) -> Copies:
    """While the patient's course is paused by an admission (`Course.paused`, a HospitalNotification STIN/STAA),
    a copy of the request (`copy_for` the admitting department) goes to that department's inbox
    (`department.<SOR>`), beside the original routed as always (issue #15: "a hotline request meanwhile goes to
    the admitting department too"). No copy when the original already goes there. An admitting unit that
    mappings/departments.yaml does not know gets no copy; the `hotline-copy-not-sent` fact names the unit."""
    unit = course.admitted_to if course is not None and course.paused else None
    if unit is None or decision.queue.endswith(f".{unit}"):
        return Copies()
    department = ctx.departments.get(unit)
    if department is None:
        why = "the admitting unit is not in mappings/departments.yaml"
        return Copies(
            facts=(AuditFact("hotline-copy-not-sent", {"requestId": request.request_id, "unit": unit, "why": why}),)
        )
    message = copy_for(department)
    message_id = derived_id(request.request_id, f"copy/{unit}") if content_type == JSON else None
    copy = Outgoing(
        Route(ctx.exchange, ctx.queue_key.format(queue=f"department.{unit}")),
        message,
        message_id,
        content_type or FHIR_JSON,
        expects_ack=expects_ack,
    )
    fact = AuditFact(
        "hotline-copied",
        {"requestId": request.request_id, "unit": unit, "messageId": copy.id, "admittedSince": _since(course)},
    )
    return Copies((copy,), (fact,))


def _since(course: Course | None) -> str | None:
    return course.admitted_since.isoformat() if course is not None and course.admitted_since else None


def _forwarded(
    bundle: dict[str, Any], ctx: HotlineContext, phone: str, now: datetime, department: Department
) -> dict[str, Any]:
    """The CareCommunication forwarded to the admitting department: a MedCom message of its own, checked."""
    receiver = messaging_organization(department.organisation, ctx.terminology)
    message = forward_message(bundle, receiver, ctx.replies["copyToAdmitting"], phone, now, ctx.terminology)
    validate_message(message)
    return message


def _course_of(request: AdviceRequest, course: Callable[[str], Course | None]) -> Course | None:
    """The patient's course, by the number the request names it by: a CPR number, or a replacement number as
    `system|value`, under which the pathway files it too (decision 18)."""
    return course(request.patient)


def _routed(request: AdviceRequest, decision: Decision, course: Course | None) -> AuditFact:
    return AuditFact(
        "hotline-routed",
        {
            "requestId": request.request_id,
            "outcome": decision.outcome.value,
            "queue": decision.queue,
            "sender": request.sender_id,
            "senderKind": request.sender_kind.value,
            "acute": request.acute,
            "thread": request.thread_id,
            "answerFrom": decision.answer_from.isoformat() if decision.answer_from else None,
            "courseOpen": course.open if course else None,
            # how the patient is named; the number itself is the audit record's patient, never a detail
            "patientIdentifier": "replacement-cpr" if is_replacement_key(request.patient) else "cpr",
        },
    )
