"""The `run` command: the consumers until a signal (`integration.bootstrap.run_consumers`)."""

from __future__ import annotations

import click

from integration.bootstrap import run_consumers
from integration.config import Settings


@click.command()
@click.option("--flows", default=None, help="comma-separated flows to consume (default: all with a handler)")
def run(flows: str | None) -> None:
    """Run the consumers until SIGTERM or SIGINT (exit 0). A database or broker that is down is waited for;
    exit 3 on a configuration error, 65 when the audit store is damaged (its file, or a schema that is not
    what its version says: it is not migrated), 66 when its file is not a database."""
    run_consumers(Settings.from_env(), flows)
