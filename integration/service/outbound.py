"""Our MedCom messages that got no ack: resent, then handed to a person.

MedCom's reliable messaging: a message without an ack after 30 minutes is sent again with a new
Bundle id (and timestamp) and the same MessageHeader id, at most twice; after that it is flagged
for manual follow-up (`integration outbound pending`). Each resend is published with a broker
confirm before it is recorded; its Bundle id derives from the MessageHeader id and the resend's
number, so a resend repeated after a crash is the same transmission, which receivers recognise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from integration.domain.course import OutboundState
from integration.fhir import fhir_json
from integration.messages.acknowledgement import retransmission
from integration.service import metrics
from integration.service.audit_chain import AuditEntry
from integration.service.ports import Bus, OutboundMessage, Resend, Store

log = structlog.get_logger("integration.outbound")


@dataclass(frozen=True, slots=True)
class ResendPolicy:
    ack_timeout: timedelta = timedelta(minutes=30)
    max_resends: int = 2
    per_pass: int = 500  # the consumer runs a pass between batches: keep it short


@dataclass(frozen=True, slots=True)
class ResendReport:
    resent: tuple[str, ...]  # MessageHeader ids
    gave_up: tuple[str, ...]


def _entry(step: str, message: OutboundMessage, **detail: Any) -> AuditEntry:
    return AuditEntry(
        step=step, flow=message.flow, message_id=message.header_id, detail=detail, patient=message.patient
    )


def resend_unacknowledged(store: Store, bus: Bus, now: datetime, policy: ResendPolicy) -> ResendReport:
    """One pass: resend what waited too long for its ack, give up on what was resent enough."""
    resent, gave_up = [], []
    for message in store.outbound_messages([OutboundState.AWAITING], now - policy.ack_timeout, policy.per_pass):
        if message.resends >= policy.max_resends:
            log.warning("no ack after the last resend: manual follow-up", header=message.header_id)
            entry = _entry("outbound-gave-up", message, resends=message.resends, routingKey=message.output.routing_key)
            store.record([entry], now, resends=[Resend(message.header_id, None)])
            metrics.OUTBOUND_GAVE_UP.inc()
            gave_up.append(message.header_id)
            continue
        resend(store, bus, message, now)
        resent.append(message.header_id)
    return ResendReport(tuple(resent), tuple(gave_up))


def resend(store: Store, bus: Bus, message: OutboundMessage, now: datetime, **by: Any) -> str:
    """Send `message` again now (a new Bundle id, the same MessageHeader id: `retransmission`), confirmed, then
    record it (`outbound-resent`, with `by`: who asked, when a person did); the new Bundle id."""
    number = message.resends + 1
    again = retransmission(fhir_json.loads(message.output.body), f"resend-{number}", now)
    body = fhir_json.dumps(again)
    out = message.output
    bus.publish(out.exchange, out.routing_key, body, again["id"], _headers(number), out.content_type)
    log.info("resent: no ack in time" if not by else "resent by hand", header=message.header_id, resend=number)
    entry = _entry("outbound-resent", message, resend=number, bundle=again["id"], routingKey=out.routing_key, **by)
    store.record([entry], now, resends=[Resend(message.header_id, body)])
    metrics.OUTBOUND_RESENT.inc()
    return str(again["id"])


def _headers(number: int) -> Mapping[str, Any]:
    return {"x-rehab-resend": number}
