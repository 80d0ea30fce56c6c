"""The `audit` commands: verify the evidence, list a patient's trail; and what every command that
opens the store shares: opening an existing store only, and naming the OS user who reads.

`audit verify` exits 0 when intact, 1 when not (or empty, missing or damaged), 2 on a usage error (an
anchor file unreadable or without anchors), 3 on a configuration error, 69 when the database is
unreachable. The other commands exit 66 when there is no audit store, 69 and 3 likewise, and 65 when
the store is damaged (a file SQLite cannot read, a schema other than its version says) or refuses to
record their read (its chain is inconsistent: `audit verify` says where).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

import click
import orjson

from integration.adapters.os_user import reader as reader  # re-exported: the commands import it from here
from integration.adapters.sql.store import AuditStore, StoreMissing
from integration.adapters.sql.stores import mac_keys, masked_dsn, open_store
from integration.config import Settings
from integration.domain.cpr import CPR_SYSTEM, read_cpr
from integration.domain.identifiers import (
    D_ECPR_SYSTEMS,
    FORMATS,
    REPLACEMENT_SYSTEMS,
    X_ECPR_SYSTEM,
    ReplacementCpr,
    ReplacementKind,
    parse_replacement_cpr,
)
from integration.errors import ConfigurationError, StoreDamaged, StoreRefused, Transient
from integration.log import mask_cpr, one_line
from integration.service.audit_chain import AuditEntry
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
    """The audit log: verify its evidence, list a patient's trail."""


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
        evidence = store.evidence()
        result = examine(
            evidence.head, evidence.records, evidence.rows, keys, anchors, allow_empty, evidence.foreign_objects
        )
        unrecorded = None
        if evidence.records:  # it read every patient's records: who did is recorded
            detail = {**reader(), "intact": result.intact, "records": len(evidence.records), "anchors": len(anchors)}
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


_NOT_A_PATIENT = (
    "not a CPR number (ten digits, DDMMYYSSSS, DDMMYY-SSSS or DDMMYY SSSS, starting with a real birth date), "
    "nor a replacement number (an X-eCPR, DDMMYY1AB2, alone or as SYSTEM|VALUE; a D-eCPR as SYSTEM|VALUE)"
)


def _patient(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    """The key the audit files the patient under, from how it is typed (docs/decisions/0017): a CPR number
    (DDMMYYSSSS, DDMMYY-SSSS, DDMMYY SSSS) as its ten digits, also as `urn:oid:1.2.208.176.1.2|NUMBER`; a
    replacement number in FHIR's token form `SYSTEM|VALUE` (the system X-eCPR's or a D-eCPR's); a bare
    X-eCPR value (DDMMYY, 1 or 7, two capital letters, a digit) under X-eCPR's system, since no other system
    issues that shape. A bare D-eCPR value is refused: six systems issue that shape, and two regions may
    give the same value to different patients. A usage error never repeats what was typed."""
    text = value.strip()
    system, bar, number = text.partition("|")
    try:
        if bar and system == CPR_SYSTEM:
            return read_cpr(number).value
        if bar:
            return parse_replacement_cpr(system, number).key
        if FORMATS[ReplacementKind.X_ECPR].fullmatch(text):
            return ReplacementCpr(X_ECPR_SYSTEM, text).key
        if FORMATS[ReplacementKind.D_ECPR].fullmatch(text):
            raise click.BadParameter(
                "a D-eCPR names its patient only with its system: type SYSTEM|VALUE, the system one of "
                + ", ".join(sorted(D_ECPR_SYSTEMS))
            )
        return read_cpr(text).value
    except ValueError as exc:
        problem = str(exc) if bar and system in REPLACEMENT_SYSTEMS else _NOT_A_PATIENT
        raise click.BadParameter(problem) from None


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
