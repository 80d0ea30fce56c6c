"""The `dlq` commands: list dead-lettered messages with their reasons, and replay them after a fix."""

from __future__ import annotations

import getpass
from collections.abc import Sequence
from datetime import UTC, datetime

import click
from rich.progress import Progress

from integration.audit_chain import AuditEntry
from integration.cli_runtime import broker_settings
from integration.config import Settings
from integration.log import one_line
from integration.runtime.rabbitmq import Received, connected, drain
from integration.runtime.stores import open_audit_store
from integration.topology import FLOWS, FLOWS_BY_NAME, INBOUND_EXCHANGE, Flow

DEAD_LETTER_HEADERS = ("x-rehab-", "x-death", "x-first-death", "x-last-death")


@click.group()
def dlq() -> None:
    """Inspect and re-drive dead-lettered messages."""


def _flows(flow: str | None) -> Sequence[Flow]:
    return [FLOWS_BY_NAME[flow]] if flow else FLOWS


def _reason(message: Received) -> str:
    headers = message.raw_headers
    if "x-rehab-reason" in headers:
        return one_line(headers["x-rehab-reason"])
    deaths = headers.get("x-death") or [{}]
    return f"broker: {deaths[0].get('reason', 'unknown')} (after repeated failures)"


@dlq.command("list")
@click.option("--flow", type=click.Choice(sorted(FLOWS_BY_NAME)), default=None)
def dlq_list(flow: str | None) -> None:
    """List dead-lettered messages with their reasons; they stay in the queue."""
    with connected(broker_settings(Settings.from_env())) as connection:
        for f in _flows(flow):
            messages = drain(connection, f.dead_letter_queue, 100_000)
            click.echo(f"{f.dead_letter_queue}: {len(messages)} message(s)")
            for message in messages:
                when = message.raw_headers.get("x-rehab-rejected-at", "")
                click.echo(f"  {one_line(message.message_id or '-')}  {one_line(when)}  {_reason(message)}")
            for message in messages:
                connection.channel.basic_nack(message.delivery_tag, requeue=True)


@dlq.command("replay")
@click.option("--flow", type=click.Choice(sorted(FLOWS_BY_NAME)), default=None)
@click.option("--id", "ids", multiple=True, help="message id to replay (repeatable)")
@click.option("--all", "replay_all", is_flag=True, help="replay every dead-lettered message")
def dlq_replay(flow: str | None, ids: tuple[str, ...], replay_all: bool) -> None:
    """Send dead-lettered messages back to their inbound queue, after the cause was fixed."""
    if not ids and not replay_all:
        raise click.UsageError("name messages with --id, or give --all")
    settings = Settings.from_env()
    store = open_audit_store(settings.audit_dsn)
    replayed = 0
    try:
        with connected(broker_settings(settings)) as connection, Progress(transient=True) as progress:
            for f in _flows(flow):
                messages = drain(connection, f.dead_letter_queue, 100_000)
                chosen = [m for m in messages if replay_all or m.message_id in ids]
                task = progress.add_task(f"replaying {f.dead_letter_queue}", total=len(chosen))
                for message in chosen:
                    headers = {k: v for k, v in message.raw_headers.items() if not k.startswith(DEAD_LETTER_HEADERS)}
                    connection.publish(
                        INBOUND_EXCHANGE,
                        f.name,
                        message.body,
                        message.message_id or "",
                        headers,
                        message.content_type or "application/json",
                    )
                    store.record(
                        [
                            AuditEntry(
                                "replayed",
                                f.name,
                                message.message_id or "",
                                {"from": f.dead_letter_queue, "by": getpass.getuser()},
                            )
                        ],
                        datetime.now(UTC),
                    )
                    connection.channel.basic_ack(message.delivery_tag)
                    replayed += 1
                    progress.advance(task)
                for message in messages:
                    if message not in chosen:
                        connection.channel.basic_nack(message.delivery_tag, requeue=True)
    finally:
        store.close()
    click.echo(f"replayed {replayed} message(s)")
