"""The `audit` commands: verify the evidence, list a patient's trail; and what every command that
opens the store shares: opening an existing store only, and naming the OS user who reads.

`audit verify` exits 0 when intact, 1 when not (or empty, missing or damaged), 2 on a usage error (an
anchor file unreadable or without anchors), 3 on a configuration error, 69 when the database is
unreachable. The other commands exit 66 when there is no audit store, 69 and 3 likewise, and 65 when
the store is damaged (a file SQLite cannot read, a schema other than its version says) or refuses to
record their read (its chain is inconsistent: `audit verify` says where).
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

import click
import orjson

from integration.adapters.os_user import reader as reader  # re-exported: the commands import it from here
from integration.adapters.sql.sqlite import database_file
from integration.adapters.sql.store import AuditStore, StoreMissing
from integration.adapters.sql.stores import mac_keys, masked_dsn, open_store
from integration.config import Settings
from integration.domain.identifiers import typed_patient_key
from integration.errors import ConfigurationError, StoreDamaged, StoreRefused, Transient
from integration.fhir import fhir_json
from integration.log import mask_cpr, one_line
from integration.service.audit_chain import AuditEntry, AuditRecord, first_malformed
from integration.service.audit_events import EventCodes, audit_bundle, unmapped
from integration.service.audit_evidence import Anchor, MacKeys, examine, parse_anchors

# sysexits: 65 EX_DATAERR (the store's own data is inconsistent), 66 EX_NOINPUT (no store where the
# configuration says), 69 EX_UNAVAILABLE (try again later)
EXIT_BROKEN, EXIT_USAGE, EXIT_CONFIGURATION = 1, 2, 3
EXIT_STORE_REFUSED, EXIT_NO_STORE, EXIT_UNAVAILABLE = 65, 66, 69


def fail(code: int, message: str) -> NoReturn:
    """One line on stderr (`one_line`: masked, control characters escaped), then exit with `code`."""
    click.echo(f"error: {one_line(message, 1000)}", err=True)
    raise SystemExit(code)


def settings_or_exit() -> Settings:
    try:
        return Settings.from_env()
    except ConfigurationError as exc:
        fail(EXIT_CONFIGURATION, f"configuration: {exc}")


def settings_with_store(dsn: str | None) -> Settings:
    """The settings, a command's `--store` read as INTEGRATION_AUDIT_DSN is (a relative sqlite path made
    absolute); a configuration error is one line and exit 3."""
    environment = dict(os.environ) | ({} if dsn is None else {"INTEGRATION_AUDIT_DSN": dsn})
    try:
        return Settings.from_env(environment)
    except ConfigurationError as exc:
        fail(EXIT_CONFIGURATION, f"configuration: {exc}")


# A reading command's `--store DSN` (the parameter `dsn`), for `settings_with_store`.
store_option = click.option(
    "--store",
    "dsn",
    default=None,
    metavar="DSN",
    help="the audit store to read (sqlite:///path or postgresql://…); default: the configured one",
)


@contextmanager
def existing_store(settings: Settings, keys: MacKeys | None = None, verifying: bool = False) -> Iterator[AuditStore]:
    """The configured store, which must exist (a command that reads never creates one); a missing or
    damaged store, an outage or a configuration error is one line and an exit code, never a traceback.
    For `audit verify` (`verifying`) a missing or damaged store is the finding: exit 1."""
    where = masked_dsn(settings.audit_dsn)
    try:
        store = open_store(settings, create=False, keys=keys)
    except StoreMissing as exc:
        fail(EXIT_BROKEN if verifying else EXIT_NO_STORE, f"no audit store at {where}: {exc}")
    except StoreDamaged as exc:
        fail(EXIT_BROKEN if verifying else EXIT_STORE_REFUSED, f"{exc} ({where}; restore it from a backup)")
    except Transient as exc:
        fail(EXIT_UNAVAILABLE, f"audit store unreachable: {exc}")
    except ConfigurationError as exc:
        fail(EXIT_CONFIGURATION, f"configuration: {exc}")
    try:
        yield store
    except StoreDamaged as exc:
        fail(EXIT_BROKEN if verifying else EXIT_STORE_REFUSED, f"{exc} ({where}; restore it from a backup)")
    except Transient as exc:
        if exc.dependency != "audit-store":
            raise  # the broker's, for `integration.cli.errors` to say
        fail(EXIT_UNAVAILABLE, f"audit store unreachable: {exc}")
    except StoreRefused as exc:
        fail(EXIT_STORE_REFUSED, f"{exc} (integration audit verify says what is wrong with the log)")
    finally:
        store.close()


@click.group()
def audit() -> None:
    """The audit log: verify its evidence, list a patient's trail, export it as FHIR AuditEvents."""


def _anchors(files: tuple[Path, ...]) -> list[Anchor]:
    found = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            fail(EXIT_USAGE, f"--anchor {path}: cannot read it: {exc.strerror or type(exc).__name__}")
        anchors = parse_anchors(text, path.name)
        if not anchors:
            fail(EXIT_USAGE, f"--anchor {path}: no audit anchor in it (anchor file lines or 'audit anchor' log lines)")
        found += anchors
    return found


