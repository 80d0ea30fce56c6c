"""Operations commands: the broker topology, hotline requests past due, our outbound messages, validation."""

from __future__ import annotations

import base64
import hashlib
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
import orjson
import structlog

from integration.bootstrap import broker_connection, build, resend_policy
from integration.cli.audit import existing_store, reserve_output, write_output
from integration.config import Settings
from integration.domain.course import OutboundState
from integration.errors import ConfigurationError, InvalidInput
from integration.log import mask_cpr, one_line
from integration.service.hotline_overdue import overdue_requests
from integration.topology import USERS, definitions

if TYPE_CHECKING:
    from integration.conformance.checks import MessageCheck

log = structlog.get_logger("integration.hotline")
MAX_HOURS = 24 * 366  # opening hours: more than a year's worth is a typing mistake


NEEDS_A_PERSON_BECAUSE = {
    OutboundState.GAVE_UP: "no ack after the last resend",
    OutboundState.FAILED: "answered with an error",
    OutboundState.STOPPED: "stopped: the patient died (HospitalNotification MORS)",
}


def _dump(value: object) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)


def development_password_hash(user: str) -> str:
    """RabbitMQ's salted SHA-256 of the development password `<user>-dev` (salt fixed, so the file is stable)."""
    salt = hashlib.sha256(user.encode()).digest()[:4]
    return base64.b64encode(salt + hashlib.sha256(salt + f"{user}-dev".encode()).digest()).decode()


def definitions_document() -> bytes:
    return _dump(definitions({user: development_password_hash(user) for user in USERS})) + b"\n"


@click.group()
def topology() -> None:
    """The RabbitMQ topology: exchanges, queues, dead-lettering, limits."""


@topology.command("apply")
@click.option(
    "--migrate",
    is_flag=True,
    help="re-create queues an earlier release declared with other arguments, keeping their messages "
    "(stop `integration run` first)",
)
def topology_apply(migrate: bool) -> None:
    """Declare every exchange, queue and binding in the configured vhost (idempotent). Exit 3 when a queue
    exists with an earlier release's arguments and --migrate was not given (the line names it)."""
    from integration.adapters.queue_migration import apply

    with broker_connection(Settings.from_env()) as connection:
        try:
            done = apply(connection, migrating=migrate)
        except ConfigurationError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(3)
        for line in done:
            click.echo(line)


@topology.command("export")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None)
def topology_export(out: Path | None) -> None:
    """Write the definitions for `rabbitmqctl import_definitions` (vhost, users, policies, topology)."""
    scratch = reserve_output(out)  # through a file renamed over `out`: a link there is replaced, never followed
    write_output(definitions_document(), out, scratch)


@click.group()
def hotline() -> None:
    """Hotline requests waiting for the department's answer."""


AT_HELP = "the time to act as of (ISO 8601 with an offset, e.g. 2026-11-23T09:00:00+01:00); default now"


@hotline.command("pending")
@click.option(
    "--hours",
    type=click.IntRange(1, MAX_HOURS),
    default=None,
    help="opening hours after which a request is overdue (a whole number, at least 1)",
)
@click.option("--at", default=None, help=AT_HELP + "; a time after now lists without auditing")
def hotline_pending(hours: int | None, at: str | None) -> None:
    """List unanswered requests older than the limit, in opening hours counted in the hotline's zone
    (Europe/Copenhagen, daylight saving included); log and audit each overdue one once. Exit 2 for a bad
    --hours or --at, 66 when there is no audit store, 69 when it is unreachable."""
    settings = Settings.from_env()
    limit = hours if hours is not None else settings.hotline_overdue_hours
    moment = _moment(at)
    context = build(settings).pipeline.hotline
    with existing_store(settings) as store:
        found = overdue_requests(store, context.hotlines, moment, limit, datetime.now(UTC))
    as_of = f" as of {moment.astimezone(context.timezone).isoformat(timespec='minutes')}" if at else ""
    click.echo(f"{len(found.requests)} unanswered request(s) older than {limit} opening hour(s){as_of}:")
    for pending, age in found.requests:
        request = pending.request
        received = pending.received_at.astimezone(context.timezone).isoformat(timespec="minutes")
        click.echo(
            f"  {request.request_id}  received {received}  "
            f"{age:.1f} h  to {request.department or 'triage'}  from {request.requester}"
        )
    if found.forecast:
        click.echo("(a time after now: nothing was audited as overdue)")


