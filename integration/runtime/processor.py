"""The life of one inbound message, whatever the bus: the order of durable steps that makes
delivery at-least-once without ever sending two different messages for one input.

    received → (already processed? republish the stored outputs, byte for byte)
             → handler → rejected? dead-letter with the reason, confirmed
             → outputs and audit committed together → each output published, confirmed
             → published audited → (caller acks) → acked audited

The caller acks only when `process` returns. Transient failures are retried here with
exponential backoff and jitter, bounded in attempts and time; if they persist `process` raises
Transient and the caller returns the message to the queue, whose delivery limit ends the loop.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, Protocol

import orjson
import structlog
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, stop_after_delay, wait_exponential_jitter

from integration.audit_chain import AuditEntry
from integration.errors import Rejected, Transient
from integration.flows.results import FlowResult
from integration.runtime.audit_store import AuditStore, StoredOutput
from integration.topology import DEAD_LETTER_EXCHANGE

log = structlog.get_logger("integration.processor")

Handler = Callable[[bytes, datetime], FlowResult]
FHIR_JSON = "application/fhir+json"


class Bus(Protocol):
    """Publishing with a broker confirm: returns when the broker has the message, else raises Transient."""

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        message_id: str,
        headers: Mapping[str, Any] | None = None,
        content_type: str = FHIR_JSON,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class Delivery:
    flow: str
    body: bytes
    message_id: str | None  # the AMQP message-id property, when the sender set one
    redelivered: bool = False
    headers: Mapping[str, Any] = field(default_factory=dict)
    content_type: str | None = None

    @property
    def key(self) -> str:
        """The idempotency key: the sender's message id, else the body's SHA-256."""
        return self.message_id or "sha256:" + hashlib.sha256(self.body).hexdigest()


@dataclass(frozen=True, slots=True)
class Outcome:
    disposition: str  # processed | replayed-outputs | dead-lettered
    outputs: int
    patient: str | None = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 5
    seconds: float = 20.0
    initial_wait: float = 0.1
    max_wait: float = 3.0

    def retrying(self) -> Retrying:
        return Retrying(
            retry=retry_if_exception_type(Transient),
            stop=stop_after_attempt(self.attempts) | stop_after_delay(self.seconds),
            wait=wait_exponential_jitter(multiplier=self.initial_wait, max=self.max_wait, jitter=self.initial_wait),
            reraise=True,
        )


class Processor:
    def __init__(
        self,
        handlers: Mapping[str, Handler],
        store: AuditStore,
        bus: Bus,
        clock: Callable[[], datetime],
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        self._handlers = handlers
        self._store = store
        self._bus = bus
        self._clock = clock
        self._retry = retry

    def _durably(self, step: Callable[[], Any]) -> Any:
        return self._retry.retrying()(step)

    def process(self, delivery: Delivery) -> Outcome:
        """Do every durable step for this delivery; the caller may ack when this returns."""
        stored = self._durably(lambda: self._store.processed(delivery.flow, delivery.key))
        if stored is not None:
            return self._republish(delivery, stored)
        now = self._clock()
        try:
            result = self._handlers[delivery.flow](delivery.body, now)
        except Rejected as rejection:
            return self._dead_letter(delivery, rejection, now)
        outputs = [
            StoredOutput(
                o.route.exchange, o.route.routing_key, o.message["entry"][0]["resource"]["id"], orjson.dumps(o.message)
            )
            for o in result.outgoing
        ]
        patient = result.patient
        entries = [
            self._entry(
                "received",
                delivery,
                patient,
                sha256=hashlib.sha256(delivery.body).hexdigest(),
                redelivered=delivery.redelivered,
            ),
            self._entry("validated", delivery, patient),
            *(self._entry(f"fact:{fact.kind}", delivery, patient, **fact.detail) for fact in result.facts),
            self._entry("transformed", delivery, patient, outputs=[o.message_id for o in outputs]),
        ]
        self._durably(lambda: self._store.record(entries, now, (delivery.flow, delivery.key, outputs)))
        self._publish_all(delivery, outputs, patient)
        return Outcome("processed", len(outputs), patient)

    def acknowledged(self, delivery: Delivery, outcome: Outcome) -> None:
        """Audit the ack (after it happened: a lost record here loses no message)."""
        self._durably(lambda: self._store.record([self._entry("acked", delivery, outcome.patient)], self._clock()))

    def _publish_all(self, delivery: Delivery, outputs: Sequence[StoredOutput], patient: str | None) -> None:
        published = []
        for output in outputs:
            self._durably(
                partial(self._bus.publish, output.exchange, output.routing_key, output.body, output.message_id)
            )
            published.append(
                self._entry(
                    "published",
                    delivery,
                    patient,
                    exchange=output.exchange,
                    routingKey=output.routing_key,
                    outputId=output.message_id,
                    confirmed=True,
                )
            )
        if published:
            self._durably(lambda: self._store.record(published, self._clock()))

    def _republish(self, delivery: Delivery, stored: list[StoredOutput]) -> Outcome:
        log.info("redelivery of a processed message: republishing its stored outputs", outputs=len(stored))
        self._durably(
            lambda: self._store.record(
                [self._entry("received", delivery, None, redelivered=delivery.redelivered, duplicate=True)],
                self._clock(),
            )
        )
        self._publish_all(delivery, stored, None)
        return Outcome("replayed-outputs", len(stored))

    def _dead_letter(self, delivery: Delivery, rejection: Rejected, now: datetime) -> Outcome:
        headers = {
            "x-rehab-reason": str(rejection),
            "x-rehab-reason-code": rejection.reason,
            "x-rehab-flow": delivery.flow,
            "x-rehab-rejected-at": now.isoformat(),
            "x-rehab-original-message-id": delivery.key,
        }
        self._durably(
            lambda: self._bus.publish(
                DEAD_LETTER_EXCHANGE,
                delivery.flow,
                delivery.body,
                delivery.key,
                {**delivery.headers, **headers},
                delivery.content_type or "application/octet-stream",
            )
        )
        self._durably(
            lambda: self._store.record(
                [
                    self._entry(
                        "received",
                        delivery,
                        None,
                        sha256=hashlib.sha256(delivery.body).hexdigest(),
                        redelivered=delivery.redelivered,
                    ),
                    self._entry("rejected", delivery, None, reason=str(rejection), code=rejection.reason),
                    self._entry(
                        "dead-lettered", delivery, None, exchange=DEAD_LETTER_EXCHANGE, routingKey=delivery.flow
                    ),
                ],
                now,
            )
        )
        return Outcome("dead-lettered", 0)

    @staticmethod
    def _entry(step: str, delivery: Delivery, patient: str | None, **detail: Any) -> AuditEntry:
        return AuditEntry(step=step, flow=delivery.flow, message_id=delivery.key, detail=detail, patient=patient)
