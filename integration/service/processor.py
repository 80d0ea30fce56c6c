"""The life of inbound messages, whatever the bus: the order of durable steps that makes delivery
at-least-once without ever sending two different messages for one input.

For a batch of deliveries (one, or as many as the consumer has in hand):

    look up what the store knows of each key (flow, message-id or body hash): processed before
        with the same body → republish its stored outputs, byte for byte; processed with another
        body → a reused message-id: refused; how often our flow already failed on it
    a second copy within the batch → the redelivery it is (same body) or a reused id (another body)
    run the others through their flow's handler → rejected ones: a copy to the dead-letter
        exchange with the reason in its headers, confirmed (and their reply, e.g. a MedCom
        fatal-error ack, recorded with the batch and then published)
    commit, in one transaction, the audit records and the outputs of every processed message
    publish each output, persistent and mandatory, with a broker confirm → commit "published"
    (the caller acks) → commit "acked"

What happens on failure, by whose fault (`integration.errors`):

- the input (a `Rejected`, or a property the adapter refused): dead-lettered with the reason on
  its first delivery, never retried;
- our flow (any other exception from a handler): the delivery is returned to its queue and the
  failure counted in the store — not from a header a publisher could write; on the last of
  `attempts` it is dead-lettered (`internal-error`) with the flow's answer for a message it could
  not process now (a MedCom transient-error ack), so the sender hears of it;
- the database refusing a write for what it holds (`StoreRefused`), or a defect outside the flows:
  the batch is retried one delivery at a time, and the one that still fails counts as above;
- a dependency (`Transient`: the audit store, a publish the broker refuses): retried here a few
  times, then raised; the consumer holds the batch unacked and waits for the dependency, so an
  outage never spends a delivery attempt. It passes the same `Held` to every retry of the batch:
  the batch's plan is kept, and a retry goes on from the step that failed: a dead letter the
  broker confirmed is not sent again, a commit not made again (no rejection audited twice, no
  failure counted twice), and an output the broker confirmed not published again.

`fault`, when given, is called at named points ("handled", "dead-lettered", "committed",
"published", "recorded": after the "published" records' commit, before the caller acks) so that tests
can kill the process exactly there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from functools import partial
from hashlib import sha256
from typing import Any

import structlog
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, stop_after_delay, wait_exponential_jitter

from integration.domain.course import (
    Course,
    EarlierMessage,
    OutboundState,
    OutboundStatus,
    State,
    StateChanges,
)
from integration.errors import (
    Conflict,
    ConnectionLost,
    GivenUp,
    InvalidInput,
    Rejected,
    StoreRefused,
    Transient,
    Unconfirmed,
)
from integration.fhir import fhir_json
from integration.flows.results import FlowResult, Handled, Refusal
from integration.formats.er7_digest import content_digest as er7_content_digest
from integration.log import mask_cpr, masked_headers, one_line
from integration.service import metrics
from integration.service.audit_chain import AuditEntry
from integration.service.hl7_intake import message_id_of
from integration.service.ports import Bus, EarlierDelivery, Failure, Publication, Store, StoredOutput
from integration.topology import DEAD_LETTER_EXCHANGE, RESERVED_HEADERS

log = structlog.get_logger("integration.processor")

# A flow's handler: body, receipt time, state → its result, or a Refusal with what its sender is answered.
# It raises Rejected for a refusal without an answer; anything else it raises is a failure of ours.
Handler = Callable[[bytes, datetime, State], Handled]
# What to send for a message that could not be processed now and is given up on (None: nothing).
Unprocessable = Callable[[bytes, datetime], FlowResult | None]
FLOW_ATTEMPTS = 6  # our flow is run at most this many times on one message before we give up on it
CONFLICT_REPLANS = 5  # a batch planned again at once when another consumer changed a course it read (decision 31)
MAX_UNRECORDED_ACKS = 1000  # "acked" records held for the next transaction before they get one of their own


class ReusedMessageId(InvalidInput):
    """A message-id already used for a message with other content: one of the two would be lost."""

    reason = "reused-message-id"


ER7_DIGEST_PREFIX = "er7:"  # a processed_message digest that is an ER7 content digest, not the body's SHA-256


def _er7_digest(delivery: Delivery) -> dict[str, str]:
    """The ER7 content digest for the audit's `received` record, beside the body's SHA-256 (both evidence)."""
    if delivery.content_digest.startswith(ER7_DIGEST_PREFIX):
        return {"er7ContentSha256": delivery.content_digest.removeprefix(ER7_DIGEST_PREFIX)}
    return {}


@dataclass(frozen=True, slots=True)
class Delivery:
    """One inbound message as the processor sees it; its properties were checked by the adapter."""

    flow: str
    body: bytes
    message_id: str | None  # the AMQP message-id property, when the sender set a valid one
    redelivered: bool = False
    headers: Mapping[str, Any] = field(default_factory=dict)
    content_type: str | None = None
    source: str | None = None  # the AMQP user-id, verified by the broker against the connection
    exchange: str | None = None  # the exchange it was published to (set by the broker)
    problem: tuple[str, str] | None = None  # (property, what is wrong): refused before any flow sees it
    digest: str = ""  # the body's SHA-256, hex; computed when not given
    original_source: str | None = None  # a replay's first sender, as our own dead letter recorded it
    delivery_tag: int | None = None  # the broker's number for this delivery on its channel (for the logs)
    # The consumer will hold it and try again if a flow refuses it for want of an earlier message (decision 31)
    may_wait: bool = False

    hl7_id: str | None = None  # an HL7 v2 message's own id (MSH-3, MSH-4, MSH-10); computed
    # What a copy under the same key must match to be the same message, as processed_message stores it: for ER7
    # `er7:` and the content digest (integration.formats.er7_digest: segment terminators, trailing delimiters and
    # MSH-7 do not count), else `digest`. `digest` stays the body's SHA-256: the evidence in the audit's
    # `received` record (which adds er7ContentSha256) and in dead letters.
    content_digest: str = ""

    def __post_init__(self) -> None:
        if not self.digest:
            object.__setattr__(self, "digest", sha256(self.body).hexdigest())
        if self.hl7_id is None:
            object.__setattr__(self, "hl7_id", message_id_of(self.body))
        if not self.content_digest:
            er7 = er7_content_digest(self.body) if self.hl7_id else None
            object.__setattr__(self, "content_digest", ER7_DIGEST_PREFIX + er7 if er7 else self.digest)

    def same_content(self, digest: str | None) -> bool:
        """Whether a digest stored for this key (or another copy's) is this message's: its content digest, or
        its raw SHA-256 (rows stored before the ER7 digest existed)."""
        return digest in (None, self.content_digest, self.digest)

    @property
    def key(self) -> str:
        """The idempotency key within the flow: an HL7 v2 message's own id (its MSH-10 under MSH-3 and MSH-4,
        as the MLLP listener names it), else the sender's message-id, else the body's SHA-256.

        The body's hash is stored beside it, so that a message-id reused for other content is told
        apart from a redelivery (decision 12): an ER7 message resent under its MSH-10 is a redelivery (its
        outputs republished, nothing changed), whatever AMQP message-id it came with; another message under
        that MSH-10 is a reused id (decision 27)."""
        return self.hl7_id or self.message_id or "sha256:" + self.digest

    @property
    def sender(self) -> str | None:
        """Who sent it: a replay's first sender, else the AMQP user-id the broker verified."""
        return self.original_source or self.source

    @property
    def stored_key(self) -> str:
        """The key the store remembers it under: the idempotency key scoped by its sender, so that two
        senders that happen to use one message-id never meet (decision 12). `key` names it everywhere else."""
        return f"{self.sender}/{self.key}" if self.sender else self.key


