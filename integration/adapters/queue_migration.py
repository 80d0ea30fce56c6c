"""Re-declaring a queue that an earlier version declared with other arguments, without losing a message.

RabbitMQ fixes a queue's `x-` arguments when the queue is first declared; a later declaration with
different ones is refused (406 PRECONDITION_FAILED, "inequivalent arg"), and a quorum queue's delivery
limit from an argument wins over a policy's higher one. So a release that changes an argument (this one
raised `x-delivery-limit` from 5 to 50, decision 13) cannot take effect on an existing queue by
declaring it again. `integration topology apply` finds such queues and names them;
`integration topology apply --migrate` re-creates each one (decision 16):

1. refuse while a consumer is attached (stop `integration run` first: it would take messages mid-move);
2. move every message into a holding queue `<queue>.migrating` — each copy confirmed by the broker
   before the original is acked — recording the sender's verified user-id in `x-rehab-original-source`;
3. unbind the queue from every exchange first, so that nothing new reaches it (a quorum queue cannot be
   deleted "only if empty"), empty it, wait a moment for publishes already routed, and delete it only
   when it is still empty and unused; declare it with this release's arguments and bind it again;
4. move the messages back: into an inbound flow queue through `rehab.replay`, the one exchange on which
   the consumer believes `x-rehab-original-source` (so the audit still names the real sender); into any
   other queue through the default exchange;
5. delete the holding queue once it is empty.

A crash at any step leaves every message in one of the two queues, and running the command again
finishes the move (a holding queue left behind is emptied into its queue first). A sender publishing in
the moments between unbind and re-declaration gets a negative confirm (its exchange's alternate route
refuses it) and, doing what the Delivery section asks, publishes again.

Drives the broker through `RabbitConnection`'s operations only (each refusable one on a side channel of its
own); `rabbitmq.py` alone speaks pika.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from integration.adapters.rabbitmq import OperationRefused, QueueOperations, RabbitConnection, Received, drain
from integration.errors import ConfigurationError, InvalidInput
from integration.topology import (
    DEAD_LETTER_EXCHANGE,
    FLOWS,
    REPLAY_EXCHANGE,
    RESERVED_HEADERS,
    RETIRED_EXCHANGES,
    Queue,
    bindings,
    queues,
)

HOLDING_SUFFIX = ".migrating"
ORIGINAL_SOURCE = "x-rehab-original-source"
_BATCH = 500  # messages taken from a queue before their copies are confirmed and they are acked
_SETTLE = 1.0  # seconds for publishes routed before the unbind to land
_PRECONDITION_FAILED = 406
_NOT_FOUND = 404
_FLOW_BY_QUEUE = {f.queue: f for f in FLOWS}


@dataclass(frozen=True, slots=True)
class QueueState:
    name: str
    messages: int
    consumers: int


def holding_queue(name: str) -> str:
    return name + HOLDING_SUFFIX


def apply(connection: RabbitConnection, migrating: bool = False) -> list[str]:
    """`integration topology apply`: the whole topology, after re-creating (when `migrating`) the queues an
    earlier release declared with other arguments. Returns what was done, one line each. Raises
    ConfigurationError naming the queues when some differ and `migrating` is false, or when the broker
    refuses; ConnectionLost when it goes away."""
    differing = differing_queues(connection)
    if differing and not migrating:
        names = ", ".join(f"{q.name} ({q.messages} message(s))" for q in differing)
        raise ConfigurationError(
            f"queue(s) declared by an earlier release with other arguments: {names}; stop `integration run`, "
            "then `integration topology apply --migrate` re-creates them and keeps every message"
        )
    done = [migrate(connection, state) for state in differing]
    return done + connection.apply_topology()


def differing_queues(connection: RabbitConnection) -> list[QueueState]:
    """The topology's queues that exist with arguments other than this release's (or that a crashed
    migration left a holding queue for). Declares missing queues as a side effect, like `apply` would.
    Raises ConnectionLost when the broker goes away."""
    differing = []
    for queue in queues():
        refused = _declare(connection, queue)
        if refused is not None or _state(connection, holding_queue(queue.name)) is not None:
            state = _state(connection, queue.name)
            if state is not None:
                differing.append(state)
    return differing


def migrate(connection: RabbitConnection, state: QueueState) -> str:
    """Re-create one queue with this release's arguments, keeping its messages (the steps above).
    Returns a line saying what was done. Raises ConfigurationError when a consumer is attached or the
    queue is not ours; ConnectionLost when the broker goes away (run again: nothing is lost)."""
    queue = next((q for q in queues() if q.name == state.name), None)
    if queue is None:
        raise ConfigurationError(f"queue {state.name}: not part of the topology; not migrated")
    current = _state(connection, queue.name)
    if current is not None and current.consumers:
        raise ConfigurationError(
            f"queue {queue.name}: {current.consumers} consumer(s) attached; stop `integration run` and migrate again"
        )
    holding = holding_queue(queue.name)
    _declare_holding(connection, holding)
    moved_out = 0
    if current is not None:
        _unbind(connection, queue.name)
        moved_out = _move(connection, queue.name, lambda m: _out(connection, queue.name, holding, m))
        time.sleep(_SETTLE)
        moved_out += _move(connection, queue.name, lambda m: _out(connection, queue.name, holding, m))
        _delete_if_empty(connection, queue.name)
    if _declare(connection, queue) is not None:
        raise ConfigurationError(f"queue {queue.name}: still refused after re-creation; see the broker's log")
    _bind(connection, queue.name)
    moved_back = _move(connection, holding, lambda m: _back(connection, queue.name, m))
    _delete_if_empty(connection, holding)
    return f"queue {queue.name} re-created with this release's arguments ({moved_out} moved out, {moved_back} back)"


def _declare(connection: RabbitConnection, queue: Queue) -> tuple[int, str] | None:
    """Declare on a channel of its own (a refusal closes the channel). None, or (reply code, text)."""
    with _side(connection) as channel:
        try:
            channel.declare_queue(queue.name, queue.arguments)
        except OperationRefused as exc:
            if exc.code != _PRECONDITION_FAILED:
                raise ConfigurationError(f"queue {queue.name}: the broker refused it ({exc.code})") from None
            return exc.code, exc.text
    return None


def _state(connection: RabbitConnection, name: str) -> QueueState | None:
    with _side(connection) as channel:
        try:
            messages, consumers = channel.queue_counts(name)
        except OperationRefused as exc:
            if exc.code == _NOT_FOUND:
                return None
            raise ConfigurationError(f"queue {name}: the broker refused to describe it ({exc.code})") from None
    return QueueState(name, messages, consumers)


def _declare_holding(connection: RabbitConnection, name: str) -> None:
    with _side(connection) as channel:
        channel.declare_queue(name, {"x-queue-type": "quorum"})


def _unbind(connection: RabbitConnection, name: str) -> None:
    """Cut the queue off from every exchange (retired ones are deleted by `apply`, their bindings with them)."""
    for exchange in RETIRED_EXCHANGES:
        with _side(connection) as channel:
            channel.delete_exchange(exchange)
    for binding in (b for b in bindings() if b.queue == name):
        with _side(connection) as channel:
            try:
                channel.unbind_queue(name, binding.exchange, binding.routing_key)
            except OperationRefused as exc:
                if exc.code != _NOT_FOUND:  # an exchange an earlier release did not have
                    why = f"queue {name}: not unbound from {binding.exchange} ({exc.code})"
                    raise ConfigurationError(why) from None


def _bind(connection: RabbitConnection, name: str) -> None:
    for binding in (b for b in bindings() if b.queue == name):
        with _side(connection) as channel:
            channel.bind_queue(name, binding.exchange, binding.routing_key)


def _delete_if_empty(connection: RabbitConnection, name: str) -> None:
    """Delete a queue that is empty and unused. Quorum queues refuse the broker's own if-empty check, so
    this checks first, on a queue nothing is routed to any more (see `migrate`)."""
    state = _state(connection, name)
    if state is None:
        return
    if state.messages or state.consumers:
        raise ConfigurationError(
            f"queue {name}: not deleted (it holds {state.messages} message(s), {state.consumers} consumer(s)); "
            "run again"
        )
    with _side(connection) as channel:
        deleted = channel.delete_queue(name)
    if deleted:  # cannot happen with nothing routed to it; said loudly if it ever does
        raise ConfigurationError(f"queue {name}: {deleted} message(s) arrived while it was deleted and are lost")


def _move(connection: RabbitConnection, source: str, publish: Callable[[Received], None]) -> int:
    """Take messages from `source` in batches; publish each (confirmed) and only then ack it."""
    moved = 0
    while batch := drain(connection, source, _BATCH):
        for message in batch:
            publish(message)
            connection.ack(message.delivery_tag)
            moved += 1
    return moved


def _out(connection: RabbitConnection, name: str, holding: str, message: Received) -> None:
    """Into the holding queue. A flow message keeps its verified sender in our header; one whose properties
    the consumer would refuse (no user-id, a malformed message-id) is dead-lettered as the consumer would,
    since its copy could no longer show what was wrong. Any other queue's messages keep every header."""
    flow = _FLOW_BY_QUEUE.get(name)
    content_type = message.content_type or "application/octet-stream"
    if flow is None:
        connection.publish("", holding, message.body, message.message_id or "", dict(message.raw_headers), content_type)
    elif message.problem is not None:
        field, why = message.problem
        headers = _own_headers(message) | {
            "x-rehab-reason": f"{field}: {why} (found while re-creating {name})",
            "x-rehab-reason-code": InvalidInput.reason,
            "x-rehab-flow": flow.name,
            "x-rehab-source": message.source or "unknown",
        }
        connection.publish(DEAD_LETTER_EXCHANGE, flow.name, message.body, "", headers, content_type)
    else:
        original = message.raw_headers.get(ORIGINAL_SOURCE) if message.exchange == REPLAY_EXCHANGE else None
        headers = _own_headers(message) | {ORIGINAL_SOURCE: original or message.source}
        connection.publish("", holding, message.body, message.message_id or "", headers, content_type)


def _back(connection: RabbitConnection, name: str, message: Received) -> None:
    flow = _FLOW_BY_QUEUE.get(name)
    content_type = message.content_type or "application/octet-stream"
    if flow is None:  # a dead-letter or parking queue: its messages keep every header, our own included
        connection.publish("", name, message.body, message.message_id or "", dict(message.raw_headers), content_type)
        return
    headers = _own_headers(message) | {
        ORIGINAL_SOURCE: message.raw_headers.get(ORIGINAL_SOURCE, "unknown"),
        "x-rehab-migrated": name,
    }
    connection.publish(REPLAY_EXCHANGE, flow.name, message.body, message.message_id or "", headers, content_type)


def _own_headers(message: Received) -> dict[str, Any]:
    """The sender's headers, without those only the broker or this service may set."""
    return {k: v for k, v in message.raw_headers.items() if not k.startswith(RESERVED_HEADERS)}


def _side(connection: RabbitConnection) -> AbstractContextManager[QueueOperations]:
    """A channel of its own for one operation: the broker refusing it closes that channel only."""
    return connection.side_channel("migrating")
