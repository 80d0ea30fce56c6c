"""The pure transform: inbound bytes → message kind → parser → flow → outgoing messages and audit facts.

Dispatch is a table of kinds; each later flow adds one row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from lxml import etree

from integration.domain.course import NO_STATE, State
from integration.errors import InvalidInput, Rejected, UnknownMessageKind
from integration.flows.acknowledging import Acknowledger, is_acknowledgement, is_medcom_message
from integration.flows.acks_received import handle_acknowledgement
from integration.flows.closing import ClosingContext, handle_closing_report
from integration.flows.hotline import HotlineContext, handle_advice_request, handle_care_communication
from integration.flows.referral import ReferralContext, handle_discharge
from integration.flows.results import FlowResult
from integration.formats.advice_request import parse_advice_request
from integration.formats.care_communication import is_care_communication, parse_care_communication, read_xml_bundle
from integration.formats.closing_report import NS as CLOSING_REPORT_NS
from integration.formats.closing_report import parse_closing_report
from integration.formats.discharge_event import parse_discharge_event
from integration.formats.json_contract import JsonContract, RefusedContent, decode_json
from integration.formats.safe_xml import parse_xml
from integration.formats.syntax import Syntax, sniff


@dataclass(frozen=True, slots=True)
class Pipeline:
    """Everything the flows need, built once by bootstrap."""

    discharge_contract: JsonContract
    referral: ReferralContext
    max_payload_bytes: int
    advice_contract: JsonContract
    hotline: HotlineContext
    municipality_sors: frozenset[str]
    closing_schema: etree.XMLSchema
    closing: ClosingContext
    acknowledger: Acknowledger


@dataclass(frozen=True, slots=True)
class MessageKind:
    name: str
    matches: Callable[[Any], bool]
    handle: Callable[[Any, Pipeline, datetime, State], FlowResult]


def _is_discharge_event(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("eventType") in ("discharge", "visitation")


def _handle_discharge_event(doc: Any, pipeline: Pipeline, now: datetime, _state: State) -> FlowResult:
    return handle_discharge(
        parse_discharge_event(doc, pipeline.discharge_contract, received_at=now), pipeline.referral, now
    )


def _is_advice_request(doc: Any) -> bool:
    return isinstance(doc, dict) and "requestId" in doc and "urgency" in doc


def _handle_advice_request(doc: Any, pipeline: Pipeline, now: datetime, state: State) -> FlowResult:
    request = parse_advice_request(doc, pipeline.advice_contract, pipeline.municipality_sors, received_at=now)
    return handle_advice_request(request, doc, state.course(request.patient), pipeline.hotline, now)


def _handle_care_communication(doc: Any, pipeline: Pipeline, now: datetime, state: State) -> FlowResult:
    request = parse_care_communication(doc, pipeline.municipality_sors, received_at=now)
    return handle_care_communication(request, doc, state, pipeline.hotline, now)


def _handle_acknowledgement(doc: Any, _pipeline: Pipeline, _now: datetime, state: State) -> FlowResult:
    return handle_acknowledgement(doc, state)


KINDS: tuple[MessageKind, ...] = (
    MessageKind("discharge-event", _is_discharge_event, _handle_discharge_event),
    MessageKind("advice-request", _is_advice_request, _handle_advice_request),
    MessageKind("care-communication", is_care_communication, _handle_care_communication),
    MessageKind("acknowledgement", is_acknowledgement, _handle_acknowledgement),
)


def detect_kind(doc: Any, accepted: tuple[str, ...] | None = None) -> MessageKind:
    for kind in KINDS:
        if kind.matches(doc) and (accepted is None or kind.name in accepted):
            return kind
    if accepted is not None:
        raise UnknownMessageKind(f"not a message this queue accepts (expected: {', '.join(accepted)})")
    raise UnknownMessageKind(
        "not a message this service accepts (a discharge event needs eventType 'discharge' or 'visitation'; "
        "an advice request needs requestId and urgency; a CareCommunication or an acknowledgement is a MedCom "
        "message Bundle)"
    )


def _closing_report(
    raw: bytes, pipeline: Pipeline, now: datetime, accepted: tuple[str, ...] | None, state: State
) -> FlowResult:
    if accepted is not None and "closing-report" not in accepted:
        raise UnknownMessageKind(f"not a message this queue accepts (expected: {', '.join(accepted)})")
    report = parse_closing_report(raw, pipeline.closing_schema, pipeline.max_payload_bytes)
    return handle_closing_report(report, state, pipeline.closing, now)


def decode_bundle_or_json(raw: bytes, max_bytes: int) -> Any:
    """A FHIR Bundle in XML (read into FHIR JSON), else a JSON value: InvalidInput when neither."""
    if sniff(raw).syntax is Syntax.XML:
        return read_xml_bundle(parse_xml(raw, max_bytes))
    return decode_json(raw, max_bytes=max_bytes)


@dataclass(frozen=True, slots=True)
class ToCheck:
    """What `integration validate` checks: `document` as read (None when no FHIR JSON could be made of it)
    and `refusal`, the content error the reader found in well-formed input (None when it found none)."""

    document: Any
    refusal: str | None = None


def read_to_check(raw: bytes, max_bytes: int) -> ToCheck:
    """Bytes → what `validate` checks. Raises InvalidInput only when the input cannot be read at all: too
    large, an encoding we do not read, malformed XML or JSON, a character no message may carry, a JSON key
    twice (which of the two would be checked?). An XML message that is well-formed but not a FHIR Bundle, or
    that FHIR R4 or our reader's fidelity check refuses, is a finding, as the same content in JSON is."""
    if sniff(raw).syntax is not Syntax.XML:
        return ToCheck(decode_json(raw, max_bytes=max_bytes))
    root = parse_xml(raw, max_bytes)
    try:
        return ToCheck(read_xml_bundle(root))
    except RefusedContent as refused:  # read, with something the FHIR JSON does not carry as sent
        return ToCheck(refused.document, str(refused))
    except InvalidInput as refused:
        return ToCheck(None, str(refused))