class Disposition(StrEnum):
    """What became of one delivery; all but FAILED may be acked. Logged and counted (metrics) as the value."""

    PROCESSED = "processed"
    REPLAYED_OUTPUTS = "replayed-outputs"  # processed before: its stored outputs published again
    DUPLICATE_IN_BATCH = "duplicate-in-batch"  # a second copy within one batch, settled with the first
    DEAD_LETTERED = "dead-lettered"
    FAILED = "failed"  # our side failed; back to its queue
    WAITING = "waiting"  # refused for want of an earlier message: held unacked and tried again (decision 31)


@dataclass(frozen=True, slots=True)
class Outcome:
    disposition: Disposition
    outputs: int
    patient: str | None = None
    error: str | None = None  # a dead letter's reason code, or the exception's type of a failure of ours
    reason: str | None = None  # a dead letter's reason as its header says it (one line, CPR numbers masked)

    @property
    def ackable(self) -> bool:
        return self.disposition not in (Disposition.FAILED, Disposition.WAITING)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The few quick retries of a durable step before the consumer's wait for the dependency takes over."""

    attempts: int = 3
    seconds: float = 2.0
    initial_wait: float = 0.05
    max_wait: float = 0.5

    def retrying(self) -> Retrying:
        return Retrying(
            retry=retry_if_exception_type(Transient),
            stop=stop_after_attempt(self.attempts) | stop_after_delay(self.seconds),
            wait=wait_exponential_jitter(multiplier=self.initial_wait, max=self.max_wait, jitter=self.initial_wait),
            reraise=True,
        )


