"""Test helpers shipped with the package: an in-memory broker that routes like our RabbitMQ topology.

Used by the unit tests of the runtime and by `integration demo` when no broker is reachable.
It is not a substitute for the real broker in the adapter's own tests.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from integration.adapters.amqp_properties import read_properties
from integration.errors import Transient
from integration.flows.results import FHIR_JSON
from integration.service.processor import Delivery, Processor
from integration.topology import Flow, bindings, exchanges, queues


@dataclass(frozen=True, slots=True)
class StoredMessage:
    body: bytes
    message_id: str | None
    headers: Mapping[str, Any] = field(default_factory=dict)
    content_type: str | None = None
    redelivered: bool = False
    user_id: str | None = None
    exchange: str = ""


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
    """

    def __init__(self, user_id: str = "in-memory") -> None:
        self.user_id = user_id
        self.exchanges = {e.name: e for e in exchanges()}
        self.queues: dict[str, deque[StoredMessage]] = {q.name: deque() for q in queues()}
        self.arguments: dict[str, Mapping[str, Any]] = {q.name: q.arguments for q in queues()}
        self.bindings = [(b.exchange, b.queue, b.routing_key) for b in bindings()]

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
            raise Transient(f"unroutable: {exchange} {routing_key}", "broker")
        message = StoredMessage(body, message_id, dict(headers or {}), content_type, False, self.user_id, exchange)
        refused = [queue for queue in targets if not self._enqueue(queue, message, routing_key)]
        if refused:  # RabbitMQ nacks the publish when any queue refused it
            raise Transient(f"the broker refused the message for {exchange} {routing_key}", "broker")

    def _enqueue(self, queue: str, message: StoredMessage, routing_key: str) -> bool:
        arguments = self.arguments.get(queue, {})
        limit = arguments.get("x-max-length")
        overflow = arguments.get("x-overflow", "drop-head")
        if limit is None or len(self.queues[queue]) < limit or overflow == "drop-head":
            self.queues[queue].append(message)
            while limit is not None and len(self.queues[queue]) > limit:
                self.queues[queue].popleft()
            return True
        dead_letter_exchange = arguments.get("x-dead-letter-exchange")
        if overflow == "reject-publish-dlx" and dead_letter_exchange:
            key = arguments.get("x-dead-letter-routing-key", routing_key)
            death = {"reason": "maxlen", "queue": queue, "exchange": message.exchange, "routing-keys": [routing_key]}
            dead = replace(message, headers={**message.headers, "x-death": [death]}, exchange=dead_letter_exchange)
            for target in self._routes(dead_letter_exchange, key):
                self._enqueue(target, dead, key)
        return False

    def get(self, queue: str) -> StoredMessage | None:
        messages = self.queues[queue]
        return messages.popleft() if messages else None


def delivery_of(flow: Flow, message: StoredMessage) -> Delivery:
    """The processor's view of a stored message, its properties checked as the RabbitMQ adapter checks them."""
    checked = read_properties(message.message_id, message.user_id, message.content_type, message.headers)
    return Delivery(
        flow.name,
        message.body,
        checked.message_id,
        message.redelivered,
        checked.headers,
        checked.content_type,
        checked.user_id,
        message.exchange,
        checked.problem,
    )


def drain_in_memory(broker: InMemoryBroker, processor: Processor, flows: Sequence[Flow]) -> int:
    """Process every message waiting on the flows' inbound queues, as the consumer would; returns how many
    were settled. As on RabbitMQ, a delivery that failed is not acked: it goes back to the head of its
    queue, redelivered, until the processor settles it (it gives up after its attempts)."""
    handled = 0
    while True:
        progressed = False
        for flow in flows:
            message = broker.get(flow.queue)
            if message is None:
                continue
            delivery = delivery_of(flow, message)
            outcome = processor.process(delivery)
            if not outcome.ackable:
                broker.queues[flow.queue].appendleft(replace(message, redelivered=True))
                progressed = True
                continue
            processor.acknowledged([(delivery, outcome)])
            handled += 1
            progressed = True
        if not progressed:
            return handled
