"""The `dlq` commands: list dead-lettered messages with their reasons, replay them after a fix, and list what
senders were refused. Each reads patient data, so each use is audited (who, from the process's credentials;
which queue; how many messages) before anything is shown; every id, time and reason is printed as one safe
line (`integration.log.one_line`). Like every command that reads, they need an existing audit store
(`integration.cli.audit.existing_store`: exit 66 without one, 69 while it is unreachable).

What a dead letter says is believed only as far as someone vouches for it (`DeadLetter`): our `x-rehab-*`
headers only on a dead letter our processor published — straight to `rehab.dlx`, under a user that may
write it, without `x-death` (the processor drops any a sender set). A message the broker dead-lettered
itself (expired, its delivery limit, …) carries `x-death`, and whatever `x-rehab-*` headers it has, its
sender set: its reason is the broker's (`x-death`), its source the user-id RabbitMQ verified.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import click
from rich.progress import Progress

from integration.adapters.amqp_properties import sender_headers, text_problem
from integration.adapters.rabbitmq import RabbitConnection, Received, drain
from integration.adapters.sql.store import AuditStore
from integration.bootstrap import broker_connection
from integration.cli.audit import existing_store, fail, reader, settings_or_exit
from integration.log import masked_headers, one_line
from integration.service.audit_chain import AuditEntry
from integration.topology import (
    ADMIN_USER,
    DEAD_LETTER_EXCHANGE,
    FLOWS,
    FLOWS_BY_NAME,
    REFUSED_QUEUE,
    REPLAY_EXCHANGE,
    SENDERS,
    SERVICE_USER,
    Flow,
)

EXIT_NOT_FOUND = 1
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
SENDER_EXCHANGES = {s.user: s.exchange for s in SENDERS}


@click.group()
def dlq() -> None:
    """Inspect and re-drive dead-lettered messages; list what senders were refused."""


def _flows(flow: str | None) -> Sequence[Flow]:
    return [FLOWS_BY_NAME[flow]] if flow else FLOWS


def _first_death(headers: Mapping[str, Any]) -> Mapping[str, Any]:
    """The newest `x-death` entry, or {} when the header is absent or not shaped as RabbitMQ writes it."""
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], Mapping):
        return deaths[0]
    return {}


def _text(value: object) -> str | None:
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
        broker = _first_death(self.message.raw_headers).get("reason")
        meaning = BROKER_REASONS.get(broker, "") if isinstance(broker, str) else ""
        return f"broker: {one_line(broker or 'unknown', 60)}" + (f", {meaning}" if meaning else "")

    @property
    def at(self) -> str:
        when = self._header("x-rehab-rejected-at") if self.ours else _first_death(self.message.raw_headers).get("time")
        return one_line(when.isoformat() if isinstance(when, datetime) else when or "-", 40)

    @property
    def source(self) -> str:
        """Who sent the message: for our dead letter, the user-id it arrived with (our `x-rehab-source`); for
        the broker's, its verified user-id — or, when that is a user who replays (`rehab.replay`), the first
        sender our replay named."""
        if self.ours:
            return one_line(_text(self._header("x-rehab-source")) or "unknown", 80)
        user = self.message.source
        replayed = _text(self._header("x-rehab-original-source"))
        if user in DEAD_LETTER_WRITERS and replayed:
            return one_line(replayed, 80)
        return one_line(user or "unknown", 80)

    def line(self) -> str:
        """Id, handle, time, sender and reason, each one safe line."""
        message_id = one_line(self.message.message_id or "-", 120)
        return f"{message_id}  {self.handle}  {self.at}  from {self.source}  {self.reason}"


def _audit_read(
    store: AuditStore, connection: RabbitConnection, command: str, flow: str, queue: str, read: int, **more: int
) -> None:
    """Record that `command` read `read` messages of `queue`: by whom (`reader`), as which broker user. No
    message content, id or header goes into the record: none can carry a CPR number into its detail."""
    detail = {"command": command, "queue": queue, "messages": read, **reader(), "brokerUser": connection.user}
    store.record([AuditEntry("dlq-read", flow, "-", {**detail, **more})], datetime.now(UTC))


@dlq.command("list")
@click.option("--flow", type=click.Choice(sorted(FLOWS_BY_NAME)), default=None)
def dlq_list(flow: str | None) -> None:
    """List dead-lettered messages with their reasons; they stay in the queue. Each line: the message-id
    (masked where it holds a CPR number), a handle (`dl-…`, which `dlq replay --id` also takes), when, the
    sender and the reason."""
    settings = settings_or_exit()
    with existing_store(settings) as store, broker_connection(settings) as connection:
        for f in _flows(flow):
            messages = drain(connection, f.dead_letter_queue, EVERY_MESSAGE)
            _audit_read(store, connection, "dlq list", f.name, f.dead_letter_queue, len(messages))
            click.echo(f"{f.dead_letter_queue}: {len(messages)} message(s)")
            for message in messages:
                click.echo(f"  {DeadLetter.read(message, connection.user).line()}")
            for message in messages:
                connection.requeue(message.delivery_tag)


def _replay_headers(letter: DeadLetter, dead_letter_queue: str, at: datetime) -> dict[str, Any]:
    """The sender's own headers (masked: they go on a message again), without ours, the broker's or any
    forged in their name, and what says this is a replay: from which queue, when, and who sent the message
    originally. The replay's own user-id is the operator's broker user (`RabbitConnection.publish` sets it)."""
    return {
        **masked_headers(sender_headers(letter.message.raw_headers)),
        "x-rehab-replayed-from": dead_letter_queue,
        "x-rehab-replayed-at": at.isoformat(),
        "x-rehab-original-source": letter.source,
    }


@dlq.command("replay")
@click.option("--flow", type=click.Choice(sorted(FLOWS_BY_NAME)), default=None)
@click.option("--id", "ids", multiple=True, help="a message-id or a handle (dl-…, from dlq list); repeatable")
@click.option("--all", "replay_all", is_flag=True, help="replay every dead-lettered message")
def dlq_replay(flow: str | None, ids: tuple[str, ...], replay_all: bool) -> None:
    """Send dead-lettered messages back to their flow's queue (through rehab.replay), after the cause was fixed.
    Exit 1 when an --id names no dead letter: the others are replayed, and one line says which were not found."""
    if not ids and not replay_all:
        raise click.UsageError("name messages with --id, or give --all")
    if ids and replay_all:
        raise click.UsageError("give --id or --all, not both: --all replays every dead letter, not only those named")
    settings = settings_or_exit()
    replayed, found = 0, set()
    with (
        existing_store(settings) as store,
        broker_connection(settings) as connection,
        Progress(transient=True) as progress,
    ):
        for f in _flows(flow):
            messages = drain(connection, f.dead_letter_queue, EVERY_MESSAGE)
            letters = [DeadLetter.read(m, connection.user) for m in messages]
            chosen = [d for d in letters if replay_all or {d.message.message_id, d.handle} & set(ids)]
            found |= {name for d in chosen for name in (d.message.message_id, d.handle)}
            _audit_read(
                store, connection, "dlq replay", f.name, f.dead_letter_queue, len(letters), replaying=len(chosen)
            )
            task = progress.add_task(f"replaying {f.dead_letter_queue}", total=len(chosen))
            for letter in chosen:
                _replay(store, connection, f, letter)
                replayed += 1
                progress.advance(task)
            taken = {d.message.delivery_tag for d in chosen}
            for message in messages:
                if message.delivery_tag not in taken:
                    connection.requeue(message.delivery_tag)
    click.echo(f"replayed {replayed} message(s)")
    if missing := [name for name in dict.fromkeys(ids) if name not in found]:
        queues = FLOWS_BY_NAME[flow].dead_letter_queue if flow else "any dead-letter queue"
        fail(EXIT_NOT_FOUND, f"not in {queues}: {', '.join(one_line(name, 80) for name in missing)}")


def _replay(store: AuditStore, connection: RabbitConnection, flow: Flow, letter: DeadLetter) -> None:
    """Publish one dead letter to rehab.replay (confirmed), audit it, then take it off the dead-letter queue."""
    now = datetime.now(UTC)
    message = letter.message
    headers = _replay_headers(letter, flow.dead_letter_queue, now)
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
        **reader(),
        "brokerUser": connection.user,
        "originalSource": headers["x-rehab-original-source"],
        "handle": letter.handle,
    }
    store.record([AuditEntry("replayed", flow.name, message.message_id or "", detail)], now)
    connection.ack(message.delivery_tag)
    click.echo(f"  replayed {letter.line()}")


@dlq.command("refused")
def dlq_refused() -> None:
    """List what senders published under a kind their exchange does not take (they got a negative confirm);
    the messages stay in rehab.inbound.refused. The user-id is the sender's broker user, verified by RabbitMQ."""
    settings = settings_or_exit()
    with existing_store(settings) as store, broker_connection(settings) as connection:
        messages = drain(connection, REFUSED_QUEUE, EVERY_MESSAGE)
        _audit_read(store, connection, "dlq refused", "refused", REFUSED_QUEUE, len(messages))
        click.echo(f"{REFUSED_QUEUE}: {len(messages)} message(s)")
        for message in messages:
            death = _first_death(message.raw_headers)
            # A sender may write its own exchange only, so its user names it; x-death's a sender can preset.
            exchange = SENDER_EXCHANGES.get(message.source or "") or death.get("exchange", "?")
            click.echo(
                f"  {one_line(message.message_id or '-', 120)}  {one_line(death.get('time', '-'), 40)}  "
                f"from {one_line(message.source or 'no valid user-id', 80)}  "
                f"kind {one_line(message.routing_key, 80)}  to {one_line(exchange, 80)}"
            )
        for message in messages:
            connection.requeue(message.delivery_tag)