@audit.command("verify")
@click.option(
    "--anchor",
    "anchor_files",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="an anchor file, or the service's shipped log: every anchored record must still be in the chain (repeatable)",
)
@click.option("--allow-empty", is_flag=True, help="an empty log is intact (a fresh deployment)")
def audit_verify(anchor_files: tuple[Path, ...], allow_empty: bool) -> None:
    """Check the evidence: the hash chain, the state tables it covers, the anchors given and (with a key
    configured) every record's HMAC. One line per finding, naming the record, table or anchor.

    Exit 0 intact; 1 not intact, empty (without --allow-empty), missing or damaged; 2 an unusable --anchor;
    3 a configuration error; 69 the database unreachable. The read is itself audited."""
    settings = settings_or_exit()
    anchors = _anchors(anchor_files)
    try:
        keys = mac_keys(settings)
    except ConfigurationError as exc:
        fail(EXIT_CONFIGURATION, f"configuration: {exc}")
    with existing_store(settings, keys, verifying=True) as store:
        with store.evidence() as evidence:  # streamed: its memory does not grow with the log
            result = examine(evidence, keys, anchors, allow_empty)
        unrecorded = None
        if result.records:  # it read every patient's records: who did is recorded
            detail = {**reader(), "intact": result.intact, "records": result.records, "anchors": len(anchors)}
            try:
                store.record([AuditEntry("audit-verified", "audit", "-", detail)], datetime.now(UTC))
            except StoreRefused as exc:  # a head that disagrees with the records: the findings say so
                unrecorded = f"error: this verification could not be recorded in the audit log: {exc}"
    for finding in result.findings:
        click.echo(mask_cpr(finding.line()), err=True)
    if unrecorded:
        click.echo(mask_cpr(unrecorded), err=True)
    if not result.intact or unrecorded:
        raise SystemExit(EXIT_BROKEN)
    click.echo(mask_cpr(f"audit log intact: {'; '.join(result.summary)}"))


