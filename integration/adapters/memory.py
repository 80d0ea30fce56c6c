"""Test helpers shipped with the package: an in-memory broker that routes like our RabbitMQ topology, and
settles deliveries as our consumer on RabbitMQ does (acked after the durable work, a failure of ours returned
to its queue, redelivered).

Used by the unit tests of the runtime and by `integration demo` when no broker is reachable.
It is not a substitute for the real broker in the adapter's own tests.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from integration.adapters import consumer
from integration.adapters.amqp_properties import read_properties
from integration.adapters.rabbitmq import Received
from integration.errors import TOPOLOGY, ConnectionLost, Transient, Unconfirmed
from integration.flows.results import FHIR_JSON
from integration.log import one_line
from integration.service import metrics
from integration.service.ports import Publication
from integration.service.processor import Delivery, Processor
from integration.topology import Flow, bindings, exchanges, queues

log = structlog.get_logger("integration.consumer")


@dataclass(frozen=True, slots=True)
class StoredMessage:
    body: bytes
    message_id: str | None
    headers: Mapping[str, Any] = field(default_factory=dict)
    content_type: str | None = None
    redelivered: bool = False
    user_id: str | None = None
    exchange: str = ""
    routing_key: str = ""
    returns: int = 0  # times it came back to its queue unacked; a quorum queue's delivery limit counts these


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: `*` is one word, `#` zero or more."""

    def match(p: list[str], k: list[str]) -> bool:
        if not p:
            return not k
        if p[0] == "#":
            return any(match(p[1:], k[i:]) for i in range(len(k) + 1))
        return bool(k) and (p[0] in ("*", k[0])) and match(p[1:], k[1:])

    return match(pattern.split("."), key.split("."))


class InMemoryBroker:
    """Exchanges, queues and bindings as in `integration.topology`; publish routes at once, through an
    exchange's alternate exchange when nothing else takes the message; a full queue (`x-max-length`)
    refuses it as RabbitMQ's `reject-publish` does, and `reject-publish-dlx` also dead-letters it.

    Every message it takes carries `user_id` as its AMQP user-id, as our RabbitMQ adapter's do.

    `get` takes a message for good (basic.get with auto-ack). `take` holds it unacked under a delivery tag
    until `ack` forgets it or `requeue` returns it to the head of its queue, redelivered; `close` returns
    every message still unacked, as the broker does when a consumer's connection ends. A message returned
    more often than its queue's `x-delivery-limit` is dead-lettered instead (reason `delivery_limit`), as a
    quorum queue does.
    """

    def __init__(self, user_id: str = "in-memory") -> None:
        self.user_id = user_id
        self.exchanges = {e.name: e for e in exchanges()}
        self.queues: dict[str, deque[StoredMessage]] = {q.name: deque() for q in queues()}
        self.arguments: dict[str, Mapping[str, Any]] = {q.name: q.arguments for q in queues()}
        self.bindings = [(b.exchange, b.queue, b.routing_key) for b in bindings()]
        self.unacked: dict[int, tuple[str, StoredMessage]] = {}  # delivery tag → (queue, message)
        self._tags = itertools.count(1)

    def bind(self, exchange: str, queue: str, routing_key: str) -> None:
        self.queues.setdefault(queue, deque())
        self.bindings.append((exchange, queue, routing_key))

    def _routes(self, exchange: str, routing_key: str) -> list[str]:
        kind = self.exchanges[exchange].type
        return [
            queue
            for source, queue, key in self.bindings
            if source == exchange
            and (
                kind == "fanout"
                or (kind == "direct" and key == routing_key)
                or (kind == "topic" and topic_matches(key, routing_key))
            )
        ]

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        message_id: str,
        headers: Mapping[str, Any] | None = None,
        content_type: str = FHIR_JSON,
    ) -> None:
        if exchange not in self.exchanges:
            raise Transient(f"no exchange {exchange}", "broker")
        targets = self._routes(exchange, routing_key)
        alternate = self.exchanges[exchange].arguments.get("alternate-exchange")
        if not targets and alternate:
            targets = self._routes(alternate, routing_key)
        if not targets:
            raise Transient(f"unroutable: {exchange} {routing_key}", TOPOLOGY)
        message = StoredMessage(
            body, message_id, dict(headers or {}), content_type, False, self.user_id, exchange, routing_key
        )
        refused = [queue for queue in targets if not self._enqueue(queue, message)]
        if refused:  # RabbitMQ nacks the publish when any queue refused it
            raise Transient(f"the broker refused the message for {exchange} {routing_key}", "broker")

    def publish_all(self, publications: Sequence[Publication]) -> None:
        """Each publication as `publish`; like the broker's confirms, each one is confirmed or refused on its own:
        Unconfirmed naming the confirmed positions when any was refused (the first refusal's reason)."""
        confirmed: set[int] = set()
        refusal: Transient | None = None
        for position, p in enumerate(publications):
            try:
                self.publish(p.exchange, p.routing_key, p.body, p.message_id, p.headers, p.content_type)
            except Transient as exc:
                refusal = refusal or exc
            else:
                confirmed.add(position)
        if refusal is not None:
            raise Unconfirmed(str(refusal), frozenset(confirmed), refusal.dependency)

    def _enqueue(self, queue: str, message: StoredMessage) -> bool:
        arguments = self.arguments.get(queue, {})
        limit = arguments.get("x-max-length")
        overflow = arguments.get("x-overflow", "drop-head")
        if limit is None or len(self.queues[queue]) < limit or overflow == "drop-head":
            self.queues[queue].append(message)
            while limit is not None and len(self.queues[queue]) > limit:
                self.queues[queue].popleft()
            return True
        if overflow == "reject-publish-dlx":
            self._dead_letter(queue, message, "maxlen")
        return False

    def _dead_letter(self, queue: str, message: StoredMessage, reason: str) -> None:
        """To the queue's dead-letter exchange, if it has one, with an `x-death` naming why; else dropped."""
        arguments = self.arguments.get(queue, {})
        dead_letter_exchange = arguments.get("x-dead-letter-exchange")
        if not dead_letter_exchange:
            return
        key = arguments.get("x-dead-letter-routing-key", message.routing_key)
        death = {"reason": reason, "queue": queue, "exchange": message.exchange, "routing-keys": [message.routing_key]}
        headers = {**message.headers, "x-death": [death]}
        dead = replace(
            message, headers=headers, exchange=dead_letter_exchange, routing_key=key, redelivered=False, returns=0
        )
        for target in self._routes(dead_letter_exchange, key):
            self._enqueue(target, dead)

    def get(self, queue: str) -> StoredMessage | None:
        """The message at the head of `queue`, taken for good (basic.get with auto-ack); None when empty."""
        messages = self.queues[queue]
        return messages.popleft() if messages else None

    def take(self, queue: str) -> tuple[int, StoredMessage] | None:
        """The message at the head of `queue` with its delivery tag, held unacked (basic.get); None when empty."""
        message = self.get(queue)
        if message is None:
            return None
        tag = next(self._tags)
        self.unacked[tag] = (queue, message)
        return tag, message

    def ack(self, delivery_tag: int) -> None:
        """The message is done with: forgotten. KeyError for a tag not held."""
        del self.unacked[delivery_tag]

    def requeue(self, delivery_tag: int) -> None:
        """basic.nack with requeue: the message goes back to the head of its queue, redelivered (or, past the
        queue's `x-delivery-limit`, to its dead-letter exchange). KeyError for a tag not held."""
        queue, message = self.unacked.pop(delivery_tag)
        returned = replace(message, redelivered=True, returns=message.returns + 1)
        limit = self.arguments.get(queue, {}).get("x-delivery-limit")
        if limit is not None and returned.returns > limit:
            self._dead_letter(queue, returned, "delivery_limit")
        else:
            self.queues[queue].appendleft(returned)

    def close(self) -> None:
        """Return every message still unacked to its queue, as the broker does when a consumer goes away."""
        for tag in sorted(self.unacked, reverse=True):  # the last taken goes back first: the order is kept
            self.requeue(tag)


