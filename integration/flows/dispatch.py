"""The one dispatch: inbound bytes → read once → the kind its flow's row chooses → parser → flow →
outgoing messages and audit facts (or a Refusal with the answer the sender still gets).

`FLOWS` is the only table: one row per inbound queue (the flow's name), saying which kinds of message
the queue takes, each with how it is recognised, read into its record and handled. A queue that takes
two kinds (the hotline's: JSON advice requests and MedCom CareCommunications, JSON or XML) decides
between them once, by the first of its kinds that matches. A later flow adds one row.

Reading is the same for every queue (`read_inbound`): XML or JSON by the first bytes; an XML message
whose root is in the closing report's namespace stays XML, any other is a FHIR Bundle read into FHIR
JSON. Every MedCom message other than an ack is answered with an ack under MedCom's duplicate rules,
whichever queue it came on (`flows.acknowledging`): that rule belongs to the envelope, not the kind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from types import MappingProxyType
from typing import Any

from lxml import etree

from integration.domain.course import NO_STATE, Course, State
from integration.domain.missed_referral import MissedReferralWatch
from integration.domain.records import DischargeCancellation, DischargeEvent, Patient
from integration.errors import InvalidInput, Rejected, UnknownMessageKind
from integration.flows.acknowledging import Acknowledger, is_acknowledgement, is_medcom_message
from integration.flows.acks_received import handle_acknowledgement
from integration.flows.closing import ClosingContext, handle_closing_report
from integration.flows.hospital_closing import handle_hospital_closing
from integration.flows.hospital_notification import handle_hospital_notification, withhold_for_the_deceased
from integration.flows.hotline import HotlineContext, handle_advice_request, handle_care_communication
from integration.flows.referral import ReferralContext, handle_discharge_cancellation, handle_referral_event
from integration.flows.results import FlowResult, Handled
from integration.formats.adt import discharge_record, read_adt, relabelled
from integration.formats.adt_profile import Hl7Profile
from integration.formats.advice_request import parse_advice_request
from integration.formats.care_communication import is_care_communication, parse_care_communication, read_xml_bundle
from integration.formats.closing_report import NS as CLOSING_REPORT_NS
from integration.formats.closing_report import parse_closing_report
from integration.formats.discharge_event import parse_discharge_event
from integration.formats.er7 import Er7Message, Hl7Problem, looks_like_er7, parse_er7
from integration.formats.gp_referral import parse_gp_referral
from integration.formats.hospital_closing import parse_hospital_closing
from integration.formats.hospital_notification import is_hospital_notification, parse_hospital_notification
from integration.formats.json_contract import JsonContract, RefusedContent, decode_json
from integration.formats.safe_xml import parse_xml
from integration.formats.syntax import Syntax, sniff


@dataclass(frozen=True, slots=True)
class Pipeline:
    """Everything the flows need, built once by bootstrap."""

    discharge_contract: JsonContract
    gp_referral_contract: JsonContract
    hospital_closing_contract: JsonContract
    referral: ReferralContext
    max_payload_bytes: int
    advice_contract: JsonContract
    hotline: HotlineContext
    municipality_sors: frozenset[str]
    closing_schema: etree.XMLSchema
    closing: ClosingContext
    acknowledger: Acknowledger
    hl7_profile: Hl7Profile
    missed_referral: MissedReferralWatch = MissedReferralWatch()  # mappings/hospital-notifications.yaml


@dataclass(frozen=True, slots=True)
class Inbound:
    """One inbound message as read: `document` is the FHIR JSON (a FHIR Bundle, in XML or JSON) or the JSON
    value; `root` the parsed XML of a message that is no FHIR Bundle (the closing report), else None; `er7`
    an HL7 v2 message in ER7 (an ADT on the discharge queue), else None."""

    raw: bytes
    document: Any = None
    root: etree._Element | None = None
    er7: Er7Message | None = None

    @property
    def needs_ack(self) -> bool:
        """A MedCom message other than an ack: answered with an ack (an ack is never acknowledged)."""
        return is_medcom_message(self.document) and not is_acknowledgement(self.document)


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of inbound message: `matches` tells it apart (from the other kinds of its queue, and of every
    queue for `integration transform`); `read` parses it into its record (InvalidInput when it breaks its
    contract); `handle` runs its flow on that record."""

    name: str
    matches: Callable[[Inbound], bool]
    read: Callable[[Inbound, Pipeline, datetime], Any]
    handle: Callable[[Any, Inbound, Pipeline, datetime, State], FlowResult]


@dataclass(frozen=True, slots=True)
class Flow:
    """One inbound queue's row: the kinds of message it takes, in the order they are told apart."""

    kinds: tuple[Kind, ...]

    @property
    def refusal(self) -> str:
        return f"not a message this queue accepts (expected: {', '.join(k.name for k in self.kinds)})"


def _json_object(message: Inbound) -> dict[str, Any]:
    return message.document if isinstance(message.document, dict) else {}