@click.group()
def outbound() -> None:
    """Our MedCom messages and their acks: resend what got none, list what needs a person."""


def at_option(at: str) -> datetime:
    """An `--at` value as an aware time: a zone, and a year a message can carry (1900-2199); a usage error
    (exit 2, one line, never repeating it) for anything else. Every command's `--at` is read here."""
    from integration.domain.moment import parse_moment

    try:
        return parse_moment(at)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--at") from None


def _moment(at: str | None) -> datetime:
    """`--at` as an aware time, now when not given."""
    return datetime.now(UTC) if at is None else at_option(at)


@outbound.command("resend")
@click.option("--at", default=None, help=AT_HELP)
def outbound_resend(at: str | None) -> None:
    """One pass of what the consumer does every minute: resend unacknowledged messages, flag the hopeless."""
    from integration.service.outbound import resend_unacknowledged

    settings = Settings.from_env()
    moment = _moment(at)
    with existing_store(settings) as store, broker_connection(settings) as connection:
        report = resend_unacknowledged(store, connection, moment, resend_policy(settings))
    click.echo(f"resent {len(report.resent)}, flagged for manual follow-up {len(report.gave_up)}")


@outbound.command("pending")
@click.option("--at", default=None, help=AT_HELP)
def outbound_pending(at: str | None) -> None:
    """Messages that need a person: no ack after the last resend, or answered with an error; and those
    waiting past the ack timeout. Exit 0 when none needs a person, 1 otherwise; 66 when there is no audit
    store, 69 when it is unreachable."""
    settings = Settings.from_env()
    moment = _moment(at)
    with existing_store(settings) as store:
        flagged = store.outbound_messages(OutboundState.needing_a_person())
        overdue = store.outbound_messages([OutboundState.AWAITING], moment - resend_policy(settings).ack_timeout)
        waiting = store.outbound_count(OutboundState.AWAITING)
    click.echo(
        f"{len(flagged)} message(s) need manual follow-up; {waiting} awaiting an ack, {len(overdue)} of them "
        "past the ack timeout (the consumer resends those)"
    )
    for message in flagged:
        why = NEEDS_A_PERSON_BECAUSE.get(message.state, "answered with an error")
        click.echo(
            f"  {message.header_id}  {message.state}  {why}  first sent {message.first_sent_at.isoformat()}  "
            f"resent {message.resends}x  to {message.output.routing_key}"
        )
    for message in overdue:
        minutes = (moment - message.last_sent_at).total_seconds() / 60
        click.echo(
            f"  {message.header_id}  awaiting  {minutes:.0f} min since last sent  resent {message.resends}x  "
            f"to {message.output.routing_key}"
        )
    raise SystemExit(1 if flagged else 0)


