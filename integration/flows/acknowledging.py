"""Every MedCom message we receive is answered with an ack, under MedCom's duplicate rules.

    MessageHeader.id new, Bundle.id new        → the flow runs; ack ok, or fatal-error (dead-lettered), or
                                                 transient-error when our configuration lacks something
                                                 (dead-lettered; not remembered, so a replay is processed)
    MessageHeader.id seen, Bundle.id new       → a duplicate: not processed; the first ack's body again,
                                                 in a new Bundle
    MessageHeader.id seen, Bundle.id seen      → our ack was lost: sent again, in a new Bundle
    MessageHeader.id new, Bundle.id seen       → Bundle ids are never reused: fatal-error
    MessageHeader.id seen, other content       → refused, whatever its Bundle.id: fatal-error, MSG_DUPLICATE_ID
                                                 at MessageHeader.id; dead-lettered (`reused-medcom-message-id`),
                                                 not remembered. MedCom: a resend is the unchanged message; changed
                                                 content is a new message with a new MessageHeader.id. Treated as a
                                                 duplicate it would be acked `ok` and its new content reach no one.

"Content" is `content_digest`: what a resend may not change. A MessageHeader id received before the
store kept digests has none; its next transmission is taken as a duplicate (as then) and its digest kept.

A message too broken to address (no MessageHeader id, sender, receiver, endpoints or Provenance)
cannot be acknowledged; it is dead-lettered with its reason, and the audit log says no ack went.
An ack is never acknowledged.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from integration.conformance.messaging_rules import as_dict, as_list, message_header
from integration.conformance.receipt import NotConformant
from integration.conformance.validation import outgoing_findings
from integration.domain.course import EarlierMessage, ReceivedMessage, State, StateChanges
from integration.domain.identifiers import patient_number
from integration.errors import ConfigurationError, InvalidInput, Rejected, UnknownMessageKind
from integration.fhir.terminology import Terminology
from integration.flows.results import AuditFact, FlowResult, Outgoing, Refusal, Route
from integration.formats.care_communication import SOR_CODE
from integration.messages.acknowledgement import (
    Addressing,
    Issue,
    NotAcknowledgeable,
    acknowledgement,
    addressing,
    listed,
    retransmission,
)

log = structlog.get_logger("integration.acknowledging")

SOR = "urn:oid:1.2.208.176.1.1"
CPR = "urn:oid:1.2.208.176.1.2"
MEDCOM_EVENTS = "http://medcomfhir.dk/ig/terminology/CodeSystem/medcom-messaging-eventCodes"
ACK_EVENT = "acknowledgement-message"


@dataclass(frozen=True, slots=True)
class AckContext:
    exchange: str
    routing_key: str  # template with {sor}: the original sender's SOR
    terminology: Terminology


def is_medcom_message(doc: Any) -> bool:
    """A FHIR message Bundle whose MessageHeader carries a MedCom event code."""
    if not isinstance(doc, dict) or doc.get("resourceType") != "Bundle":
        return False
    header = message_header(doc)
    return header.get("resourceType") == "MessageHeader" and as_dict(header.get("eventCoding")).get("system") == (
        MEDCOM_EVENTS
    )


def is_acknowledgement(doc: Any) -> bool:
    return is_medcom_message(doc) and as_dict(message_header(doc).get("eventCoding")).get("code") == ACK_EVENT


def issues_of(rejection: Rejected) -> list[Issue]:
    """The OperationOutcome's issues for a rejection: what is wrong, and where (`issue.expression`) as the
    check that found it said, never read back from its text; one per problem.

    A message of a kind we do not take is reported at MessageHeader.eventCoding, a receiver our mappings
    lack at MessageHeader.destination (MedCom Acknowledgement's codes for both); the fast checks' findings
    (NotConformant) each at its FHIRPath; any other InvalidInput at its `field` (none when "")."""
    text = str(rejection)
    if isinstance(rejection, UnknownMessageKind):
        return [Issue("not-supported", "MSG_RECEIVER_UNABLE_TO_RECEIVE_MSG_TYPE", text, "MessageHeader.eventCoding")]
    if isinstance(rejection, ConfigurationError):
        return [Issue("not-found", "MSG_Receiver_Identifier_UNKNOWN", text, "MessageHeader.destination")]
    if isinstance(rejection, NotConformant):  # every finding of the fast checks, as found
        return [
            Issue(f.layer.value, "MSG_BAD_FORMAT", f"{f.field}: {f.problem}", f.field or None)
            for f in rejection.findings
        ]
    if isinstance(rejection, InvalidInput):
        return [Issue("invalid", "MSG_BAD_FORMAT", text, rejection.field or None)]
    return [Issue("processing", "MSG_BAD_FORMAT", text)]


def _sor(organization: dict[str, Any]) -> str:
    """The SOR code for the ack's routing key; `unknown` (unroutable, so kept in rehab.unrouted) when there is none."""
    identifiers = (as_dict(i) for i in as_list(organization.get("identifier")))
    values = (i.get("value") for i in identifiers if i.get("system") == SOR)
    return next((v for v in values if isinstance(v, str) and SOR_CODE.fullmatch(v)), "unknown")


def _patient_of(bundle: dict[str, Any]) -> str | None:
    """Whom the message is about, for the audit log only (never logged): the first Patient's CPR number, else
    its replacement number as `system|value` (`ReplacementCpr.key`); None when it names neither (well)."""
    for entry in as_list(bundle.get("entry")):
        resource = as_dict(as_dict(entry).get("resource"))
        if resource.get("resourceType") == "Patient":
            identifiers = [as_dict(i) for i in as_list(resource.get("identifier"))]
            try:
                number = patient_number((i.get("system"), i.get("value")) for i in identifiers)
            except ValueError:
                cprs = (i.get("value") for i in identifiers if i.get("system") == CPR)
                return next((v for v in cprs if isinstance(v, str)), None)  # as before: the audit keeps it
            return number.key if number else None
    return None


SEND_TIME_ELEMENTS = frozenset({"occurredDateTime", "occurredPeriod", "recorded"})  # of a Provenance


def _without_send_times(resource: Any) -> Any:
    """A resource without what a resend renews: each resource's `meta.lastUpdated` and `meta.versionId`, and a
    Provenance's send time (MedCom: `occurredDateTime` and `recorded` say when the message was sent)."""
    if not isinstance(resource, dict):
        return resource
    kept = {
        k: v
        for k, v in resource.items()
        if not (resource.get("resourceType") == "Provenance" and k in SEND_TIME_ELEMENTS)
    }
    if isinstance(kept.get("meta"), dict):
        kept["meta"] = {k: v for k, v in kept["meta"].items() if k not in ("lastUpdated", "versionId")}
    return kept


def content_digest(bundle: dict[str, Any]) -> str:
    """The SHA-256 (hex, 64 characters) of a message's content, as a resend must carry it unchanged.

    Covered: every `Bundle.entry.resource` as received, ids and references included, in canonical JSON
    (keys sorted, no spaces, non-ASCII as is; a number as the parser gave it), taken as a set (the entries'
    order is not content). Left out, because a MedCom retransmission renews them (new Bundle.id and
    send time; MedCom Reliable Messaging, README §1.5/§9): everything outside the entries' resources
    (`Bundle.id`, `Bundle.identifier`, `Bundle.timestamp`, `Bundle.meta`, `entry.fullUrl`), each resource's
    `meta.lastUpdated` and `meta.versionId`, and every Provenance's `occurredDateTime`, `occurredPeriod` and
    `recorded`. Anything else that differs (a text, a code, a patient, a resource id) is other content.
    Never raises: an entry that is no object counts as what it is.
    """
    parts = sorted(
        json.dumps(
            _without_send_times(as_dict(entry).get("resource")),
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            default=str,  # a Decimal, as its text
        )
        for entry in as_list(bundle.get("entry"))
    )
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8", "surrogatepass")).hexdigest()


class ResentWithOtherContent(InvalidInput):
    """A MessageHeader id received before, now with other content (`content_digest`): a changed message
    resent under its old id. MedCom: changed content is a new message, with a new MessageHeader.id."""

    reason = "reused-medcom-message-id"


def _valid(ack: dict[str, Any]) -> list[str]:
    """The gate every output passes (`validation.outgoing_findings`), as text."""
    return [finding.text for finding in outgoing_findings(ack)]


def _refused_transmission(
    to: Addressing, content: str, earlier: EarlierMessage | None, state: State
) -> tuple[Rejected, Issue] | None:
    """Why this transmission is refused whatever it holds, and the ack's issue for it (where, as data): no
    Bundle.id, a MessageHeader.id resent with other content, a Bundle.id another message used; else None."""
    if not to.bundle_id:  # duplicates are told apart by it: MedCom requires one per transmission
        missing = InvalidInput("Bundle.id", "missing: MedCom gives every transmission a new Bundle.id")
        return missing, Issue("required", "MSG_BAD_FORMAT", str(missing), missing.field)
    if earlier is not None and earlier.contents and content not in earlier.contents:
        log.warning("a MedCom MessageHeader.id was resent with other content", header=to.header_id)
        changed = ResentWithOtherContent(
            "MessageHeader.id",
            "already received with other content; a changed message needs a new MessageHeader.id "
            "(MedCom: only an unchanged message is resent under its MessageHeader.id)",
        )
        return changed, Issue("duplicate", "MSG_DUPLICATE_ID", str(changed), changed.field)
    if earlier is None and state.bundle_header(to.bundle_id) not in (None, to.header_id):
        reuse = Rejected("Bundle.id: already used by another message")
        return reuse, Issue("duplicate", "MSG_DUPLICATE_ID", str(reuse), "Bundle.id")
    return None


class Acknowledger:
    """Wraps a flow's handling of one MedCom message with the duplicate rules and the ack."""

    def __init__(self, ctx: AckContext) -> None:
        self._ctx = ctx

    def _route(self, to: Addressing) -> Route:
        return Route(self._ctx.exchange, self._ctx.routing_key.format(sor=_sor(to.sender)))

    def _ack(self, to: Addressing, code: str, issues: list[Issue], now: datetime) -> dict[str, Any] | None:
        """The ack, or None when the received message's parties cannot make a valid one (audited)."""
        ack = acknowledgement(to, code, issues, now, self._ctx.terminology)
        problems = _valid(ack)
        if problems:
            log.warning("no acknowledgement possible", header=to.header_id, problem=problems[0])
            return None
        return ack

    def handle(
        self, bundle: dict[str, Any], run: Callable[[], FlowResult], state: State, now: datetime
    ) -> FlowResult | Refusal:
        """`run` (the flow, which may raise Rejected) under the duplicate rules: its result with an ok ack, the
        first answer again for a duplicate, or a Refusal with the error ack (see the module for which)."""
        nothing = FlowResult((), (), _patient_of(bundle))  # what a refusal's answer adds to
        try:
            to = addressing(bundle)
        except NotAcknowledgeable as exc:
            unaddressed = InvalidInput(exc.field, f"{exc.problem} (so the message cannot be acknowledged either)")
            why = AuditFact("not-acknowledged", {"why": str(unaddressed)})
            return Refusal(unaddressed, nothing.plus((), (why,), StateChanges()))
        content = content_digest(bundle)
        earlier = state.received(to.header_id)
        refused = _refused_transmission(to, content, earlier, state)
        if refused is not None:  # not remembered: the first transmission stays the message
            rejection, issue = refused
            return Refusal(rejection, self._answer(nothing, to, "fatal-error", [issue], now, record=False))
        if earlier is not None:
            return self._duplicate(to, earlier, now, _patient_of(bundle), content)
        try:
            result = run()
        except ConfigurationError as ours:
            # Our mappings lack something: not remembered, so a replay after the fix is processed and answered ok.
            return Refusal(ours, self._answer(nothing, to, "transient-error", issues_of(ours), now, record=False))
        except Rejected as rejection:
            answer = self._answer(nothing, to, "fatal-error", issues_of(rejection), now, content=content)
            return Refusal(rejection, answer)
        return self._answer(result, to, "ok", [], now, content=content)

    def _answer(
        self,
        result: FlowResult,
        to: Addressing,
        code: str,
        issues: list[Issue],
        now: datetime,
        record: bool = True,
        content: str | None = None,
    ) -> FlowResult:
        issues = listed(issues)  # the ack and its audit record name the first MAX_ISSUES, and how many more
        ack = self._ack(to, code, issues, now)
        if ack is None:
            fact = AuditFact("not-acknowledged", {"header": to.header_id, "why": "its parties cannot make a valid ack"})
            return result.plus((), (fact,), StateChanges())
        fact = AuditFact(
            "acknowledged",
            {
                "header": to.header_id,
                "bundle": to.bundle_id,
                "code": code,
                "ack": ack["id"],
                "issues": [i.as_json() for i in issues],
            },
        )
        received = ReceivedMessage(to.header_id, str(to.bundle_id), code, ack, content) if record else None
        return result.plus(
            (Outgoing(self._route(to), ack, ack["id"]),),
            (fact,),
            StateChanges(received=(received,) if received else ()),
        )

    def _duplicate(
        self, to: Addressing, earlier: EarlierMessage, now: datetime, patient: str | None, content: str
    ) -> FlowResult:
        """Not processed again: the first ack's body once more, in a new Bundle (MedCom: same answer every time)."""
        transmission = str(to.bundle_id)
        lost = to.bundle_id in earlier.bundle_ids
        if lost:  # the same transmission again: our ack never arrived
            transmission = f"{to.bundle_id}@{now.isoformat()}"
        kind = "ack-resent" if lost else "duplicate-message"
        log.info("duplicate MedCom message: not processed again", kind=kind, header=to.header_id)
        facts = (AuditFact(kind, {"header": to.header_id, "bundle": to.bundle_id, "code": earlier.code}),)
        seen = StateChanges(
            received=() if lost else (ReceivedMessage(to.header_id, str(to.bundle_id), content=content),)
        )
        if earlier.ack is None:
            return FlowResult((), facts, patient, seen)
        ack = retransmission(dict(earlier.ack), transmission, now)
        outgoing = Outgoing(self._route(to), ack, ack["id"])
        return FlowResult((outgoing,), facts, patient, seen)

    def unprocessable(self, bundle: Any, now: datetime) -> FlowResult | None:
        """A transient-error ack for a MedCom message we gave up on for now; not remembered, so a replay
        after the fix is processed and answered ok (MedCom KR4/KR5)."""
        if not is_medcom_message(bundle) or is_acknowledgement(bundle):
            return None
        try:
            to = addressing(bundle)
        except NotAcknowledgeable:
            return None
        issue = Issue(
            "transient", "MSG_Mailbox_Out_Of_Operation", "the receiver could not process the message now; it will be"
        )
        return self._answer(FlowResult((), (), _patient_of(bundle)), to, "transient-error", [issue], now, record=False)
