"""Acks for our own messages: matched by `response.identifier` to what we sent.

ok → acknowledged; fatal-error or transient-error → failed, the OperationOutcome's issues in the
audit log. A second ack for a message already settled is logged, audited and ignored. An ack for
nothing we sent is dead-lettered: someone has to look at it. Acks are never acknowledged.
"""

from __future__ import annotations

from typing import Any

import structlog

from integration.conformance.messaging_rules import UUID
from integration.conformance.r4_validator import content_errors
from integration.domain.course import AckReceived, OutboundState, State, StateChanges
from integration.errors import InvalidInput
from integration.flows.results import AuditFact, FlowResult
from integration.messages.acknowledgement import RESPONSE_CODES, response_of

log = structlog.get_logger("integration.acks")


def handle_acknowledgement(bundle: dict[str, Any], state: State) -> FlowResult:
    errors = content_errors(bundle)
    if errors:
        raise InvalidInput(errors[0].field, f"not valid FHIR R4: {errors[0].shown}")
    header_id, code, issues = response_of(bundle)
    if code not in RESPONSE_CODES:
        raise InvalidInput("MessageHeader.response.code", f"must be one of {', '.join(RESPONSE_CODES)}")
    if code != "ok" and not issues:
        raise InvalidInput("MessageHeader.response.details", f"a {code} ack needs an OperationOutcome")
    sent = state.outbound(header_id)
    if sent is None:
        shown = f"{header_id} " if UUID.fullmatch(header_id) else ""  # ours are UUIDs; anything else is not repeated
        raise InvalidInput("MessageHeader.response.identifier", f"{shown}is not a message we sent")
    detail = {"header": header_id, "ack": bundle.get("id"), "code": code, "issues": issues}
    if sent.state in (OutboundState.ACKNOWLEDGED, OutboundState.FAILED):  # settled: this ack is a second one
        log.info("duplicate ack ignored", header=header_id, state=sent.state)
        return FlowResult((), (AuditFact("ack-duplicate", {**detail, "state": sent.state}),), sent.patient)
    return FlowResult(
        (),
        (AuditFact("ack-received", detail),),
        sent.patient,
        StateChanges(acks=(AckReceived(header_id, code, tuple(issues)),)),
    )
