"""The life of inbound messages, whatever the bus: the order of durable steps that makes delivery
at-least-once without ever sending two different messages for one input.

For a batch of deliveries (one, or as many as the consumer has in hand):

    look up which were processed before → republish their stored outputs, byte for byte
    run the others through their flow's handler → rejected ones: a copy to the dead-letter
        exchange with the reason in its headers, confirmed (and their reply, e.g. a MedCom
        fatal-error ack, recorded with the batch and then published)
    commit, in one transaction, the audit records and the outputs of every processed message
    publish each output, persistent and mandatory, with a broker confirm → commit "published"
    (the caller acks) → commit "acked"

The caller acks a delivery only after `process_batch` returned its outcome. Transient failures
are retried here with exponential backoff and jitter, bounded in attempts and time; if they
persist the whole batch raises Transient and the caller returns it to the queue, whose delivery
limit ends the loop. A handler that fails unexpectedly (a bug) fails only its own delivery; on
its last delivery attempt it is dead-lettered here, with the flow's answer for a message it could
not process now (a MedCom transient-error ack), so the sender hears of it.
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
from integration.domain.course import (
    Course,
    EarlierMessage,
    OutboundStatus,
    State,
    StateChanges,
)
from integration.errors import GivenUp, Rejected, Transient
from integration.flows.results import FHIR_JSON, FlowResult
from integration.runtime.audit_store import AuditStore, StoredOutput
from integration.topology import DEAD_LETTER_EXCHANGE, DELIVERY_LIMIT

log = structlog.get_logger("integration.processor")

Handler = Callable[[bytes, datetime, State], FlowResult]
# What to send for a message that could not be processed now and is given up on (None: nothing).
Unprocessable = Callable[[bytes, datetime], FlowResult | None]


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
    source: str | None = None

    @property
    def key(self) -> str:
        """The idempotency key: the sender's message id, else the body's SHA-256."""
        return self.message_id or "sha256:" + hashlib.sha256(self.body).hexdigest()

    @property
    def last_attempt(self) -> bool:
        """A quorum queue counts earlier deliveries in x-delivery-count; past the limit it dead-letters."""
        return int(self.headers.get("x-delivery-count") or 0) >= DELIVERY_LIMIT


@dataclass(frozen=True, slots=True)
class Outcome:
    disposition: str  # processed | replayed-outputs | dead-lettered | failed
    outputs: int
    patient: str | None = None
    error: str | None = None

    @property
    def ackable(self) -> bool:
        return self.disposition != "failed"


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


@dataclass
class _Batch:
    """What one batch has decided, before anything is published or committed."""

    outcomes: dict[int, Outcome] = field(default_factory=dict)
    entries: list[AuditEntry] = field(default_factory=list)
    processed: list[tuple[str, str, list[StoredOutput]]] = field(default_factory=list)
    changes: StateChanges = StateChanges()
    to_publish: list[tuple[Delivery, StoredOutput, str | None]] = field(default_factory=list)
    dead_letters: list[tuple[Delivery, Rejected]] = field(default_factory=list)


class _BatchState:
    """The store as the flows see it during a batch: with what earlier messages of the batch received,
    so that two copies of one MedCom message in one batch are still one message and one duplicate."""

    def __init__(self, store: AuditStore, batch: _Batch) -> None:
        self._store = store
        self._batch = batch

    def course(self, patient: str) -> Course | None:
        return self._store.course(patient)

    def requester(self, thread_id: str) -> str | None:
        return self._store.requester(thread_id)

    def received(self, header_id: str) -> EarlierMessage | None:
        ours = [r for r in self._batch.changes.received if r.header_id == header_id]
        stored = self._store.received(header_id)
        if not ours:
            return stored
        first = stored or EarlierMessage(frozenset(), ours[0].code, ours[0].ack)
        return EarlierMessage(first.bundle_ids | {r.bundle_id for r in ours}, first.code, first.ack)

    def bundle_header(self, bundle_id: str) -> str | None:
        ours = next((r.header_id for r in self._batch.changes.received if r.bundle_id == bundle_id), None)
        return ours or self._store.bundle_header(bundle_id)

    def outbound(self, header_id: str) -> OutboundStatus | None:
        return self._store.outbound(header_id)


class Processor:
    def __init__(
        self,
        handlers: Mapping[str, Handler],
        store: AuditStore,
        bus: Bus,
        clock: Callable[[], datetime],
        retry: RetryPolicy = RetryPolicy(),
        unprocessable: Unprocessable | None = None,
    ) -> None:
        self._handlers = handlers
        self._store = store
        self._bus = bus
        self._clock = clock
        self._retry = retry
        self._unprocessable = unprocessable

    def _durably(self, step: Callable[[], Any]) -> Any:
        return self._retry.retrying()(step)

    def process(self, delivery: Delivery) -> Outcome:
        return self.process_batch([delivery])[0]

    def process_batch(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        """Do every durable step for these deliveries; the caller may ack each whose outcome is ackable."""
        now = self._clock()
        keys = [(d.flow, d.key) for d in deliveries]
        stored = self._durably(lambda: self._store.processed_many(keys))
        batch = _Batch()
        for index, delivery in enumerate(deliveries):
            previous = stored.get((delivery.flow, delivery.key))
            if previous is not None:
                self._plan_republish(batch, index, delivery, previous)
            else:
                self._plan(batch, index, delivery, now)
        for delivery, rejection in batch.dead_letters:
            self._durably(partial(self._publish_dead_letter, delivery, rejection, now))
        self._durably(lambda: self._store.record(batch.entries, now, batch.processed, batch.changes))
        published = []
        for delivery, output, patient in batch.to_publish:
            self._durably(
                partial(
                    self._bus.publish,
                    output.exchange,
                    output.routing_key,
                    output.body,
                    output.message_id,
                    None,
                    output.content_type,
                )
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
        return [batch.outcomes[i] for i in range(len(deliveries))]

    def acknowledged(self, acked: Sequence[tuple[Delivery, Outcome]]) -> None:
        """Audit the acks (after they happened: a lost record here loses no message)."""
        entries = [self._entry("acked", d, o.patient) for d, o in acked]
        if entries:
            self._durably(lambda: self._store.record(entries, self._clock()))

    def _plan(self, batch: _Batch, index: int, delivery: Delivery, now: datetime) -> None:
        received = self._entry(
            "received",
            delivery,
            None,
            sha256=hashlib.sha256(delivery.body).hexdigest(),
            redelivered=delivery.redelivered,
            source=delivery.source,
        )
        try:
            result = self._handlers[delivery.flow](delivery.body, now, _BatchState(self._store, batch))
        except Rejected as rejection:
            self._plan_rejection(batch, index, delivery, rejection, received)
            return
        except Exception as exc:  # a bug in a flow: this delivery goes back to its queue, the batch goes on
            log.error("handler failed", flow=delivery.flow, correlation_id=delivery.key, error=type(exc).__name__)
            if delivery.last_attempt:
                self._plan_give_up(batch, index, delivery, exc, received, now)
                return
            batch.outcomes[index] = Outcome("failed", 0, error=f"{type(exc).__name__}: {exc}")
            return
        patient = result.patient
        outputs = self._outputs(result)
        batch.entries += [
            AuditEntry(received.step, received.flow, received.message_id, received.detail, patient),
            self._entry("validated", delivery, patient),
            *self._facts(delivery, result),
            self._entry("transformed", delivery, patient, outputs=[o.message_id for o in outputs]),
        ]
        self._keep(batch, delivery, result, outputs)
        batch.outcomes[index] = Outcome("processed", len(outputs), patient)

    @staticmethod
    def _outputs(result: FlowResult) -> list[StoredOutput]:
        return [
            StoredOutput(
                o.route.exchange,
                o.route.routing_key,
                o.id,
                orjson.dumps(o.message),
                o.content_type,
                o.message["entry"][0]["resource"]["id"] if o.expects_ack else None,
                result.patient if o.expects_ack else None,
            )
            for o in result.outgoing
        ]

    def _facts(self, delivery: Delivery, result: FlowResult) -> list[AuditEntry]:
        return [self._entry(f"fact:{fact.kind}", delivery, result.patient, **fact.detail) for fact in result.facts]

    @staticmethod
    def _keep(batch: _Batch, delivery: Delivery, result: FlowResult, outputs: list[StoredOutput]) -> None:
        """Mark the delivery processed with these outputs and state, to be committed and then published."""
        batch.processed.append((delivery.flow, delivery.key, outputs))
        batch.changes = batch.changes + result.state
        batch.to_publish += [(delivery, output, result.patient) for output in outputs]

    def _plan_rejection(
        self, batch: _Batch, index: int, delivery: Delivery, rejection: Rejected, received: AuditEntry
    ) -> None:
        batch.dead_letters.append((delivery, rejection))
        batch.entries += [
            received,
            self._entry("rejected", delivery, None, reason=str(rejection), code=rejection.reason),
            self._entry("dead-lettered", delivery, None, exchange=DEAD_LETTER_EXCHANGE, routingKey=delivery.flow),
        ]
        reply: FlowResult | None = rejection.reply
        if reply is None:
            batch.outcomes[index] = Outcome("dead-lettered", 0)
            return
        # Sent and remembered as the flow says, but not marked processed: a replay from the dead-letter
        # queue after a fix must reach the flow again (whose duplicate rules then decide).
        outputs = self._outputs(reply)
        batch.entries += self._facts(delivery, reply)
        batch.changes = batch.changes + reply.state
        batch.to_publish += [(delivery, output, None) for output in outputs]
        batch.outcomes[index] = Outcome("dead-lettered", len(outputs))

    def _plan_give_up(
        self, batch: _Batch, index: int, delivery: Delivery, exc: Exception, received: AuditEntry, now: datetime
    ) -> None:
        """The last attempt failed on our side: dead-letter it and tell the sender (not remembered: a replay
        after the fix processes it and answers again)."""
        rejection = GivenUp(f"could not be processed after {DELIVERY_LIMIT + 1} attempts: {type(exc).__name__}")
        answer = self._unprocessable(delivery.body, now) if self._unprocessable else None
        batch.dead_letters.append((delivery, rejection))
        batch.entries += [
            received,
            self._entry("gave-up", delivery, None, reason=str(rejection), code=rejection.reason),
            self._entry("dead-lettered", delivery, None, exchange=DEAD_LETTER_EXCHANGE, routingKey=delivery.flow),
        ]
        outputs = self._outputs(answer) if answer else []
        if answer:
            batch.entries += self._facts(delivery, answer)
            batch.to_publish += [(delivery, output, None) for output in outputs]
        batch.outcomes[index] = Outcome("dead-lettered", len(outputs))

    def _plan_republish(self, batch: _Batch, index: int, delivery: Delivery, stored: list[StoredOutput]) -> None:
        log.info("redelivery of a processed message: republishing its stored outputs", outputs=len(stored))
        batch.entries.append(self._entry("received", delivery, None, redelivered=delivery.redelivered, duplicate=True))
        batch.to_publish += [(delivery, output, None) for output in stored]
        batch.outcomes[index] = Outcome("replayed-outputs", len(stored))

    def _publish_dead_letter(self, delivery: Delivery, rejection: Rejected, now: datetime) -> None:
        headers = {
            **delivery.headers,
            "x-rehab-reason": str(rejection),
            "x-rehab-reason-code": rejection.reason,
            "x-rehab-flow": delivery.flow,
            "x-rehab-rejected-at": now.isoformat(),
            "x-rehab-original-message-id": delivery.key,
        }
        self._bus.publish(
            DEAD_LETTER_EXCHANGE,
            delivery.flow,
            delivery.body,
            delivery.key,
            headers,
            delivery.content_type or "application/octet-stream",
        )

    @staticmethod
    def _entry(step: str, delivery: Delivery, patient: str | None, **detail: Any) -> AuditEntry:
        return AuditEntry(step=step, flow=delivery.flow, message_id=delivery.key, detail=detail, patient=patient)