@dataclass
class _Batch:
    """What one batch has decided, before anything is published or committed, and how far its settling got."""

    now: datetime
    outcomes: dict[int, Outcome] = field(default_factory=dict)
    entries: list[AuditEntry] = field(default_factory=list)
    processed: list[tuple[str, str, str, list[StoredOutput]]] = field(default_factory=list)
    changes: StateChanges = StateChanges()
    to_publish: list[tuple[Delivery, StoredOutput, str | None]] = field(default_factory=list)
    dead_letters: list[tuple[Delivery, Rejected]] = field(default_factory=list)
    answers: dict[int, FlowResult] = field(default_factory=dict)  # id(delivery) → what its refusal answers
    failures: list[Failure] = field(default_factory=list)
    firsts: dict[tuple[str, str], Delivery] = field(default_factory=dict)
    committed: bool = False
    confirmed: set[int] = field(default_factory=set)  # positions in to_publish the broker confirmed
    # Each patient's course as the store gave it the first time the plan read it: every later read of the plan
    # gets the same, so the whole plan decides from one version — the one the commit checks (decision 31).
    courses_read: dict[str, Course | None] = field(default_factory=dict)
    published_recorded: bool = False


class Held:
    """A batch the caller holds through an outage, across its retries: the plans made for it and the dead letters
    the broker confirmed, so that a retry repeats no durable step (decision 13). Deliveries are known by
    identity: the caller passes the same Delivery objects to every retry, and holds them meanwhile."""

    def __init__(self) -> None:
        self._plans: dict[tuple[str, tuple[int, ...]], _Batch] = {}
        self._dead_lettered: set[int] = set()
        self._refusals: dict[int, tuple[Rejected, FlowResult | None]] = {}  # dead-lettered: refused again on a re-plan

    def plan(self, how: str, deliveries: Sequence[Delivery]) -> _Batch | None:
        return self._plans.get((how, tuple(map(id, deliveries))))

    def keep(self, how: str, deliveries: Sequence[Delivery], batch: _Batch) -> _Batch:
        self._plans[(how, tuple(map(id, deliveries)))] = batch
        return batch

    def drop(self, how: str, deliveries: Sequence[Delivery]) -> None:
        """A plan that failed for a reason other than an outage: it will not be followed again."""
        self._plans.pop((how, tuple(map(id, deliveries))), None)

    def dead_lettered(self, delivery: Delivery) -> bool:
        return id(delivery) in self._dead_lettered

    def confirm_dead_letter(self, delivery: Delivery) -> None:
        self._dead_lettered.add(id(delivery))

    def keep_refusals(self, batch: _Batch) -> None:
        """Before a plan is dropped for a re-plan (a Conflict): its refusals the broker already dead-lettered stay
        refusals, with their answers — a re-plan that took one of them would leave it processed and in the
        dead-letter queue at once."""
        for delivery, rejection in batch.dead_letters:
            if id(delivery) in self._dead_lettered:
                self._refusals[id(delivery)] = (rejection, batch.answers.get(id(delivery)))

    def refusal(self, delivery: Delivery) -> tuple[Rejected, FlowResult | None] | None:
        return self._refusals.get(id(delivery))


class _BatchState:
    """The store as the flows see it during a batch: with what earlier messages of the batch received,
    so that two copies of one MedCom message in one batch are still one message and one duplicate, and
    with the courses they changed, so that a discharge and its visitation in one batch see each other."""

    def __init__(self, store: Store, batch: _Batch) -> None:
        self._store = store
        self._batch = batch

    def course(self, patient: str) -> Course | None:
        """The patient's course as the last earlier message of the batch left it, else as stored when the batch
        first read it (a course another consumer changed meanwhile is the commit's Conflict, never half seen)."""
        ours = [c for c in self._batch.changes.courses if c.patient == patient]
        return ours[-1] if ours else read_course(self._store, self._batch, patient)

    def requester(self, thread_id: str) -> str | None:
        return self._store.requester(thread_id)

    def received(self, header_id: str) -> EarlierMessage | None:
        ours = [r for r in self._batch.changes.received if r.header_id == header_id]
        stored = self._store.received(header_id)
        if not ours:
            return stored
        first = stored or EarlierMessage(frozenset(), ours[0].code, ours[0].ack)
        contents = first.contents | {r.content for r in ours if r.content is not None}
        return EarlierMessage(first.bundle_ids | {r.bundle_id for r in ours}, first.code, first.ack, contents)

    def bundle_header(self, bundle_id: str) -> str | None:
        ours = next((r.header_id for r in self._batch.changes.received if r.bundle_id == bundle_id), None)
        return ours or self._store.bundle_header(bundle_id)

    def outbound(self, header_id: str) -> OutboundStatus | None:
        return self._store.outbound(header_id)


def read_course(store: Store, batch: _Batch, patient: str) -> Course | None:
    """The patient's course as stored when `batch`'s plan first read it (`_Batch.courses_read`)."""
    if patient not in batch.courses_read:
        batch.courses_read[patient] = store.course(patient)
    return batch.courses_read[patient]