def _filed_course(state: State, patient: Patient) -> Course | None:
    """The patient's course, filed under the patient's number: a CPR number, or a replacement number as
    `system|value` (decision 18)."""
    return state.course(patient.cpr.key)


DISCHARGE_EVENT = Kind(
    "discharge-event",
    lambda m: _json_object(m).get("eventType") in ("discharge", "visitation", "step-down", "discharge-update"),
    lambda m, p, now: parse_discharge_event(m.document, p.discharge_contract, received_at=now),
    lambda event, _m, p, now, state: handle_referral_event(event, _filed_course(state, event.patient), p.referral, now),
)
HOSPITAL_CLOSING = Kind(
    "hospital-closing",
    lambda m: _json_object(m).get("eventType") in ("follow-up-plan", "outpatient-discharge"),
    lambda m, p, now: parse_hospital_closing(m.document, p.hospital_closing_contract, received_at=now),
    lambda closing, _m, p, now, state: handle_hospital_closing(
        closing, _filed_course(state, closing.patient), p.closing, now
    ),
)
GP_REFERRAL = Kind(
    "gp-referral",
    lambda m: _json_object(m).get("eventType") == "gp-referral",
    lambda m, p, now: parse_gp_referral(m.document, p.gp_referral_contract, received_at=now),
    lambda event, _m, p, now, state: handle_referral_event(event, _filed_course(state, event.patient), p.referral, now),
)
ADVICE_REQUEST = Kind(
    "advice-request",
    lambda m: "requestId" in _json_object(m) and "urgency" in _json_object(m),
    lambda m, p, now: parse_advice_request(m.document, p.advice_contract, p.municipality_sors, received_at=now),
    lambda request, m, p, now, state: handle_advice_request(
        request, m.document, state.course(request.patient), p.hotline, now
    ),
)
CARE_COMMUNICATION = Kind(
    "care-communication",
    lambda m: is_care_communication(m.document),
    lambda m, p, now: parse_care_communication(m.document, p.municipality_sors, received_at=now),
    lambda request, m, p, now, state: handle_care_communication(request, m.document, state, p.hotline, now),
)
CLOSING_REPORT = Kind(
    "closing-report",
    lambda m: m.root is not None and is_closing_report(m.root),
    lambda m, p, _now: parse_closing_report(m.raw, p.closing_schema, p.max_payload_bytes),
    lambda report, _m, p, now, state: handle_closing_report(report, state, p.closing, now),
)
HOSPITAL_NOTIFICATION = Kind(
    "hospital-notification",
    lambda m: is_hospital_notification(m.document),
    lambda m, _p, now: parse_hospital_notification(m.document, received_at=now),
    lambda notice, _m, p, now, state: handle_hospital_notification(
        notice, state.course(notice.patient.key), now, p.missed_referral
    ),
)


def _read_adt(message: Inbound, pipeline: Pipeline, now: datetime) -> DischargeEvent | DischargeCancellation:
    assert message.er7 is not None  # HL7_ADT matches only what read_inbound read as ER7
    mapped = read_adt(message.er7, pipeline.hl7_profile, now)
    if isinstance(mapped, DischargeCancellation):
        return mapped
    return discharge_record(mapped, pipeline.discharge_contract, now)


def _handle_adt(
    record: DischargeEvent | DischargeCancellation, message: Inbound, pipeline: Pipeline, now: datetime, state: State
) -> FlowResult:
    if isinstance(record, DischargeCancellation):
        return handle_discharge_cancellation(record, state.course(record.patient.key), pipeline.referral, now)
    try:
        return handle_referral_event(record, _filed_course(state, record.patient), pipeline.referral, now)
    except InvalidInput as error:  # the flow names the contract's field (a municipality we do not know)
        raise _at_hl7_field(error, message, pipeline, now) from None


def _at_hl7_field(error: InvalidInput, message: Inbound, pipeline: Pipeline, now: datetime) -> InvalidInput:
    """A flow's refusal of an ADT at the HL7 field its contract field was read from, when it was read from one
    (the mapping is pure: read again for where each value came from); else the refusal as it is."""
    assert message.er7 is not None
    mapped = read_adt(message.er7, pipeline.hl7_profile, now)
    if isinstance(error, Hl7Problem) or isinstance(mapped, DischargeCancellation):
        return error
    located = relabelled(error, mapped.origins)
    return located if located.segment else error


# An HL7 v2 message in ER7 on the discharge queue: any is this kind, so that one that is no ADT^A03/A08/A11/
# A13 is refused by its reader naming MSH-9 (HL7 Table 0357 code 200/201), not as an unknown kind.
HL7_ADT = Kind(
    "hl7-adt",
    lambda m: m.er7 is not None,
    _read_adt,
    lambda record, m, p, now, state: _handle_adt(record, m, p, now, state),
)
ACKNOWLEDGEMENT = Kind(
    "acknowledgement",
    lambda m: is_acknowledgement(m.document),
    lambda m, _p, _now: m.document,
    lambda bundle, _m, _p, _now, state: handle_acknowledgement(bundle, state),
)

