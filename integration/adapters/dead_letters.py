"""Dead letters, believed only as far as someone vouches for them, and their replay: shared by the `dlq` commands
(`integration.cli.dlq`) and the board's dead-letter page (`integration.web`).

What a dead letter says is believed only as far as someone vouches for it (`DeadLetter`): our `x-rehab-*`
headers only on a dead letter our processor published — straight to `rehab.dlx`, under a user that may
write it, without `x-death` (the processor drops any a sender set). A message the broker dead-lettered
itself (expired, its delivery limit, …) carries `x-death`, and whatever `x-rehab-*` headers it has, its
sender set: its reason is the broker's (`x-death`), its source the user-id RabbitMQ verified.

Every read and every replay is audited by the caller's `who` (the OS user; on the board, the board user too):
no message content, id or header goes into a read's record, so none can carry a CPR number into its detail.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from integration.adapters.amqp_properties import sender_headers, text_problem
from integration.adapters.rabbitmq import RabbitConnection, Received, drain
from integration.adapters.sql.store import AuditStore
from integration.log import masked_headers, one_line
from integration.service.audit_chain import AuditEntry
from integration.topology import ADMIN_USER, DEAD_LETTER_EXCHANGE, REPLAY_EXCHANGE, SERVICE_USER, Flow

EVERY_MESSAGE = 100_000
# Who may write `rehab.dlx` and `rehab.replay` in the deployed definitions; the command's own broker user is
# added (a development broker's one user, or a service user of another name).
DEAD_LETTER_WRITERS = frozenset({SERVICE_USER, ADMIN_USER})
# What the broker's reasons in x-death mean for an operator.
BROKER_REASONS = {
    "delivery_limit": "the delivery limit was reached (the consumer failed on it again and again)",
    "expired": "it expired (a time-to-live its sender or a policy set)",
    "maxlen": "it was pushed out of a full queue",
    "rejected": "a consumer rejected it without requeueing",
}
HANDLE_LETTERS = "bcdfghjkmnpqrstvwxz"  # no vowels (no words), no digits (never shaped like a CPR number)


def first_death(headers: Mapping[str, Any]) -> Mapping[str, Any]:
    """The newest `x-death` entry, or {} when the header is absent or not shaped as RabbitMQ writes it."""
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], Mapping):
        return deaths[0]
    return {}


def text_value(value: object) -> str | None:
    """A header's value when it is clean text (as we write ours), else None."""
    return value if isinstance(value, str) and text_problem(value) is None else None


def handle_of(message: Received) -> str:
    """A name for a dead letter that is safe to print and to type: from its message-id and body, so the
    same in every listing (identical dead letters share it), and never shaped like a CPR number."""
    digest = hashlib.sha256((message.message_id or "").encode() + b"\0" + message.body).digest()
    number, letters = int.from_bytes(digest[:8], "big"), []
    for _ in range(10):
        number, index = divmod(number, len(HANDLE_LETTERS))
        letters.append(HANDLE_LETTERS[index])
    return "dl-" + "".join(letters)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead letter, believing only what someone vouches for (see the module's docstring)."""

    message: Received
    ours: bool  # published by our processor: its x-rehab-* headers are ours
    handle: str

    @classmethod
    def read(cls, message: Received, own_user: str | None) -> DeadLetter:
        writers = DEAD_LETTER_WRITERS | ({own_user} if own_user else set())
        ours = (
            "x-death" not in message.raw_headers
            and message.exchange == DEAD_LETTER_EXCHANGE
            and message.source in writers
        )
        return cls(message, ours, handle_of(message))

    def _header(self, name: str) -> object:
        return self.message.raw_headers.get(name)

    @property
    def reason(self) -> str:
        if self.ours:
            reason = self._header("x-rehab-reason")
            return one_line(reason) if reason is not None else "no reason recorded"
        broker = first_death(self.message.raw_headers).get("reason")
        meaning = BROKER_REASONS.get(broker, "") if isinstance(broker, str) else ""
        return f"broker: {one_line(broker or 'unknown', 60)}" + (f", {meaning}" if meaning else "")

    @property
    def at(self) -> str:
        when = self._header("x-rehab-rejected-at") if self.ours else first_death(self.message.raw_headers).get("time")
        return one_line(when.isoformat() if isinstance(when, datetime) else when or "-", 40)

    @property
    def source(self) -> str:
        """Who sent the message: for our dead letter, the user-id it arrived with (our `x-rehab-source`); for
        the broker's, its verified user-id — or, when that is a user who replays (`rehab.replay`), the first
        sender our replay named."""
        if self.ours:
            return one_line(text_value(self._header("x-rehab-source")) or "unknown", 80)
        user = self.message.source
        replayed = text_value(self._header("x-rehab-original-source"))
        if user in DEAD_LETTER_WRITERS and replayed:
            return one_line(replayed, 80)
        return one_line(user or "unknown", 80)

    def line(self) -> str:
        """Id, handle, time, sender and reason, each one safe line."""
        message_id = one_line(self.message.message_id or "-", 120)
        return f"{message_id}  {self.handle}  {self.at}  from {self.source}  {self.reason}"


def audit_read(
    store: AuditStore,
    connection: RabbitConnection,
    command: str,
    flow: str,
    queue: str,
    read: int,
    who: Mapping[str, Any],
    **more: int,
) -> None:
    """Record that `command` read `read` messages of `queue`: by whom (`reader`), as which broker user. No
    message content, id or header goes into the record: none can carry a CPR number into its detail."""
    detail = {"command": command, "queue": queue, "messages": read, **who, "brokerUser": connection.user}
    store.record([AuditEntry("dlq-read", flow, "-", {**detail, **more})], datetime.now(UTC))


def read_letters(connection: RabbitConnection, queue: str) -> tuple[list[Received], list[DeadLetter]]:
    """Every message of `queue`, taken unacked (give each back with `connection.requeue` or `replay` it), and
    each read as a `DeadLetter`."""
    messages = drain(connection, queue, EVERY_MESSAGE)
    return messages, [DeadLetter.read(m, connection.user) for m in messages]


def replay_headers(letter: DeadLetter, dead_letter_queue: str, at: datetime) -> dict[str, Any]:
    """The sender's own headers (masked: they go on a message again), without ours, the broker's or any
    forged in their name, and what says this is a replay: from which queue, when, and who sent the message
    originally. The replay's own user-id is the operator's broker user (`RabbitConnection.publish` sets it)."""
    return {
        **masked_headers(sender_headers(letter.message.raw_headers)),
        "x-rehab-replayed-from": dead_letter_queue,
        "x-rehab-replayed-at": at.isoformat(),
        "x-rehab-original-source": letter.source,
    }


def replay(
    store: AuditStore, connection: RabbitConnection, flow: Flow, letter: DeadLetter, who: Mapping[str, Any]
) -> None:
    """Publish one dead letter to rehab.replay (confirmed), audit it (`replayed`, by `who`), then take it off
    the dead-letter queue."""
    now = datetime.now(UTC)
    message = letter.message
    headers = replay_headers(letter, flow.dead_letter_queue, now)
    connection.publish(
        REPLAY_EXCHANGE,
        flow.name,
        message.body,
        message.message_id or "",
        headers,
        message.content_type or "application/json",
    )
    detail = {
        "from": flow.dead_letter_queue,
        "exchange": REPLAY_EXCHANGE,
        **who,
        "brokerUser": connection.user,
        "originalSource": headers["x-rehab-original-source"],
        "handle": letter.handle,
    }
    store.record([AuditEntry("replayed", flow.name, message.message_id or "", detail)], now)
    connection.ack(message.delivery_tag)