def received_of(delivery_tag: int, message: StoredMessage) -> Received:
    """A stored message as the RabbitMQ adapter receives a delivery, its properties checked as it checks them."""
    checked = read_properties(message.message_id, message.user_id, message.content_type, message.headers)
    return Received(
        delivery_tag,
        message.body,
        checked.message_id,
        checked.headers,
        checked.content_type,
        message.redelivered,
        checked.user_id,
        message.routing_key,
        message.exchange,
        checked.problem,
        dict(message.headers),
    )


def delivery_of(flow: Flow, message: StoredMessage, delivery_tag: int = 0) -> Delivery:
    """The processor's view of a stored message: as the consumer sees a delivery (`consumer.delivery_of`)."""
    return consumer.delivery_of(flow, received_of(delivery_tag, message))


def drain_in_memory(broker: InMemoryBroker, processor: Processor, flows: Sequence[Flow]) -> int:
    """Process every message waiting on the flows' inbound queues, one delivery at a time, settling each as the
    consumer on RabbitMQ does (`integration.adapters.consumer`); returns how many were acked.

    A delivery is held unacked while the processor works on it. It is acked when its outcome is ackable, once
    the processor's durable work is done, and the ack audited. Otherwise (a failure of ours, which the
    processor counts) it is requeued: back to the head of its queue, redelivered, until the processor settles
    it (it gives up after its attempts) or the queue's delivery limit dead-letters it. A defect raised by the
    processor requeues the delivery too, and the drain goes on. A dependency unavailable (Transient) or the
    bus lost (ConnectionLost): the consumer would hold the delivery and wait; here it returns to its queue
    unacked, as when the consumer stops during the wait, and the exception is raised."""
    handled = 0
    while True:
        progressed = False
        for flow in flows:
            taken = broker.take(flow.queue)
            if taken is None:
                continue
            progressed = True
            handled += _settle(broker, processor, flow, *taken)
        if not progressed:
            return handled


def _settle(broker: InMemoryBroker, processor: Processor, flow: Flow, tag: int, message: StoredMessage) -> int:
    """Process one delivery held under `tag` and ack or requeue it (`drain_in_memory`). 1 when acked, else 0."""
    delivery = delivery_of(flow, message, tag)
    consumer.taken(flow)
    started = time.perf_counter()
    try:
        (outcome,) = processor.process_batch([delivery])
    except (Transient, ConnectionLost):
        broker.close()
        metrics.IN_FLIGHT.dec()  # back to its queue
        raise
    except Exception as exc:  # a defect: back to its queue, as the consumer does
        log.error("batch could not be processed; returned to its queue", error=type(exc).__name__, exc_info=exc)
        broker.requeue(tag)
        metrics.IN_FLIGHT.dec()
        return 0
    consumer.batch_settled(1, started)
    consumer.settled(flow, outcome, started)
    if not outcome.ackable:  # a failure of ours, counted: back to the queue until the processor gives up on it
        broker.requeue(tag)
        return 0
    broker.ack(tag)
    try:
        processor.acknowledged([(delivery, outcome)])
    except Transient as exc:
        log.warning("acks not audited", reason=one_line(exc), messages=1)
    return 1