FLOWS: Mapping[str, Flow] = MappingProxyType(
    {
        # A hospital's queue: its JSON events, its MedCom HospitalNotifications in order with them, and HL7 v2 ADT.
        "discharge": Flow((DISCHARGE_EVENT, HOSPITAL_CLOSING, HOSPITAL_NOTIFICATION, HL7_ADT)),
        "gp-referral": Flow((GP_REFERRAL,)),
        "hotline": Flow((ADVICE_REQUEST, CARE_COMMUNICATION)),
        "closing": Flow((CLOSING_REPORT,)),
        "acknowledgement": Flow((ACKNOWLEDGEMENT,)),
    }
)
KINDS: tuple[Kind, ...] = tuple(kind for flow in FLOWS.values() for kind in flow.kinds)
NOT_OURS = (
    "not a message this service accepts (a hospital event needs eventType 'discharge', 'visitation', "
    "'step-down', 'discharge-update', 'follow-up-plan' or 'outpatient-discharge', or is a MedCom "
    "HospitalNotification; a GP's referral eventType 'gp-referral'; an advice request needs requestId and "
    "urgency; a CareCommunication or an acknowledgement is a MedCom message Bundle; an HL7 v2 ADT is ER7 "
    "beginning MSH)"
)


def kind_of(message: Inbound, flow: str | None = None) -> Kind:
    """The kind of an inbound message, chosen once: the first of its queue's kinds (`flow`, a key of FLOWS)
    that matches, or without a queue (`integration transform`) the first of every flow's. Raises
    UnknownMessageKind naming what the queue (or the service) takes."""
    kinds = FLOWS[flow].kinds if flow is not None else KINDS
    for kind in kinds:
        if kind.matches(message):
            return kind
    raise UnknownMessageKind(FLOWS[flow].refusal if flow is not None else NOT_OURS)


MLLP_START_BLOCK = b"\x0b"  # MLLP's start block (HL7 v2 transport, MLLP release 1): never in ER7 text


def read_inbound(raw: bytes, max_bytes: int) -> Inbound:
    """Bytes → the message as read. Raises InvalidInput when it cannot be read (too large, an encoding we do
    not read, malformed, not a FHIR Bundle in XML), RefusedContent when it is well-formed but refused for
    what it holds (its `document` is what a lenient reader made of it, for the MedCom sender's ack). An HL7
    v2 message in ER7 (bytes beginning `MSH` and a field separator) is read by `formats.er7` (Hl7Problem); one
    still in its MLLP frame (a start block 0x0B first) is refused naming MSH: the frame is the transport's."""
    if raw.lstrip(b" \t\r\n").startswith(MLLP_START_BLOCK):
        raise Hl7Problem(
            "MLLP block characters on the bus: publish the message without its frame (0x0B ... 0x1C 0x0D)",
            segment="MSH",
        )
    if looks_like_er7(raw):
        return Inbound(raw, er7=parse_er7(raw, max_bytes))
    if sniff(raw).syntax is not Syntax.XML:
        return Inbound(raw, decode_json(raw, max_bytes=max_bytes))
    root = parse_xml(raw, max_bytes)
    if is_closing_report(root):
        return Inbound(raw, root=root)
    return Inbound(raw, read_xml_bundle(root))


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


def _run(message: Inbound, flow: str | None, pipeline: Pipeline, now: datetime, state: State) -> FlowResult:
    kind = kind_of(message, flow)
    result = kind.handle(kind.read(message, pipeline, now), message, pipeline, now, state)
    return withhold_for_the_deceased(result, state)  # a notified death: nothing more is sent for the patient


def transform(
    raw: bytes,
    pipeline: Pipeline,
    now: datetime,
    flow: str | None = None,
    state: State = NO_STATE,
) -> Handled:
    """Run one inbound message through its flow: `flow` names the queue it came on (a key of FLOWS); None
    (`integration transform`) finds the kind among every flow's.

    Raises Rejected when the message is refused and its sender gets no answer (ConfigurationError among
    them). A MedCom message other than an ack is answered with an ack under the duplicate rules, so a
    refusal of one is returned: a Refusal with the fatal-error (or transient-error) ack to send."""
    try:
        message = read_inbound(raw, pipeline.max_payload_bytes)
    except RefusedContent as refused:  # well-formed, so a MedCom sender can be told, by a fatal-error ack
        if not Inbound(raw, refused.document).needs_ack:
            raise
        return pipeline.acknowledger.handle(refused.document, partial(_raise, refused), state, now)
    run = partial(_run, message, flow, pipeline, now, state)
    return pipeline.acknowledger.handle(message.document, run, state, now) if message.needs_ack else run()


Handler = Callable[[bytes, datetime, State], Handled]


def handler(pipeline: Pipeline, flow: str) -> Handler:
    """The processor's handler for the queue of `flow` (a key of FLOWS): body, receipt time, state → result."""
    return lambda raw, now, state: transform(raw, pipeline, now, flow, state)
