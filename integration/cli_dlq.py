"""The `dlq` commands: list dead-lettered messages with their reasons, replay them after a fix, and list what
senders were refused. Each reads patient data, so each use is audited (who, from the process's credentials;
which queue; how many messages) before anything is shown; every id, time and reason is printed as one safe
line (`integration.log.one_line`). Like every command that reads, they need an existing audit store
(`integration.cli_audit.existing_store`: exit 66 without one, 69 while it is unreachable).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import click
from rich.progress import Progress

from integration.audit_chain import AuditEntry
from integration.cli_audit import existing_store, reader, settings_or_exit
from integration.cli_runtime import broker_settings
from integration.log import one_line
from integration.runtime.audit_store import AuditStore
from integration.runtime.rabbitmq import RabbitConnection, Received, connected, drain
from integration.topology import FLOWS, FLOWS_BY_NAME, REFUSED_QUEUE, REPLAY_EXCHANGE, Flow

DEAD_LETTER_HEADERS = ("x-rehab-", "x-death", "x-first-death", "x-last-death")
EVERY_MESSAGE = 100_000


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


def _reason(message: Received) -> str:
    headers = message.raw_headers
    if "x-rehab-reason" in headers:
        return one_line(headers["x-rehab-reason"])
    return f"broker: {one_line(_first_death(headers).get('reason', 'unknown'))} (after repeated failures)"


def _line(message: Received) -> str:
    """Id, time and reason of one dead letter, each one safe line."""
    when = message.raw_headers.get("x-rehab-rejected-at", "")
    return f"{one_line(message.message_id or '-')}  {one_line(when)}  {_reason(message)}"


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
    """List dead-lettered messages with their reasons; they stay in the queue."""
    settings = settings_or_exit()
    with existing_store(settings) as store, connected(broker_settings(settings)) as connection:
        for f in _flows(flow):
            messages = drain(connection, f.dead_letter_queue, EVERY_MESSAGE)
            _audit_read(store, connection, "dlq list", f.name, f.dead_letter_queue, len(messages))
            click.echo(f"{f.dead_letter_queue}: {len(messages)} message(s)")
            for message in messages:
                click.echo(f"  {_line(message)}")
            for message in messages:
                connection.channel.basic_nack(message.delivery_tag, requeue=True)


def original_source(message: Received) -> str:
    """Who sent a dead letter: the user-id it arrived with, which the processor keeps in `x-rehab-source`;
    a message the broker dead-lettered itself (its delivery limit) still carries its own user-id."""
    return one_line(message.raw_headers.get("x-rehab-source") or message.source or "unknown")


def _replay_headers(message: Received, dead_letter_queue: str, at: datetime) -> dict[str, Any]:
    """The sender's own headers, without our dead-letter ones, and what says this is a replay: from which
    queue, when, and who sent the message originally. The replay's own user-id is the operator's broker
    user (`RabbitConnection.publish` sets it)."""
    headers = {k: v for k, v in message.raw_headers.items() if not k.startswith(DEAD_LETTER_HEADERS)}
    return {
        **headers,
        "x-rehab-replayed-from": dead_letter_queue,
        "x-rehab-replayed-at": at.isoformat(),
        "x-rehab-original-source": original_source(message),
    }


@dlq.command("replay")
@click.option("--flow", type=click.Choice(sorted(FLOWS_BY_NAME)), default=None)
@click.option("--id", "ids", multiple=True, help="message id to replay (repeatable)")
@click.option("--all", "replay_all", is_flag=True, help="replay every dead-lettered message")
def dlq_replay(flow: str | None, ids: tuple[str, ...], replay_all: bool) -> None:
    """Send dead-lettered messages back to their flow's queue (through rehab.replay), after the cause was fixed."""
    if not ids and not replay_all:
        raise click.UsageError("name messages with --id, or give --all")
    settings = settings_or_exit()
    replayed = 0
    with (
        existing_store(settings) as store,
        connected(broker_settings(settings)) as connection,
        Progress(transient=True) as progress,
    ):
        for f in _flows(flow):
            messages = drain(connection, f.dead_letter_queue, EVERY_MESSAGE)
            chosen = [m for m in messages if replay_all or m.message_id in ids]
            _audit_read(
                store, connection, "dlq replay", f.name, f.dead_letter_queue, len(messages), replaying=len(chosen)
            )
            task = progress.add_task(f"replaying {f.dead_letter_queue}", total=len(chosen))
            for message in chosen:
                _replay(store, connection, f, message)
                replayed += 1
                progress.advance(task)
            for message in messages:
                if message not in chosen:
                    connection.channel.basic_nack(message.delivery_tag, requeue=True)
    click.echo(f"replayed {replayed} message(s)")


def _replay(store: AuditStore, connection: RabbitConnection, flow: Flow, message: Received) -> None:
    """Publish one dead letter to rehab.replay (confirmed), audit it, then take it off the dead-letter queue."""
    now = datetime.now(UTC)
    headers = _replay_headers(message, flow.dead_letter_queue, now)
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
    }
    store.record([AuditEntry("replayed", flow.name, message.message_id or "", detail)], now)
    connection.channel.basic_ack(message.delivery_tag)
    click.echo(f"  replayed {_line(message)}")


@dlq.command("refused")
def dlq_refused() -> None:
    """List what senders published under a kind their exchange does not take (they got a negative confirm);
    the messages stay in rehab.inbound.refused. The user-id is the sender's broker user, verified by RabbitMQ."""
    settings = settings_or_exit()
    with existing_store(settings) as store, connected(broker_settings(settings)) as connection:
        messages = drain(connection, REFUSED_QUEUE, EVERY_MESSAGE)
        _audit_read(store, connection, "dlq refused", "refused", REFUSED_QUEUE, len(messages))
        click.echo(f"{REFUSED_QUEUE}: {len(messages)} message(s)")
        for message in messages:
            death = _first_death(message.raw_headers)
            click.echo(
                f"  {one_line(message.message_id or '-')}  {one_line(death.get('time', '-'))}  "
                f"from {one_line(message.source or 'no valid user-id')}  "
                f"kind {one_line(message.routing_key)}  to {one_line(death.get('exchange', '?'))}"
            )
        for message in messages:
            connection.channel.basic_nack(message.delivery_tag, requeue=True)