def _lookup_keys(delivery: Delivery) -> list[tuple[str, str]]:
    """The store keys that may hold what is known of `delivery`: its sender-scoped key, and the bare key
    a store written before keys were scoped holds (a message processed then and redelivered now) — unless
    the bare key holds a `/`: then it may be another sender's scoped key (`rehab-hospital/X` sent by a GP)."""
    scoped = (delivery.flow, delivery.stored_key)
    return [scoped] if "/" in delivery.key else [scoped, (delivery.flow, delivery.key)]


def _earlier(known: Mapping[tuple[str, str], EarlierDelivery], delivery: Delivery) -> EarlierDelivery | None:
    return next((known[k] for k in _lookup_keys(delivery) if k in known), None)


def log_context(delivery: Delivery) -> dict[str, Any]:
    """What every log line about one delivery carries (bound once per message): its flow and its correlation
    id, the idempotency key (the sender's message-id, else `sha256:` and the body's hash) as one line,
    CPR numbers masked — the same id the consumer's line per message gives —, and the broker's delivery tag."""
    context: dict[str, Any] = {"flow": delivery.flow, "correlation_id": one_line(delivery.key)}
    if delivery.delivery_tag is not None:
        context["delivery_tag"] = delivery.delivery_tag
    return context


def _no_fault(_point: str) -> None:
    """Production has no fault injection."""


