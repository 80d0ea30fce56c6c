"""The `run` command: the consumers until a signal (`integration.bootstrap.run_consumers`), in this process or
in N worker processes under a supervisor (`integration.adapters.workers`)."""

from __future__ import annotations

import sys

import click

from integration.adapters.workers import MAX_PROCESSES, shared_store, supervise, worker_commands
from integration.bootstrap import run_consumers
from integration.config import Settings
from integration.topology import FLOWS_BY_NAME


def _worker(value: str | None) -> tuple[int, int] | None:
    """`--worker i/N`: this process is worker i of N under `--processes N`."""
    if value is None:
        return None
    number, _, count = value.partition("/")
    if not (number.isdigit() and count.isdigit() and int(number) < int(count)):
        raise click.BadParameter("must be i/N with 0 <= i < N", param_hint="--worker")
    return int(number), int(count)


def _flows(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """`--flows`: comma-separated names of flows in the topology; an unknown one is a usage error (exit 2),
    as `dlq list --flow` says it (INTEGRATION_FLOWS, a setting, is a configuration error: exit 3)."""
    if value is None:
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in FLOWS_BY_NAME]
    if unknown or not names:
        said = f"unknown flow(s) {', '.join(unknown)}" if unknown else "names no flow"
        raise click.BadParameter(f"{said}; the flows: {', '.join(sorted(FLOWS_BY_NAME))}")
    return ",".join(names)


def _global_options(ctx: click.Context) -> list[str]:
    """The `integration` group's options as given, for the workers' command lines."""
    root = ctx.find_root().params
    return [f"--{name.replace('_', '-')}={root[name]}" for name in ("log_level", "log_format") if root.get(name)]


@click.command()
@click.option(
    "--flows", default=None, callback=_flows, help="comma-separated flows to consume (default: all with a handler)"
)
@click.option(
    "--processes",
    type=click.IntRange(1, MAX_PROCESSES),
    default=1,
    show_default=True,
    help="competing consumer processes on the same queues and store; worker i serves its health endpoints "
    "on the base port of INTEGRATION_HEALTH_LISTEN plus i",
)
@click.option("--worker", default=None, hidden=True, help="i/N: run as worker i of a supervisor's N")
@click.pass_context
def run(ctx: click.Context, flows: str | None, processes: int, worker: str | None) -> None:
    """Run the consumers until SIGTERM, SIGINT or SIGHUP (exit 0: the batch in hand finished and acked, the
    chain anchored once more). A database or broker that is down is waited for; exit 2 for an unknown flow in
    --flows, 3 on a configuration error, 65 when the audit store is damaged (its file, or a schema that is not
    what its version says: it is not migrated), 66 when its file is not a database.

    With --processes N (N > 1) a supervisor runs N such consumers as worker processes on the same queues:
    SIGTERM, SIGINT and SIGHUP are forwarded and awaited (a worker stops so on a SIGHUP of its own, too); a
    worker that ends unexpectedly is started again with a backoff; a worker ending with 2, 3, 65 or 66 stops
    them all and the supervisor exits with its code. The audit store must be shared: PostgreSQL or a SQLite
    file (a SQLite :memory: store is exit 3)."""
    settings = Settings.from_env()
    if processes == 1:
        run_consumers(settings, flows, worker=_worker(worker))
        return
    shared_store(settings.audit_dsn)
    commands, envs = worker_commands(
        processes, _global_options(ctx), ["--flows", flows] if flows else [], settings.health_listen
    )
    sys.exit(supervise(commands, envs))
