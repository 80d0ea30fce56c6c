"""Acks for our own messages: matched by `response.identifier` to what we sent, and taken only from its receiver.

ok → acknowledged; fatal-error or transient-error → failed, the OperationOutcome's issues in the
audit log. A second ack for a message already settled is logged, audited and ignored. An ack for
nothing we sent is dead-lettered: someone has to look at it. So is an ack whose sender is not the
receiver of the message it answers (MedCom Acknowledgement 2.0: the ack goes from the original receiver,
`MessageHeader.sender` its Organization and `source.endpoint` its endpoint): it settles nothing, and our
message stays as it was (awaiting, resent, given up on). Acks are never acknowledged.
"""

from __future__ import annotations

from typing import Any

import structlog

from integration.conformance.messaging_rules import UUID
from integration.conformance.r4_validator import content_errors
from integration.domain.course import AckReceived, Addressee, OutboundState, OutboundStatus, State, StateChanges
from integration.errors import InvalidInput
from integration.flows.results import AuditFact, FlowResult
from integration.messages.acknowledgement import MAX_ISSUES, RESPONSE_CODES, response_of, sender_of

log = structlog.get_logger("integration.acks")


class NotFromTheReceiver(InvalidInput):
    """An ack for one of our messages from someone other than the message's receiver: anyone on the bus could
    otherwise settle our message (its resends would stop, its missing ack never show)."""

    reason = "ack-not-from-receiver"


# What an ack's sender must share with the receiver of the message it answers, where a difference is reported,
# and what it is called there. MedCom Acknowledgement 2.0: the ack's MessageHeader.sender is the original
# receiver's Organization, its source.endpoint that receiver's endpoint (the destination we sent to).
ANSWERING_PARTY: tuple[tuple[str, str, str], ...] = (
    ("sor", "MessageHeader.sender", "its Organization's SOR id"),
    ("ean", "MessageHeader.sender", "its Organization's EAN (GLN) id"),
    ("endpoint", "MessageHeader.source.endpoint", "the endpoint"),
)


def not_from_the_receiver(answered_by: Addressee, receiver: Addressee | None) -> NotFromTheReceiver | None:
    """Why an ack whose sender is `answered_by` may not settle a message sent to `receiver`, or None when it may.

    Every value our record of the receiver holds must be the ack sender's (`ANSWERING_PARTY`, in its order); a
    receiver without a SOR id or an endpoint (None) lets no ack match. The reason names the field and our
    receiver's value, never the ack's."""
    if receiver is None or receiver.sor is None or receiver.endpoint is None:
        return NotFromTheReceiver(
            "MessageHeader.response.identifier",
            "our record of that message names no receiver (SOR id and endpoint) to check the ack's sender against",
        )
    for attribute, field, what in ANSWERING_PARTY:
        expected = getattr(receiver, attribute)
        if expected is not None and getattr(answered_by, attribute) != expected:
            return NotFromTheReceiver(
                field,
                f"{what} is not {expected}, the receiver's of the message it acknowledges; only that receiver "
                "may acknowledge it (MedCom Acknowledgement 2.0: an ack is sent by the original receiver)",
            )
    return None


def _sent(header_id: str, state: State) -> OutboundStatus:
    """Our message the ack answers: InvalidInput when we sent none with that MessageHeader id."""
    sent = state.outbound(header_id)
    if sent is None:
        shown = f"{header_id} " if UUID.fullmatch(header_id) else ""  # ours are UUIDs; anything else is not repeated
        raise InvalidInput("MessageHeader.response.identifier", f"{shown}is not a message we sent")
    return sent


def handle_acknowledgement(bundle: dict[str, Any], state: State) -> FlowResult:
    errors = content_errors(bundle, limit=1)  # the first names the refusal
    if errors:
        raise InvalidInput(errors[0].field, f"not valid FHIR R4: {errors[0].shown}")
    header_id, code, issues = response_of(bundle)
    if code not in RESPONSE_CODES:
        raise InvalidInput("MessageHeader.response.code", f"must be one of {', '.join(RESPONSE_CODES)}")
    if code != "ok" and not issues:
        raise InvalidInput("MessageHeader.response.details", f"a {code} ack needs an OperationOutcome")
    sent = _sent(header_id, state)
    foreign = not_from_the_receiver(sender_of(bundle), sent.receiver)
    if foreign is not None:
        log.warning("an ack for our message not from its receiver", header=header_id, field=foreign.field)
        raise foreign
    detail = {"header": header_id, "ack": bundle.get("id"), "code": code, **_recorded(issues)}
    if sent.state in (OutboundState.ACKNOWLEDGED, OutboundState.FAILED):  # settled: this ack is a second one
        log.info("duplicate ack ignored", header=header_id, state=sent.state)
        return FlowResult((), (AuditFact("ack-duplicate", {**detail, "state": sent.state}),), sent.patient)
    return FlowResult(
        (),
        (AuditFact("ack-received", detail),),
        sent.patient,
        StateChanges(acks=(AckReceived(header_id, code, tuple(issues[:MAX_ISSUES])),)),
    )


def _recorded(issues: list[dict[str, Any]]) -> dict[str, Any]:
    """The ack's OperationOutcome issues as its audit record keeps them: the first MAX_ISSUES, and how many more
    there were (`issuesNotRecorded`), as our own acks list them."""
    more = len(issues) - MAX_ISSUES
    return {"issues": issues[:MAX_ISSUES], **({"issuesNotRecorded": more} if more > 0 else {})}
