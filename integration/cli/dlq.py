"""The `dlq` commands: list dead-lettered messages with their reasons, replay them after a fix, and list what
senders were refused. Each reads patient data, so each use is audited (who, from the process's credentials;
which queue; how many messages) before anything is shown; every id, time and reason is printed as one safe
line (`integration.log.one_line`). Like every command that reads, they need an existing audit store
(`integration.cli.audit.existing_store`: exit 66 without one, 69 while it is unreachable).

What a dead letter says is believed only as far as someone vouches for it: `integration.adapters.dead_letters`
(shared with the board's dead-letter page).
"""

from __future__ import annotations

from collections.abc import Sequence

import click
from rich.progress import Progress

from integration.adapters.dead_letters import (
    EVERY_MESSAGE,
    DeadLetter,
    audit_read,
    first_death,
    read_letters,
    replay,
)
from integration.adapters.rabbitmq import RabbitConnection, drain
from integration.adapters.sql.store import AuditStore
from integration.bootstrap import broker_connection
from integration.cli.audit import existing_store, fail, reader, settings_or_exit
from integration.log import one_line
from integration.topology import FLOWS, FLOWS_BY_NAME, REFUSED_QUEUE, SENDERS, Flow

EXIT_NOT_FOUND = 1
SENDER_EXCHANGES = {s.user: s.exchange for s in SENDERS}


@click.group()
def dlq() -> None:
    """Inspect and re-drive dead-lettered messages; list what senders were refused."""


def _flows(flow: str | None) -> Sequence[Flow]:
    return [FLOWS_BY_NAME[flow]] if flow else FLOWS


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
            audit_read(store, connection, "dlq list", f.name, f.dead_letter_queue, len(messages), reader())
            click.echo(f"{f.dead_letter_queue}: {len(messages)} message(s)")
            for message in messages:
                click.echo(f"  {DeadLetter.read(message, connection.user).line()}")
            for message in messages:
                connection.requeue(message.delivery_tag)


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
            messages, letters = read_letters(connection, f.dead_letter_queue)
            chosen = [d for d in letters if replay_all or {d.message.message_id, d.handle} & set(ids)]
            found |= {name for d in chosen for name in (d.message.message_id, d.handle)}
            audit_read(
                store,
                connection,
                "dlq replay",
                f.name,
                f.dead_letter_queue,
                len(letters),
                reader(),
                replaying=len(chosen),
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
    replay(store, connection, flow, letter, reader())
    click.echo(f"  replayed {letter.line()}")


@dlq.command("refused")
def dlq_refused() -> None:
    """List what senders published under a kind their exchange does not take (they got a negative confirm);
    the messages stay in rehab.inbound.refused. The user-id is the sender's broker user, verified by RabbitMQ."""
    settings = settings_or_exit()
    with existing_store(settings) as store, broker_connection(settings) as connection:
        messages = drain(connection, REFUSED_QUEUE, EVERY_MESSAGE)
        audit_read(store, connection, "dlq refused", "refused", REFUSED_QUEUE, len(messages), reader())
        click.echo(f"{REFUSED_QUEUE}: {len(messages)} message(s)")
        for message in messages:
            death = first_death(message.raw_headers)
            # A sender may write its own exchange only, so its user names it; x-death's a sender can preset.
            exchange = SENDER_EXCHANGES.get(message.source or "") or death.get("exchange", "?")
            click.echo(
                f"  {one_line(message.message_id or '-', 120)}  {one_line(death.get('time', '-'), 40)}  "
                f"from {one_line(message.source or 'no valid user-id', 80)}  "
                f"kind {one_line(message.routing_key, 80)}  to {one_line(exchange, 80)}"
            )
        for message in messages:
            connection.requeue(message.delivery_tag)