def _patient(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    """The key the audit files the patient under, from how it is typed (`identifiers.typed_patient_key`,
    docs/decisions/0017); a usage error that never repeats what was typed otherwise."""
    try:
        return typed_patient_key(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@audit.command("trail")
@click.option(
    "--patient",
    required=True,
    callback=_patient,
    help="the patient: a CPR number (DDMMYYSSSS, DDMMYY-SSSS or DDMMYY SSSS), or a replacement number as "
    "SYSTEM|VALUE (an X-eCPR may be typed alone)",
)
def audit_trail(patient: str) -> None:
    """List what was received and sent about a patient, this look-up included (it is itself audited, with
    the OS user), then how many records that was. The patient is named by a CPR number or a replacement
    number (X-eCPR, D-eCPR: docs/decisions/0017); anything else is a usage error (2)."""
    settings = settings_or_exit()
    with existing_store(settings) as store:
        store.record([AuditEntry("audit-trail-viewed", "audit", "-", reader(), patient=patient)], datetime.now(UTC))
        trail = store.trail(patient)
    for record in trail:
        detail = orjson.dumps(record.detail).decode()
        click.echo(
            mask_cpr(
                f"{record.seq:>8}  {record.at}  {record.flow:<10} {record.step:<22} {one_line(record.message_id)}  "
                f"{detail}"
            )
        )
    views = sum(1 for record in trail if record.step == "audit-trail-viewed")
    click.echo(f"{len(trail)} record(s) about the patient, {views} of them look-ups of this trail")


EXIT_NOT_WRITABLE = 74  # sysexits EX_IOERR
AUDIT_EVENTS = "audit-events.yaml"


def _since(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    """`--since` as an aware time (`integration.domain.moment.parse_moment`): a usage error (2) otherwise."""
    from integration.domain.moment import parse_moment

    if value is None:
        return None
    try:
        return parse_moment(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _event_codes(settings: Settings) -> EventCodes:
    """mappings/audit-events.yaml, the table of each step's AuditEvent codes (exit 3 when it is unusable)."""
    import yaml

    path = settings.mappings_dir / AUDIT_EVENTS
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        return EventCodes.from_mapping(doc if isinstance(doc, dict) else {})
    except (OSError, yaml.YAMLError) as exc:
        fail(EXIT_CONFIGURATION, f"configuration: cannot read {path}: {type(exc).__name__}")
    except ConfigurationError as exc:
        fail(EXIT_CONFIGURATION, f"configuration: {exc}")


def _after(record: AuditRecord, since: datetime | None) -> bool:
    """Whether the record was written at or after `since` (a time it cannot say keeps it: a record is never
    dropped for being unreadable)."""
    if since is None:
        return True
    try:
        return datetime.fromisoformat(record.at) >= since
    except (TypeError, ValueError):
        return True


def reserve_output(out: Path | None) -> tuple[int, Path] | None:
    """A new file next to `out` to write an export into before it replaces `out` (exit 74 when the folder takes
    none, or `out` is a folder): nothing is read, nothing audited, when the output cannot be written. None for
    stdout, and for an existing `out` that is no regular file (a terminal, `/dev/stdout`, a FIFO): written into,
    never replaced by a file. Exit 2 for an SQLite database's file or its WAL or index (the store's records)."""
    if out is None:
        return None
    if database_file(out):
        fail(EXIT_USAGE, f"--out {out}: an SQLite database's file (the audit store?): it is never replaced")
    if out.is_dir():
        fail(EXIT_NOT_WRITABLE, f"--out {out}: a folder, not a file")
    if _written_in_place(out):
        return None
    try:
        handle, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
    except OSError as exc:
        fail(EXIT_NOT_WRITABLE, f"--out {out}: cannot write there: {exc.strerror or type(exc).__name__}")
    return handle, Path(name)


def _written_in_place(out: Path) -> bool:
    """Whether `out` (a link followed) exists and is no regular file: a device or a FIFO is written into."""
    try:
        mode = out.stat().st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode)


def write_output(document: bytes, out: Path | None, scratch: tuple[int, Path] | None) -> None:
    """`document` to stdout (`out` None), into `out` (no `scratch`: a device or a FIFO), or through `scratch`
    renamed over `out` (a link at `out` is replaced, never what it points at). Exit 74 when it cannot be."""
    if out is None:
        sys.stdout.buffer.write(document)
        sys.stdout.buffer.flush()
        return
    try:
        if scratch is None:
            with out.open("wb") as file:
                file.write(document)
            return
        handle, name = scratch
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(document)
            name.replace(out)
        except OSError:
            name.unlink(missing_ok=True)
            raise
    except OSError as exc:
        fail(EXIT_NOT_WRITABLE, f"--out {out}: cannot write it: {exc.strerror or type(exc).__name__}")


@audit.command("export")
@click.option(
    "--patient",
    default=None,
    callback=lambda ctx, param, value: None if value is None else _patient(ctx, param, value),  # optional here
    help="only this patient's records: a CPR number, or a replacement number as SYSTEM|VALUE (as `audit trail`)",
)
@click.option(
    "--since",
    default=None,
    callback=_since,
    help="only records written at or after this time (ISO 8601 with an offset, e.g. 2026-11-23T09:00:00+01:00)",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="write the Bundle to this file (replaced whole); default: stdout",
)
@store_option
def audit_export(patient: str | None, since: datetime | None, out: Path | None, dsn: str | None) -> None:
    """Write the audit trail as a FHIR R4 Bundle (type `collection`) of AuditEvents shaped after IHE BALP
    (integration/service/audit_events.py; the codes of each step in mappings/audit-events.yaml), in chain order,
    this export's own record last: it is recorded, with the OS user, the filters and how many records go
    out, before anything is written. The CPR number appears only inside the Bundle.

    Exit 2 for a --patient that names no patient or a --since that is no time (never repeating either); 3 a
    configuration error or a step the table does not map; 65 a damaged store or one that refuses the record;
    66 no audit store; 69 the store unreachable; 74 --out cannot be written."""
    settings = settings_with_store(dsn)
    codes = _event_codes(settings)
    scratch = reserve_output(out)
    try:
        with existing_store(settings) as store:
            read = store.trail(patient) if patient else list(store.records())
            if (malformed := first_malformed(read)) is not None:  # no AuditEvent can say what it holds
                fail(
                    EXIT_STORE_REFUSED,
                    f"audit log BROKEN at {malformed[0]}: {malformed[1]}; nothing exported "
                    "(integration audit verify names every such record)",
                )
            chosen = [r for r in read if _after(r, since)]
            missing = unmapped(chosen, codes)
            if missing:
                fail(EXIT_CONFIGURATION, f"configuration: {AUDIT_EVENTS} does not map the step(s) {', '.join(missing)}")
            last = max((r.seq for r in read), default=0)
            filters = {"patient": patient is not None, "since": since.isoformat() if since else None}
            target = "stdout" if out is None else mask_cpr(str(out))
            detail = {**reader(), "filters": filters, "records": len(chosen) + 1, "out": target}
            store.record([AuditEntry("audit-exported", "audit", "-", detail, patient=patient)], datetime.now(UTC))
            export = next(
                r for r in store.records_after(last) if r.step == "audit-exported" and dict(r.detail) == detail
            )
        document = fhir_json.dumps(audit_bundle([*chosen, export], codes, export), option=orjson.OPT_INDENT_2)
        writing, scratch = scratch, None  # `write_output` closes it, and removes it when it fails
        write_output(document + b"\n", out, writing)
    finally:
        if scratch is not None:
            os.close(scratch[0])
            scratch[1].unlink(missing_ok=True)
    where = "stdout" if out is None else str(out)
    click.echo(
        mask_cpr(f"exported {len(chosen) + 1} audit event(s) to {where}, this export's record included"), err=True
    )
