"""What ends a command, as an operator sees it: one line on stderr and a documented exit code; never a
traceback for a mistake, a misconfiguration or an outage, and never a CPR number (every line is
`integration.log.one_line`: masked, control characters escaped).

    exit  meaning
    0     done
    1     the command's own "no" (audit verify: not intact; outbound pending: something needs a person;
          dlq replay: an id or handle not among the dead letters)
    2     usage: an option or argument that cannot be used (click's usage errors, masked)
    3     configuration: settings, mappings, a broker URL that cannot work, and the broker refusing our
          login, our vhost, our permissions or naming a queue the topology lacks
    65    EX_DATAERR: the audit store is damaged, or refuses to record the read
    66    EX_NOINPUT: no audit store where the configuration says
    69    EX_UNAVAILABLE: the broker or the database cannot be reached or refuses for now, or a consumer
          changed a course while the command was changing it (Conflict): try again
    70    EX_SOFTWARE: a bug; the line names the exception, the log line at ERROR has the traceback
    74    EX_IOERR: a file could not be read or written

`IntegrationCommand` is the `integration` group: it runs click without its standalone handling and maps
what escapes to (line, exit code) with `explain`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click
import structlog

from integration.adapters.sql.store import StoreMissing
from integration.errors import (
    BuildError,
    ConfigurationError,
    Conflict,
    ConnectionLost,
    Rejected,
    StoreDamaged,
    StoreRefused,
    Transient,
)
from integration.log import configure_logging, one_line

EXIT_NO, EXIT_USAGE, EXIT_CONFIGURATION = 1, 2, 3
EXIT_DATA, EXIT_NO_INPUT, EXIT_UNAVAILABLE, EXIT_BUG, EXIT_IO = 65, 66, 69, 70, 74
# AMQP reply codes by which the broker refuses what we ask for a reason of ours, not for now.
_REFUSALS = {403: "permissions (ACCESS_REFUSED)", 404: "is the topology applied? (integration topology apply)"}
_DEPENDENCY = {"audit-store": "audit store", "broker": "broker", "topology": "broker's topology"}
_AFTER: dict[type[BaseException], str] = {StoreDamaged: "; restore the store from a backup (audit verify says more)"}

log = structlog.get_logger("integration.cli.main")


def _broker(exc: BaseException) -> tuple[str, int] | None:
    """The broker's refusals that waiting will not mend: our login, our vhost, our permissions, a queue
    the topology lacks. pika's own errors for them, also behind our ConnectionLost."""
    if "integration.adapters.rabbitmq" not in sys.modules:
        return None  # no broker was used: none of its errors can be behind this one
    from integration.adapters.rabbitmq import broker_cause

    cause = broker_cause(exc)
    if cause is None:
        return None
    if cause.login_refused:
        return f"the broker refused our login or vhost (check broker_url): {cause.error}", EXIT_CONFIGURATION
    if cause.reply_code in _REFUSALS:
        hint = _REFUSALS[cause.reply_code]
        return f"the broker refused: {cause.reply_code} {cause.reply_text}; {hint}", EXIT_CONFIGURATION
    if isinstance(exc, ConnectionLost | Transient):
        return None  # our own line says it
    return f"broker unavailable: {type(cause.error).__name__}: {cause.error}", EXIT_UNAVAILABLE


# Ours, by what the operator can do about it; the first that matches wins (subclasses before their bases).
_OURS: Sequence[tuple[type[BaseException], int, str]] = (
    (StoreDamaged, EXIT_DATA, ""),
    (StoreMissing, EXIT_NO_INPUT, "no audit store: "),
    (StoreRefused, EXIT_DATA, "the audit store refused to record this (integration audit verify says why): "),
    (ConfigurationError, EXIT_CONFIGURATION, "configuration: "),
    (Conflict, EXIT_UNAVAILABLE, "the audit store changed meanwhile, nothing was recorded; try again: "),
    (Rejected, EXIT_USAGE, ""),
    (BuildError, EXIT_BUG, "internal error, nothing was produced: "),
)


def explain(exc: BaseException) -> tuple[str, int] | None:
    """(one line, exit code) for what ended a command; None for a bug (an exception nobody expects)."""
    if (refused := _broker(exc)) is not None:
        return refused
    for kind, code, prefix in _OURS:
        if isinstance(exc, kind):
            return prefix + str(exc) + _AFTER.get(kind, ""), code
    if isinstance(exc, ConnectionLost):
        return f"broker unavailable: {exc}; try again later", EXIT_UNAVAILABLE
    if isinstance(exc, Transient):
        what = _DEPENDENCY.get(exc.dependency, exc.dependency)
        return f"{what} unavailable: {exc}; try again later", EXIT_UNAVAILABLE
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror or type(exc).__name__}{where}", EXIT_IO
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(exc, psycopg.Error):  # the stores translate; this is a backstop
        return f"audit store unavailable: {type(exc).__name__}: {exc}", EXIT_UNAVAILABLE
    return None


def stop(line: str, code: int) -> NoReturn:
    click.echo(f"error: {one_line(line, 1000)}", err=True)
    sys.exit(code)


class IntegrationCommand(click.Group):
    """The `integration` group, run so that nothing a command raises reaches the terminal as a traceback
    or as click's own echo of the raw arguments (which may be a CPR number typed in the wrong place)."""

    def main(self, *args: Any, **kwargs: Any) -> NoReturn:
        kwargs["standalone_mode"] = False
        try:
            outcome = super().main(*args, **kwargs)
        except click.UsageError as exc:
            where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
            stop(exc.format_message() + where, exc.exit_code)
        except click.FileError as exc:
            stop(exc.format_message(), EXIT_IO)
        except click.ClickException as exc:
            stop(exc.format_message(), exc.exit_code)
        except click.Abort:
            stop("aborted", EXIT_NO)
        except Exception as exc:  # the one place that decides how a command ends
            known = explain(exc)
            if known is None:
                if not structlog.is_configured():
                    configure_logging("WARNING")
                log.error("unexpected error", exc_info=exc)
                known = f"internal error (a bug): {type(exc).__name__}: {exc}", EXIT_BUG
            stop(*known)
        sys.exit(outcome if isinstance(outcome, int) else 0)
