"""The `integration` command: transform one message, run the consumers, the demo, and the operations commands."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, TypeVar
from zoneinfo import ZoneInfo

import click
import orjson
import structlog

from integration.adapters.mllp import unframed
from integration.adapters.sql.store import StoreMissing
from integration.adapters.sql.stores import masked_dsn
from integration.bootstrap import build
from integration.cli.audit import audit
from integration.cli.board import board
from integration.cli.demo import run_demo
from integration.cli.dlq import dlq
from integration.cli.errors import IntegrationCommand
from integration.cli.mllp import mllp
from integration.cli.ops import at_option, hotline, outbound, topology, validate
from integration.cli.pathway import pathway
from integration.cli.runtime import run
from integration.cli.state import StoreState, state_file
from integration.config import Settings
from integration.domain.course import NO_STATE, State
from integration.errors import BuildError, ConfigurationError, Rejected, Transient
from integration.fhir import fhir_json
from integration.flows.dispatch import Pipeline, transform
from integration.flows.results import FlowResult, Refusal
from integration.log import LEVELS, configure_logging, mask_cpr

DANISH_TIME = ZoneInfo("Europe/Copenhagen")
T = TypeVar("T")

# Exit codes: 2 the input is invalid or not a known kind, 3 our configuration is wrong, 70 a bug (EX_SOFTWARE).
EXIT_INVALID, EXIT_CONFIGURATION, EXIT_BUG = 2, 3, 70

log = structlog.get_logger("integration.cli.main")


def _now() -> datetime:
    return datetime.now(DANISH_TIME).replace(microsecond=0)


def _fail(code: int, message: str) -> None:
    click.echo(f"error: {mask_cpr(message)}", err=True)
    sys.exit(code)


def _pipeline(settings: Settings) -> Pipeline:
    try:
        return build(settings).pipeline
    except ConfigurationError as exc:
        _fail(EXIT_CONFIGURATION, f"configuration: {exc}")
        raise  # unreachable: _fail exits


def _run(raw: bytes, pipeline: Pipeline, now: datetime | None = None, state: State = NO_STATE) -> FlowResult:
    try:
        result = transform(raw, pipeline, now or _now(), state=state)
        if isinstance(result, Refusal):
            _refused(result)
        else:
            return result
    except ConfigurationError as exc:
        _fail(EXIT_CONFIGURATION, f"configuration: {exc}")
    except Rejected as exc:
        _fail(EXIT_INVALID, str(exc))
    except BuildError as exc:
        _fail(EXIT_BUG, f"internal error, nothing was produced: {exc}")
    raise AssertionError("unreachable")


def _refused(refusal: Refusal) -> None:
    """A refused message whose sender is answered: the answer (e.g. a MedCom fatal-error ack) shown, as it
    would be sent, then the refusal's error line; a configuration error's answer is not shown."""
    if isinstance(refusal.rejection, ConfigurationError):
        _fail(EXIT_CONFIGURATION, f"configuration: {refusal.rejection}")
    sys.stdout.buffer.write(_dump([o.as_json() for o in refusal.answer.outgoing]) + b"\n")
    _fail(EXIT_INVALID, str(refusal.rejection))


def _dump(value: object) -> bytes:
    return fhir_json.dumps(value, option=orjson.OPT_INDENT_2)


# `run` and `mllp` are services: their log is how an operator follows them (a start line, one line per
# message). The one-off commands answer on stdout and at most one error line; their log says only what went wrong.
SERVICE_COMMANDS = frozenset({"run", "mllp"})


@click.group(cls=IntegrationCommand)
@click.option(
    "--log-level",
    type=click.Choice(LEVELS, case_sensitive=False),
    default=None,
    help="Log level for stderr [default: INFO for run and mllp, WARNING for the other commands].",
)
@click.option(
    "--log-format",
    type=click.Choice(["json", "console"]),
    default=None,
    help="JSON lines (default when stderr is not a terminal) or console.",
)
@click.pass_context
def main(ctx: click.Context, log_level: str | None, log_format: str | None) -> None:
    """Cross-sector cardiac rehabilitation integration service (Region Nordjylland).

    Exit codes: 0 done; 1 the command's own "no" (see each command); 2 usage; 3 configuration; 65 the
    audit store damaged or refusing to record a read; 66 no audit store; 69 the broker or the database
    unavailable (try again); 70 a bug; 74 a file that cannot be read or written. Errors are one line on
    stderr, never with a CPR number."""
    default = "INFO" if ctx.invoked_subcommand in SERVICE_COMMANDS else "WARNING"
    configure_logging(log_level or default, fmt=log_format)


def _receipt_time(value: str | None) -> datetime | None:
    return None if value is None else at_option(value)


@main.command(name="transform")
@click.argument("source", type=click.File("rb"))
@click.option("--at", "at", default=None, help="the receipt time (ISO 8601 with zone); default now")
@click.option(
    "--state",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="courses and open hotline requests as JSON (see the README); default: none",
)
@click.option("--store", is_flag=True, help="read course state from the configured audit store (each read audited)")
def transform_command(source: BinaryIO, at: str | None, state: Path | None, store: bool) -> None:
    """Transform one inbound message (FILE, or - for stdin) and print the outgoing messages as JSON.

    FILE may be JSON, XML or HL7 v2 (ER7); an HL7 v2 message captured from the wire in its MLLP frame
    (0x0B ... 0x1C 0x0D) is read without the frame.

    Stateless by default: no patient has a course, no request awaits an answer, no message was received
    before — the same input gives the same output. `--state FILE` gives that state; `--store` reads it from
    the configured audit store, which must exist (never created).

    Exit 0 on success (an empty array when nothing is to be sent), 2 on invalid input or a state file that
    cannot be used, 3 on a configuration error or when `--store` cannot be read.
    """
    if state is not None and store:
        raise click.UsageError("give --state FILE or --store, not both")
    received = _receipt_time(at)
    settings = Settings.from_env()
    known: State = state_file(state) if state else StoreState(settings) if store else NO_STATE
    pipeline = _pipeline(settings)
    try:
        result = _run(unframed(source.read()), pipeline, received, known)
    except Transient as exc:
        _fail(EXIT_CONFIGURATION, f"course state unavailable: {exc}")
        raise
    except StoreMissing as exc:
        where = masked_dsn(settings.audit_dsn)
        _fail(EXIT_CONFIGURATION, f"course state unavailable: no audit store at {where}: {exc} (or give --state)")
        raise
    sys.stdout.buffer.write(_dump([o.as_json() for o in result.outgoing]) + b"\n")


@main.command()
@click.option(
    "--board/--no-board",
    "with_board",
    default=None,
    help="keep the pathway board up over the demo until Ctrl-C (default: when run on a terminal)",
)
@click.option("--board-listen", default="127.0.0.1:8080", metavar="HOST:PORT", help="where the demo's board listens")
def demo(with_board: bool | None, board_listen: str) -> None:
    """Run the consumers on the sample messages and say what went where, apart from any running service.

    On a broker on this machine: in a vhost of its own, created with rabbitmqctl and removed at the end.
    Otherwise the same consumers run on the in-memory bus, and the first line says why. Its audit store is
    temporary; the configured one is not touched.

    With the board (on a terminal, or --board), the demo also seeds a patient whose visitation talk is overdue,
    then keeps its consumers and the pathway board up (its address and two logins printed) until Ctrl-C.
    """
    if with_board is None:
        with_board = sys.stdin.isatty() and sys.stdout.isatty()
    run_demo(Settings.from_env(), board_listen if with_board else None)


main.add_command(run)
main.add_command(mllp)
main.add_command(topology)
main.add_command(dlq)
main.add_command(audit)
main.add_command(hotline)
main.add_command(outbound)
main.add_command(pathway)
main.add_command(validate)
main.add_command(board)
