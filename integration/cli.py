"""The `integration` command: transform one message, run the demo over the bundled samples."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import BinaryIO
from zoneinfo import ZoneInfo

import click
import orjson
import structlog

from integration.bootstrap import build_pipeline
from integration.config import PROJECT_ROOT, Settings
from integration.errors import BuildError, ConfigurationError, Rejected
from integration.flows.results import FlowResult
from integration.log import configure_logging, mask_cpr
from integration.pipeline import Pipeline, transform

DANISH_TIME = ZoneInfo("Europe/Copenhagen")

# Exit codes: 2 the input is invalid or not a known kind, 3 our configuration is wrong, 70 a bug (EX_SOFTWARE).
EXIT_INVALID, EXIT_CONFIGURATION, EXIT_BUG = 2, 3, 70

log = structlog.get_logger("integration.cli")


def _now() -> datetime:
    return datetime.now(DANISH_TIME).replace(microsecond=0)


def _fail(code: int, message: str) -> None:
    click.echo(f"error: {mask_cpr(message)}", err=True)
    sys.exit(code)


def _pipeline() -> Pipeline:
    try:
        return build_pipeline(Settings.from_env())
    except ConfigurationError as exc:
        _fail(EXIT_CONFIGURATION, f"configuration: {exc}")
        raise  # unreachable: _fail exits


def _run(raw: bytes, pipeline: Pipeline) -> FlowResult:
    try:
        return transform(raw, pipeline, _now())
    except ConfigurationError as exc:
        _fail(EXIT_CONFIGURATION, f"configuration: {exc}")
    except Rejected as exc:
        _fail(EXIT_INVALID, str(exc))
    except BuildError as exc:
        _fail(EXIT_BUG, f"internal error, nothing was produced: {exc}")
    raise AssertionError("unreachable")


def _dump(value: object) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2)


@click.group()
@click.option("--log-level", default="WARNING", show_default=True, help="Log level for stderr (JSON lines).")
def main(log_level: str) -> None:
    """Cross-sector cardiac rehabilitation integration service (Region Nordjylland)."""
    configure_logging(log_level)


@main.command(name="transform")
@click.argument("source", type=click.File("rb"))
def transform_command(source: BinaryIO) -> None:
    """Transform one inbound message (FILE, or - for stdin) and print the outgoing messages as JSON.

    Exit 0 on success (an empty array when nothing is to be sent), 2 on invalid input,
    3 on a configuration error.
    """
    pipeline = _pipeline()
    result = _run(source.read(), pipeline)
    sys.stdout.buffer.write(_dump([o.as_json() for o in result.outgoing]) + b"\n")


@main.command()
@click.option(
    "--samples",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=PROJECT_ROOT / "tests" / "golden" / "discharge",
    show_default=True,
)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=Path("out") / "demo", show_default=True
)
def demo(samples: Path, out: Path) -> None:
    """Run the referral flow over the sample discharge events (*.event.json) and write what would be sent."""
    pipeline = _pipeline()
    out.mkdir(parents=True, exist_ok=True)
    files = sorted(samples.glob("*.event.json"))
    sent = 0
    for path in files:
        result = _run(path.read_bytes(), pipeline)
        (out / path.name).write_bytes(_dump([o.as_json() for o in result.outgoing]))
        routes = ", ".join(o.route.routing_key for o in result.outgoing) or "no referral"
        facts = ", ".join(f.kind for f in result.facts)
        click.echo(f"{path.name.removesuffix('.event.json'):<44} → {routes:<36} [{facts}]")
        sent += len(result.outgoing)
    click.echo(f"{len(files)} events, {sent} referral messages written to {out}/")