@click.command()
@click.argument("source", type=click.File("rb"))
@click.option(
    "--require-profiles",
    is_flag=True,
    help="exit 2 when the profile layer cannot run because the definitions are not there",
)
@click.option(
    "--max-bytes",
    type=click.IntRange(min=1),
    default=None,
    help="the largest input to read [default: INTEGRATION_MAX_PAYLOAD_BYTES, the inbound limit]; e.g. for a "
    "large `audit export`",
)
def validate(source: Any, require_profiles: bool, max_bytes: int | None) -> None:
    """Check a FHIR message or document (JSON or XML, FILE or -), or the JSON array `integration transform`
    prints (each message in it), against FHIR R4, MedCom's messaging rules, the TouchStone assertions and,
    when the definitions are at hand, the profiles' snapshots; print the findings. Exit 0 when the layers
    that ran find nothing (or transform's output holds no FHIR message), 1 with findings, 2 when it could
    not check (input that cannot be read, definitions there but unreadable, or absent with
    --require-profiles).

    "Cannot be read" (2) is the same for either syntax: too large, an encoding we do not read, malformed
    XML or JSON, a character no message may carry (XML 1.0 makes it malformed; JSON gets the same answer),
    a JSON key twice (the document is ambiguous: which value would be checked?). Everything about the
    content of a well-formed document is a finding (1), in XML as in JSON: not a FHIR Bundle, an element
    FHIR R4 does not define, an element more than once where FHIR allows one, text or an attribute FHIR
    XML does not carry."""
    from integration.conformance.checks import check_document
    from integration.flows.dispatch import read_to_check

    try:
        raw = source.read()
    except OSError as exc:
        _cannot_check(f"cannot read {source.name}: {exc.strerror or exc}")
    settings = Settings.from_env()
    limit = max_bytes or settings.max_payload_bytes
    try:
        read = read_to_check(raw, limit)
    except InvalidInput as exc:
        more = " (a larger file: --max-bytes)" if len(raw) > limit else ""
        _cannot_check(f"cannot read: {exc}{more}")
    checks = check_document(
        read.document, settings.medcom_definitions_dir, settings.fhir_core_dir, refusal=read.refusal
    )
    raise SystemExit(_report(checks, require_profiles))


def _say(line: str) -> None:
    click.echo(mask_cpr(line))  # a finding may quote what it found; a CPR number never leaves


def _cannot_check(why: str) -> NoReturn:
    click.echo(f"error: {mask_cpr(one_line(why))}", err=True)
    raise SystemExit(2)


def _report(checks: list[MessageCheck], require_profiles: bool) -> int:
    """Print each message's findings (prefixed by which message, in a transform array) and a last line that
    says what was and was not checked; the exit code."""
    findings, incomplete, skipped_profiles, checked = 0, 0, [], 0
    for check in checks:
        prefix = f"{check.label}: " if check.label else ""
        if check.result is None:
            _say(f"{prefix}{check.skipped}")
            continue
        checked += 1
        result = check.result
        findings += len(result.findings)
        for finding in result.findings:
            _say(f"- {prefix}{finding}")
        for why in result.incomplete:
            incomplete += 1
            _say(f"{prefix}could not check: {why}")
        if result.profiles is not None:
            covered = ", ".join(f"{n} {what}" for what, n in sorted(result.profiles.counts.items()))
            _say(f"{prefix}profiles checked: {covered}")
            if result.profiles.unknown_profiles:
                _say(
                    f"{prefix}profiles not among the definitions: {', '.join(sorted(result.profiles.unknown_profiles))}"
                )
        elif result.profiles_skipped and not result.incomplete:
            skipped_profiles.append(result.profiles_skipped)
            if check.label:
                _say(f"{prefix}profiles not checked: {result.profiles_skipped}")
    return _summary(findings, incomplete, skipped_profiles, checked, require_profiles)


def _summary(findings: int, incomplete: int, skipped: list[str], checked: int, require_profiles: bool) -> int:
    not_checked = f"; profiles not checked: {skipped[0]}" if skipped else ""
    if checked == 0:  # only transform's output gets here: `[]` ("no referral") or JSON forms alone
        _say("no FHIR message to check: transform's output holds none (no message, or JSON forms only)")
        return 0
    if incomplete or (skipped and require_profiles):
        _say(f"{findings} finding(s); could not check everything{not_checked}")
        return 2
    if findings:
        _say(f"{findings} finding(s){not_checked}")
        return 1
    _say(f"no findings in the layers that ran{not_checked}" if skipped else "conforms: no findings")
    return 0