class Processor:
    def __init__(
        self,
        handlers: Mapping[str, Handler],
        store: Store,
        bus: Bus,
        clock: Callable[[], datetime],
        retry: RetryPolicy = RetryPolicy(),
        unprocessable: Unprocessable | None = None,
        attempts: int = FLOW_ATTEMPTS,
        fault: Callable[[str], None] = _no_fault,
    ) -> None:
        self._handlers = handlers
        self._store = store
        self._bus = bus
        self._clock = clock
        self._retry = retry
        self._unprocessable = unprocessable
        self._attempts = attempts
        self._fault = fault
        self._acks: list[AuditEntry] = []  # "acked" records noted, not yet written (note_acknowledged)

    def _durably(self, step: Callable[[], Any]) -> Any:
        return self._retry.retrying()(step)

    def process(self, delivery: Delivery) -> Outcome:
        return self.process_batch([delivery])[0]

    def process_batch(self, deliveries: Sequence[Delivery], held: Held | None = None) -> list[Outcome]:
        """Do every durable step for these deliveries; the caller may ack each whose outcome is ackable.

        A Conflict (another consumer changed a course the batch read, before its commit: decision 31) plans the
        batch again at once from the courses as they now stand, spending no attempt, up to CONFLICT_REPLANS
        times; then its deliveries go back to their queue uncounted (FAILED without a failure recorded).

        Raises Transient when a dependency stays unavailable (nothing is lost: the caller holds the
        deliveries and calls again, with the same `held`), ConnectionLost when the broker connection is gone."""
        held = Held() if held is None else held
        for replan in range(CONFLICT_REPLANS + 1):
            try:
                return self._process_together(deliveries, held)
            except Conflict as conflict:
                if (plan := held.plan("together", deliveries)) is not None:
                    held.keep_refusals(plan)  # what the broker dead-lettered stays refused
                held.drop("together", deliveries)
                log.info("a course changed under the batch: planned again", rows=conflict.count, replan=replan + 1)
            except (Transient, ConnectionLost):
                raise
            except Exception as exc:  # StoreRefused, or a defect outside the flows
                return self._one_at_a_time(deliveries, held, exc)
        log.warning("courses kept changing under the batch: returned to its queue", deliveries=len(deliveries))
        return [Outcome(Disposition.FAILED, 0, error="Conflict") for _ in deliveries]

    def _one_at_a_time(self, deliveries: Sequence[Delivery], held: Held, exc: Exception) -> list[Outcome]:
        """A batch that failed outside its flows: find the delivery it belongs to."""
        held.drop("together", deliveries)
        if len(deliveries) > 1:
            log.warning("batch failed; processing its deliveries one at a time", error=type(exc).__name__)
            return [outcome for d in deliveries for outcome in self.process_batch([d], held)]
        return [self._fail_alone(deliveries[0], exc, held)]

    def acknowledged(self, acked: Sequence[tuple[Delivery, Outcome]]) -> None:
        """Audit the acks now (after they happened: a lost record here loses no message)."""
        self.note_acknowledged(acked)
        self.flush_acknowledged()

    def note_acknowledged(self, acked: Sequence[tuple[Delivery, Outcome]]) -> None:
        """Audit the acks with the next batch's "published" records, in its transaction (decision 29), or at
        `flush_acknowledged`: the consumer's way, one transaction fewer per batch. A lost record here loses no
        message: it says what the broker was told, after it was told."""
        self._acks += [self._entry("acked", d, o.patient) for d, o in acked]
        if len(self._acks) >= MAX_UNRECORDED_ACKS:
            self.flush_acknowledged()

    def unrecorded_acks(self) -> list[AuditEntry]:
        """The "acked" records noted and not written yet: the consumer hands them to the processor of its next
        connection (`carry_acks`), so that a reconnection loses none."""
        return list(self._acks)

    def carry_acks(self, entries: Sequence[AuditEntry]) -> None:
        """ "acked" records an earlier processor noted and could not write: written with this one's."""
        self._acks = [*entries, *self._acks]

    def flush_acknowledged(self) -> None:
        """Record the acks noted and not recorded yet (the consumer, when idle and when it stops). Raises
        Transient when the store stays unavailable (they are kept for the next try)."""
        if self._acks:
            entries = self._acks
            self._durably(lambda: self._store.record(entries, self._clock()))
            self._acks = []

    def probe(self) -> None:
        """Raise Transient while the audit store is unavailable (the consumer's readiness check)."""
        self._store.head()

    # -- planning ------------------------------------------------------------------------------
    def _process_together(self, deliveries: Sequence[Delivery], held: Held) -> list[Outcome]:
        batch = held.plan("together", deliveries) or held.keep("together", deliveries, self._plan_all(deliveries, held))
        self._settle(batch, held)
        return [batch.outcomes[i] for i in range(len(deliveries))]

    def _plan_all(self, deliveries: Sequence[Delivery], held: Held) -> _Batch:
        now = self._clock()
        keys = [k for d in deliveries for k in _lookup_keys(d)]
        earlier: dict[tuple[str, str], EarlierDelivery] = self._durably(lambda: self._store.deliveries(keys))
        batch = _Batch(now)
        for index, delivery in enumerate(deliveries):
            with structlog.contextvars.bound_contextvars(**log_context(delivery)):
                self._plan_one(batch, index, delivery, _earlier(earlier, delivery), now, held.refusal(delivery))
        return batch

    def _plan_one(
        self,
        batch: _Batch,
        index: int,
        delivery: Delivery,
        earlier: EarlierDelivery | None,
        now: datetime,
        refused: tuple[Rejected, FlowResult | None] | None = None,
    ) -> None:
        received = self._received(delivery)
        if refused is not None:  # dead-lettered by an earlier plan of this batch (see Held.keep_refusals)
            self._plan_rejection(batch, index, delivery, refused[0], received, refused[1])
            return
        if delivery.problem is not None:  # refused for its properties: no copy of it stands for another
            self._plan_rejection(batch, index, delivery, InvalidInput(*delivery.problem), received)
            return
        if earlier is not None and earlier.processed:  # the store decides, wherever the copy sits in the batch
            self._plan_known(batch, index, delivery, earlier, received)
            return
        first = batch.firsts.setdefault((delivery.flow, delivery.stored_key), delivery)
        if first is not delivery:
            self._plan_copy(batch, index, delivery, first, received)
        else:
            self._plan(batch, index, delivery, received, earlier.failures if earlier else 0, now)

    def _plan_known(
        self, batch: _Batch, index: int, delivery: Delivery, earlier: EarlierDelivery, received: AuditEntry
    ) -> None:
        """A key processed before: the same body is a redelivery (its stored outputs republished once per
        batch, a further copy settled with it); another body is a reused id — compared with what the
        store holds, not with a copy that happens to come first in the batch."""
        if not delivery.same_content(earlier.digest):
            self._plan_rejection(batch, index, delivery, self._reused(delivery, earlier.at), received)
        elif batch.firsts.setdefault((delivery.flow, delivery.stored_key), delivery) is delivery:
            self._plan_republish(batch, index, delivery, earlier.outputs)
        else:
            self._settle_copy(batch, index, delivery)

    def _received(self, delivery: Delivery) -> AuditEntry:
        return self._entry(
            "received",
            delivery,
            None,
            sha256=delivery.digest,
            **_er7_digest(delivery),
            redelivered=delivery.redelivered,
            source=delivery.source,
            exchange=delivery.exchange,
            **({"originalSource": delivery.original_source} if delivery.original_source else {}),
        )

    def _plan(
        self, batch: _Batch, index: int, delivery: Delivery, received: AuditEntry, failures: int, now: datetime
    ) -> None:
        try:
            result = self._handlers[delivery.flow](delivery.body, now, _BatchState(self._store, batch))
        except Rejected as rejection:
            if not self._waits(batch, index, delivery, rejection):
                self._plan_rejection(batch, index, delivery, rejection, received)
            return
        except (Transient, ConnectionLost):  # the store went away while the flow read its state: an outage
            raise
        except Exception as exc:  # a defect in a flow: counted against this delivery; the batch goes on
            # the traceback is rendered, then CPR-masked, by the log's processors (integration.log)
            log.error("handler failed", error=type(exc).__name__, exc_info=exc, attempt=failures + 1)
            self._plan_failure(batch, index, delivery, exc, received, failures, now)
            return
        if isinstance(result, Refusal):
            if not self._waits(batch, index, delivery, result.rejection):
                self._plan_rejection(batch, index, delivery, result.rejection, received, result.answer)
            return
        self._fault("handled")
        patient = result.patient
        outputs = self._outputs(result)
        batch.entries += [
            AuditEntry(received.step, received.flow, received.message_id, received.detail, patient),
            self._entry("validated", delivery, patient),
            *self._facts(delivery, result),
            self._entry("transformed", delivery, patient, outputs=[o.message_id for o in outputs]),
        ]
        batch.processed.append((delivery.flow, delivery.stored_key, delivery.content_digest, outputs))
        batch.changes = batch.changes + result.state
        batch.to_publish += [(delivery, output, result.patient) for output in outputs]
        batch.outcomes[index] = Outcome(Disposition.PROCESSED, len(outputs), patient)

    @staticmethod
    def _waits(batch: _Batch, index: int, delivery: Delivery, rejection: Rejected) -> bool:
        """Whether this refusal waits instead (decision 31): one for want of an earlier message, while the consumer
        may still hold the delivery. Nothing of it is recorded or sent; the consumer tries it again."""
        if not (delivery.may_wait and rejection.awaits_earlier_message):
            return False
        log.info("waiting for an earlier message of the same course", reason=rejection.reason)
        batch.outcomes[index] = Outcome(Disposition.WAITING, 0, error=rejection.reason)
        return True

    @staticmethod
    def _outputs(result: FlowResult) -> list[StoredOutput]:
        return [
            StoredOutput(
                o.route.exchange,
                o.route.routing_key,
                o.id,
                fhir_json.dumps(o.message),
                o.content_type,
                o.message["entry"][0]["resource"]["id"] if o.expects_ack else None,
                result.patient if o.expects_ack else None,
            )
            for o in result.outgoing
        ]

    def _facts(self, delivery: Delivery, result: FlowResult) -> list[AuditEntry]:
        return [self._entry(f"fact:{fact.kind}", delivery, result.patient, **fact.detail) for fact in result.facts]

    def _reused(self, delivery: Delivery, first_at: str | None) -> ReusedMessageId:
        metrics.REUSED_MESSAGE_IDS.labels(delivery.flow).inc()
        log.warning("a message-id was reused for other content")
        when = f" (first processed {first_at})" if first_at else " (earlier in the same batch)"
        return ReusedMessageId(
            "message-id",
            f"'{one_line(delivery.key, 100)}' was already used for a message with other content{when}; "
            "every message needs a message-id of its own",
        )

    def _plan_copy(self, batch: _Batch, index: int, delivery: Delivery, first: Delivery, received: AuditEntry) -> None:
        """A second copy in one batch (a sender's retry after a lost confirm): the redelivery it is, or a reused id."""
        if first.content_digest != delivery.content_digest:
            self._plan_rejection(batch, index, delivery, self._reused(delivery, None), received)
            return
        self._settle_copy(batch, index, delivery)

    def _settle_copy(self, batch: _Batch, index: int, delivery: Delivery) -> None:
        log.info("second copy of a message in one batch: settled with the first")
        batch.entries.append(self._entry("received", delivery, None, redelivered=delivery.redelivered, duplicate=True))
        batch.outcomes[index] = Outcome(Disposition.DUPLICATE_IN_BATCH, 0)

    def _plan_rejection(
        self,
        batch: _Batch,
        index: int,
        delivery: Delivery,
        rejection: Rejected,
        received: AuditEntry,
        answer: FlowResult | None = None,
    ) -> None:
        """Dead-letter it with its reason; `answer` (a Refusal's, e.g. a MedCom fatal-error ack) is sent too."""
        batch.dead_letters.append((delivery, rejection))
        if answer is not None:
            batch.answers[id(delivery)] = answer
        batch.entries += [
            received,
            self._entry("rejected", delivery, None, reason=mask_cpr(str(rejection)), code=rejection.reason),
            self._entry("dead-lettered", delivery, None, exchange=DEAD_LETTER_EXCHANGE, routingKey=delivery.flow),
        ]
        if answer is None:
            batch.outcomes[index] = Outcome(
                Disposition.DEAD_LETTERED, 0, error=rejection.reason, reason=one_line(rejection)
            )
            return
        # Sent and remembered as the flow says, but not marked processed: a replay from the dead-letter
        # queue after a fix must reach the flow again (whose duplicate rules then decide).
        outputs = self._outputs(answer)
        batch.entries += self._facts(delivery, answer)
        batch.changes = batch.changes + answer.state
        batch.to_publish += [(delivery, output, None) for output in outputs]
        batch.outcomes[index] = Outcome(
            Disposition.DEAD_LETTERED, len(outputs), error=rejection.reason, reason=one_line(rejection)
        )

    def _plan_failure(
        self,
        batch: _Batch,
        index: int,
        delivery: Delivery,
        exc: BaseException,
        received: AuditEntry,
        failures: int,
        now: datetime,
    ) -> None:
        """Our side failed on this delivery: count it; back to its queue, or given up on the last attempt."""
        error = type(exc).__name__
        batch.failures.append(Failure(delivery.flow, delivery.stored_key, error))
        attempt = failures + 1
        if attempt < self._attempts:
            batch.entries += [received, self._entry("failed", delivery, None, error=error, attempt=attempt)]
            batch.outcomes[index] = Outcome(Disposition.FAILED, 0, error=error)
            return
        # The last attempt: dead-letter it and tell the sender (not remembered: a replay after the fix
        # processes it and answers again).
        rejection = GivenUp(f"our processing failed on all {self._attempts} attempts ({error}); replay after the fix")
        answer = self._unprocessable(delivery.body, now) if self._unprocessable else None
        batch.dead_letters.append((delivery, rejection))
        batch.entries += [
            received,
            self._entry("gave-up", delivery, None, reason=str(rejection), code=rejection.reason, attempt=attempt),
            self._entry("dead-lettered", delivery, None, exchange=DEAD_LETTER_EXCHANGE, routingKey=delivery.flow),
        ]
        outputs = self._outputs(answer) if answer else []
        if answer:
            batch.entries += self._facts(delivery, answer)
            batch.to_publish += [(delivery, output, None) for output in outputs]
        batch.outcomes[index] = Outcome(
            Disposition.DEAD_LETTERED, len(outputs), error=rejection.reason, reason=one_line(rejection)
        )

    def _plan_republish(self, batch: _Batch, index: int, delivery: Delivery, stored: Sequence[StoredOutput]) -> None:
        """A redelivery: its stored outputs published again, byte for byte (MedCom receivers take a repeat as
        the duplicate it is) — except what must not go out any more: a message of ours stopped by the patient's
        notified death (`OutboundState.STOPPED`), or any message about a patient whose death was notified
        (`withhold_for_the_deceased` holds back new ones; a redelivery may not send old ones either). Each
        republished message of ours is audited under its patient; the held-back ones in a `withheld` record."""
        kept, withheld = self._republishable(stored, batch)
        log.info("redelivery of a processed message: republishing its stored outputs", outputs=len(kept))
        batch.entries.append(self._entry("received", delivery, None, redelivered=delivery.redelivered, duplicate=True))
        if withheld:
            log.warning(
                "redelivery: outputs for a deceased patient or stopped are not published again", withheld=len(withheld)
            )
            batch.entries.append(
                self._entry(
                    "republish-withheld",
                    delivery,
                    withheld[0].patient,
                    outputs=[o.message_id for o in withheld],
                    why="the patient's death was notified: nothing more is sent for the patient",
                )
            )
        batch.to_publish += [(delivery, output, output.patient) for output in kept]
        batch.outcomes[index] = Outcome(Disposition.REPLAYED_OUTPUTS, len(kept))

    def _republishable(
        self, stored: Sequence[StoredOutput], batch: _Batch
    ) -> tuple[list[StoredOutput], list[StoredOutput]]:
        """(to publish again, to hold back) of a redelivery's stored outputs (see `_plan_republish`)."""
        kept: list[StoredOutput] = []
        withheld: list[StoredOutput] = []
        for output in stored:
            status = self._durably(partial(self._store.outbound, output.awaits_ack)) if output.awaits_ack else None
            patient = output.patient or (status.patient if status else None)
            course = self._durably(partial(read_course, self._store, batch, patient)) if patient else None
            stopped = status is not None and status.state is OutboundState.STOPPED
            (withheld if stopped or (course is not None and course.deceased) else kept).append(
                replace(output, patient=patient) if patient != output.patient else output
            )
        return kept, withheld

    def _fail_alone(self, delivery: Delivery, exc: Exception, held: Held) -> Outcome:
        """A delivery that failed outside its flow even on its own (StoreRefused, a defect): count it like a
        flow failure. If even that cannot be recorded, it goes back to its queue uncounted."""
        with structlog.contextvars.bound_contextvars(**log_context(delivery)):
            return self._fail_alone_in_context(delivery, exc, held)

    def _fail_alone_in_context(self, delivery: Delivery, exc: Exception, held: Held) -> Outcome:
        refused = isinstance(exc, StoreRefused)
        log.error(
            "delivery failed outside its flow",
            error=type(exc).__name__,
            reason=one_line(exc) if refused else None,
            exc_info=None if refused else exc,
        )
        try:
            batch = held.plan("alone", [delivery]) or held.keep("alone", [delivery], self._plan_alone(delivery, exc))
            self._settle(batch, held)
            return batch.outcomes[0]
        except (Transient, ConnectionLost):
            raise
        except Exception as again:
            held.drop("alone", [delivery])
            log.error("failure could not be recorded; returned to its queue", error=type(again).__name__)
            return Outcome(Disposition.FAILED, 0, error=type(exc).__name__)

    def _plan_alone(self, delivery: Delivery, exc: Exception) -> _Batch:
        now = self._clock()
        earlier = self._durably(lambda: self._store.deliveries(_lookup_keys(delivery)))
        previous = _earlier(earlier, delivery)
        batch = _Batch(now)
        self._plan_failure(batch, 0, delivery, exc, self._received(delivery), previous.failures if previous else 0, now)
        return batch

    # -- the durable steps ---------------------------------------------------------------------
    def _settle(self, batch: _Batch, held: Held) -> None:
        """Dead letters (one confirm window), then one commit of everything decided, then the outputs (one
        confirm window), then one commit of their "published" records with the acks noted before (decision 29).

        Each step done is marked in `batch` and `held`, so that settling the same plan again after an
        outage goes on where it stopped: nothing the broker confirmed is published again."""
        self._dead_letter_all(batch, held)
        if batch.dead_letters:
            self._fault("dead-lettered")
        if not batch.committed:
            self._durably(
                lambda: self._store.record(
                    batch.entries, batch.now, batch.processed, batch.changes, failures=batch.failures
                )
            )
            batch.committed = True
        self._fault("committed")
        self._durably(partial(self._publish_window, batch))
        if batch.confirmed and not batch.published_recorded:
            self._fault("published")
            acks = self._acks
            self._durably(lambda: self._store.record([*self._published_entries(batch), *acks], self._clock()))
            self._acks = self._acks[len(acks) :]
            batch.published_recorded = True
            self._fault("recorded")

    def _dead_letter_all(self, batch: _Batch, held: Held) -> None:
        """Copy the batch's rejected deliveries to the dead-letter exchange not confirmed yet, in one window."""
        todo = [(d, r) for d, r in batch.dead_letters if not held.dead_lettered(d)]
        if not todo:
            return

        def window() -> None:
            left = [(d, r) for d, r in todo if not held.dead_lettered(d)]
            try:
                self._bus.publish_all([self._dead_letter(d, r, batch.now) for d, r in left])
            except Unconfirmed as exc:
                self._confirm_dead_letters([left[i] for i in exc.confirmed], held)
                raise
            self._confirm_dead_letters(left, held)

        self._durably(window)

    @staticmethod
    def _confirm_dead_letters(confirmed: Sequence[tuple[Delivery, Rejected]], held: Held) -> None:
        for delivery, rejection in confirmed:
            held.confirm_dead_letter(delivery)
            metrics.DEAD_LETTERS.labels(delivery.flow, rejection.reason).inc()

    def _publish_window(self, batch: _Batch) -> None:
        """Publish the outputs the broker has not confirmed yet, in order, in one window; mark those confirmed."""
        todo = [i for i in range(len(batch.to_publish)) if i not in batch.confirmed]
        if not todo:
            return
        publications = [self._publication(batch.to_publish[i][1]) for i in todo]
        try:
            self._bus.publish_all(publications)
        except Unconfirmed as exc:
            batch.confirmed.update(todo[i] for i in exc.confirmed)
            raise
        batch.confirmed.update(todo)

    @staticmethod
    def _publication(output: StoredOutput) -> Publication:
        return Publication(
            output.exchange, output.routing_key, output.body, output.message_id, None, output.content_type
        )

    def _published_entries(self, batch: _Batch) -> list[AuditEntry]:
        """One "published" record per confirmed output, in publishing order."""
        return [
            self._entry(
                "published",
                delivery,
                patient,
                exchange=output.exchange,
                routingKey=output.routing_key,
                outputId=output.message_id,
                confirmed=True,
            )
            for position, (delivery, output, patient) in enumerate(batch.to_publish)
            if position in batch.confirmed
        ]

    def _dead_letter(self, delivery: Delivery, rejection: Rejected, now: datetime) -> Publication:
        """A copy of the message with our reason, for `dlq list` and `dlq replay`. The sender's own headers
        go along (without any it forged in our name); nothing in ours holds a CPR number or a raw id."""
        headers = {
            **masked_headers({k: v for k, v in delivery.headers.items() if not k.startswith(RESERVED_HEADERS)}),
            "x-rehab-reason": one_line(rejection),
            "x-rehab-reason-code": rejection.reason,
            "x-rehab-flow": delivery.flow,
            "x-rehab-rejected-at": now.isoformat(),
            "x-rehab-original-message-id": one_line(delivery.key),
            "x-rehab-body-sha256": delivery.digest,
            "x-rehab-source": one_line(delivery.original_source or delivery.source or "unknown"),
        }
        return Publication(
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