def is_closing_report(root: etree._Element) -> bool:
    """Whether a parsed XML message is a closing report: its root element is in the report's namespace
    (what comments, processing instructions or text before or inside it say does not count)."""
    return bool(etree.QName(root).namespace == CLOSING_REPORT_NS)


def _raise(refusal: Rejected) -> FlowResult:
    raise refusal


def answer_unprocessable(raw: bytes, pipeline: Pipeline, now: datetime) -> FlowResult | None:
    """What to tell the sender of a message we give up on for now (a MedCom transient-error ack), if anything."""
    try:
        doc = decode_bundle_or_json(raw, pipeline.max_payload_bytes)
    except Rejected:
        return None
    return pipeline.acknowledger.unprocessable(doc, now)


def transform(
    raw: bytes,
    pipeline: Pipeline,
    now: datetime,
    accepted: tuple[str, ...] | None = None,
    state: State = NO_STATE,
) -> FlowResult:
    """Run one inbound message through its flow; `accepted` limits the kinds (a flow's queue takes its own).

    A MedCom message other than an ack is answered with an ack, under the duplicate rules.
    """
    root = parse_xml(raw, pipeline.max_payload_bytes) if sniff(raw).syntax is Syntax.XML else None
    if root is not None and is_closing_report(root):  # else a FHIR Bundle, in XML
        return _closing_report(raw, pipeline, now, accepted, state)
    try:
        doc = read_xml_bundle(root) if root is not None else decode_json(raw, max_bytes=pipeline.max_payload_bytes)
    except RefusedContent as refused:  # well-formed, so a MedCom sender can be told, by a fatal-error ack
        doc = refused.document
        if not is_medcom_message(doc) or is_acknowledgement(doc):
            raise
        return pipeline.acknowledger.handle(doc, partial(_raise, refused), state, now)
    if is_medcom_message(doc) and not is_acknowledgement(doc):
        return pipeline.acknowledger.handle(
            doc, lambda: detect_kind(doc, accepted).handle(doc, pipeline, now, state), state, now
        )
    return detect_kind(doc, accepted).handle(doc, pipeline, now, state)
