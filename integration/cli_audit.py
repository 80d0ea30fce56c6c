"""The `audit` commands: verify the hash chain, list a patient's trail."""

from __future__ import annotations

import getpass
from datetime import UTC, datetime

import click
import orjson

from integration.audit_chain import AuditEntry, verify
from integration.config import Settings
from integration.runtime.stores import open_audit_store


@click.group()
def audit() -> None:
    """The audit log: verify its hash chain, list a patient's trail."""


@audit.command("verify")
def audit_verify() -> None:
    """Check the whole hash chain; exit 1 and say where when a record was changed, inserted or deleted."""
    store = open_audit_store(Settings.from_env().audit_dsn)
    try:
        head = store.head()
        broken = verify(store.records(), head)
    finally:
        store.close()
    if broken is not None:
        click.echo(f"audit log BROKEN at record {broken.seq}: {broken.problem}", err=True)
        raise SystemExit(1)
    click.echo(f"audit log intact: {head[0]} records, head {head[1][:16]}…")


@audit.command("trail")
@click.option("--patient", required=True, help="the patient's CPR number")
def audit_trail(patient: str) -> None:
    """List what was received and sent about a patient. The look-up is itself audited."""
    store = open_audit_store(Settings.from_env().audit_dsn)
    try:
        store.record(
            [AuditEntry("audit-trail-viewed", "audit", "-", {"by": getpass.getuser()}, patient=patient)],
            datetime.now(UTC),
        )
        for record in store.trail(patient):
            detail = orjson.dumps(record.detail).decode()
            click.echo(
                f"{record.seq:>8}  {record.at}  {record.flow:<10} {record.step:<22} {record.message_id}  {detail}"
            )
    finally:
        store.close()
