"""The audit store's schema, its versions and their migrations.

The schema is versioned (`schema_version`); `MIGRATIONS` bring any earlier store up to date, under a
lock, so that consumers starting together on a fresh database do not race. A store opened by a reader
(`check_existing`) must already exist at this release's version: nothing is created or migrated, and a
missing one is `StoreMissing`. A store whose schema is not what its recorded version says (a tampered
`schema_version`) is `StoreDamaged`: never migrated.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NoReturn

from integration.adapters.sql import audit_state
from integration.adapters.sql.audit_log import AuditLog
from integration.adapters.sql.audit_state import COVERED, StateDigests
from integration.adapters.sql.unit_of_work import UnitOfWork
from integration.errors import ConfigurationError, StoreDamaged
from integration.service.audit_chain import GENESIS, AuditEntry


class StoreMissing(Exception):
    """Asked to open an existing audit store, there is none: no file, or not the audit tables (dropped?)."""


SCHEMA_V1 = (
    """CREATE TABLE IF NOT EXISTS audit_log (
        seq BIGINT PRIMARY KEY, at TEXT NOT NULL, step TEXT NOT NULL, flow TEXT NOT NULL,
        message_id TEXT NOT NULL, patient TEXT, detail TEXT NOT NULL,
        prev_hash TEXT NOT NULL, hash TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS audit_log_patient ON audit_log (patient)",
    """CREATE TABLE IF NOT EXISTS audit_head (
        id INTEGER PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL, hash TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS rehab_course (
        patient TEXT PRIMARY KEY, referring_department TEXT NOT NULL, municipality_code TEXT NOT NULL,
        is_open INTEGER NOT NULL, responsible TEXT NOT NULL, changed_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS hotline_request (
        request_id TEXT PRIMARY KEY, thread_id TEXT, requester TEXT NOT NULL, department TEXT,
        patient TEXT NOT NULL, received_at TEXT NOT NULL, answered_at TEXT, overdue_noted_at TEXT)""",
    "CREATE INDEX IF NOT EXISTS hotline_request_thread ON hotline_request (thread_id)",
    """CREATE TABLE IF NOT EXISTS medcom_received (
        bundle_id TEXT PRIMARY KEY, header_id TEXT NOT NULL, at TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS medcom_received_header ON medcom_received (header_id)",
    """CREATE TABLE IF NOT EXISTS medcom_ack (
        header_id TEXT PRIMARY KEY, code TEXT NOT NULL, ack TEXT NOT NULL, at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS outbound_message (
        header_id TEXT PRIMARY KEY, flow TEXT NOT NULL, output TEXT NOT NULL, first_sent_at TEXT NOT NULL,
        last_sent_at TEXT NOT NULL, resends INTEGER NOT NULL, state TEXT NOT NULL, settled_at TEXT)""",
    "CREATE INDEX IF NOT EXISTS outbound_message_state ON outbound_message (state, last_sent_at)",
    """CREATE TABLE IF NOT EXISTS processed_message (
        flow TEXT NOT NULL, message_id TEXT NOT NULL, at TEXT NOT NULL, outputs TEXT NOT NULL,
        PRIMARY KEY (flow, message_id))""",
)
# Each step brings the schema from the version before it; a store records the version it reached.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    SCHEMA_V1,
    (  # 2: a processed message's body hash (a reused message-id is told from a redelivery); our failures
        "ALTER TABLE processed_message ADD COLUMN body_sha256 TEXT",
        """CREATE TABLE IF NOT EXISTS delivery_failure (
            flow TEXT NOT NULL, message_id TEXT NOT NULL, failures INTEGER NOT NULL, last_error TEXT NOT NULL,
            at TEXT NOT NULL, PRIMARY KEY (flow, message_id))""",
    ),
    (  # 3: the evidence (decision 15): the state digests of a record's transaction, and its HMAC
        "ALTER TABLE audit_log ADD COLUMN state TEXT",
        "ALTER TABLE audit_log ADD COLUMN mac TEXT",
    ),
    (  # 4: the content digest of a MedCom message received (a changed message resent under its id is refused);
        # rows from before have none (NULL: unknown) and keep their state digests (audit_state: `added`)
        "ALTER TABLE medcom_received ADD COLUMN content_sha256 TEXT",
    ),
    (  # 5: a course's place on the pathway (courses.py): its stage, and the rest as canonical JSON; rows from
        # before hold NULL in both (the defaults) and keep their state digests (audit_state: `added`)
        "ALTER TABLE rehab_course ADD COLUMN stage TEXT",
        "ALTER TABLE rehab_course ADD COLUMN pathway TEXT",
        "CREATE INDEX IF NOT EXISTS rehab_course_stage ON rehab_course (stage)",
    ),
    (  # 6: the HL7 v2 messages the MLLP listener published (hl7_received.py): a resent MSH-10 gets its ACK again
        """CREATE TABLE IF NOT EXISTS hl7_received (
            sending_application TEXT NOT NULL, sending_facility TEXT NOT NULL, control_id TEXT NOT NULL,
            content_sha256 TEXT NOT NULL, message_id TEXT NOT NULL, ack_code TEXT NOT NULL, ack TEXT NOT NULL,
            at TEXT NOT NULL, PRIMARY KEY (sending_application, sending_facility, control_id))""",
    ),
    (  # 7: discharges home from a cardiology or cardiac-surgery unit waiting for their discharge event
        # (HospitalNotification SLHJ; watched.py, domain/missed_referral.py), keyed by the patient and the episode
        # (an episode value alone is not unique across patients); new in this unreleased version, so changed here
        """CREATE TABLE IF NOT EXISTS watched_episode (
            patient TEXT NOT NULL, episode TEXT NOT NULL, unit TEXT NOT NULL, discharged_at TEXT NOT NULL,
            due_at TEXT NOT NULL, header_id TEXT NOT NULL, watched_at TEXT NOT NULL, matched_by TEXT,
            matched_at TEXT, cancelled_at TEXT, PRIMARY KEY (patient, episode))""",
    ),
    (  # 8: each outgoing body once, as bytes keyed by its SHA-256, compressed when it pays (bodies.py, decision 32);
        # processed_message.outputs and outbound_message.output name it from here on. Rows from before keep their
        # bodies inline and their state digests: nothing they hold changes
        """CREATE TABLE IF NOT EXISTS output_body (
            body_sha256 TEXT PRIMARY KEY, encoding TEXT NOT NULL, body {blob} NOT NULL)""",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
STATE_COVERED_FROM = 3  # a store migrated to this version adopts the rows it holds into the chain, as they are
ADOPT_PER_RECORD = 1000  # rows whose digests one adoption record carries
TABLES = ("schema_version", "audit_log", "audit_head", *COVERED)


def version_of(value: object) -> int:
    """The recorded schema version, which must be a whole number from 1 on (StoreDamaged otherwise)."""
    try:
        version = int(str(value))
    except ValueError:
        raise StoreDamaged("the audit store's schema_version holds no version number (tampered?)") from None
    if version < 1:
        raise StoreDamaged(f"the audit store's schema_version holds {version}, which no release wrote (tampered?)")
    return version


def set_up(unit: UnitOfWork, log: AuditLog) -> None:
    """Create or migrate the schema, under a lock: consumers starting together do not race. A store
    newer than this release is a ConfigurationError; one whose schema its version belies, StoreDamaged."""
    with unit.transaction() as cursor:
        unit.lock_schema(cursor)
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)"
        )
        cursor.execute("SELECT version FROM schema_version WHERE id = 1")
        row = cursor.fetchone()
        if row is None and "audit_log" in unit.tables(cursor):
            raise StoreDamaged("the audit store has tables but no schema version row (tampered?): not migrated")
        version = 0 if row is None else version_of(row[0])
        if version > SCHEMA_VERSION:
            raise ConfigurationError(
                f"the audit store has schema version {version}, newer than this release knows ({SCHEMA_VERSION})"
            )
        _migrate(unit, cursor, version)
        if row is None:
            cursor.execute(unit.sql("INSERT INTO schema_version (id, version) VALUES (1, ?)"), (SCHEMA_VERSION,))
        elif version != SCHEMA_VERSION:
            cursor.execute(unit.sql("UPDATE schema_version SET version = ? WHERE id = 1"), (SCHEMA_VERSION,))
        cursor.execute(unit.sql("SELECT seq FROM audit_head WHERE id = 1"))
        if cursor.fetchone() is None:
            cursor.execute(unit.sql("INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, ?)"), (GENESIS,))
        if 0 < version < STATE_COVERED_FROM:
            _adopt_state(unit, log, cursor, version)


def _migrate(unit: UnitOfWork, cursor: Any, version: int) -> None:
    """Run the migrations after `version`; a statement the schema refuses is StoreDamaged."""
    for statement in (s for step in MIGRATIONS[version:] for s in step):
        try:
            cursor.execute(statement.replace("{blob}", unit.blob_type))
        except Exception as exc:
            if not unit.schema_error(exc):
                raise
            said = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise StoreDamaged(
                f"the audit store's schema is not what its version {version} says "
                f"({type(exc).__name__}: {said}): not migrated"
            ) from None


def _adopt_state(unit: UnitOfWork, log: AuditLog, cursor: Any, version: int) -> None:
    """Put the digests of the rows an older store holds into the chain: from here on, a change by
    anyone but the service shows. (What was changed before the upgrade cannot be told.)"""
    unit.lock_chain(cursor)
    stamp = datetime.now(UTC).isoformat()
    rows: list[tuple[str, str, str]] = []
    for table in COVERED:
        rows += [(table, key, digest) for key, (digest, _) in audit_state.every_row(cursor, table).items()]
    for start in range(0, len(rows), ADOPT_PER_RECORD):
        part = rows[start : start + ADOPT_PER_RECORD]
        state: StateDigests = {}
        for table, key, digest in part:
            state.setdefault(table, {})[key] = digest
        detail = {"fromVersion": version, "rows": len(part), "of": len(rows)}
        log.append(cursor, [AuditEntry("state-adopted", "audit", "-", detail)], stamp, state)


def check_existing(unit: UnitOfWork) -> None:
    """The store must exist, whole, at this release's version: a reader creates and migrates nothing
    (StoreMissing when it does not exist, ConfigurationError at another version)."""
    with unit.transaction(write=False) as cursor:
        missing = [t for t in TABLES if t not in unit.tables(cursor)]
        if len(missing) == len(TABLES):
            raise StoreMissing("none of the audit store's tables exists")
        if "schema_version" not in missing:  # an older store lacks the tables later versions add: say so first
            cursor.execute("SELECT version FROM schema_version WHERE id = 1")
            found = cursor.fetchone()
            if found is not None and version_of(found[0]) < SCHEMA_VERSION:
                _refuse_version(version_of(found[0]))
        if missing:
            raise StoreMissing(f"the audit store lacks table(s) {', '.join(missing)} (dropped?)")
        cursor.execute("SELECT version FROM schema_version WHERE id = 1")
        row = cursor.fetchone()
        cursor.execute("SELECT seq FROM audit_head WHERE id = 1")
        head = cursor.fetchone()
    if row is None or head is None:
        raise StoreMissing(f"the audit store lacks its {'schema version' if row is None else 'head'} row")
    version = version_of(row[0])
    if version != SCHEMA_VERSION:
        _refuse_version(version)


def _refuse_version(version: int) -> NoReturn:
    raise ConfigurationError(
        f"the audit store has schema version {version}, this release reads {SCHEMA_VERSION}"
        + (": start the service (integration run) once to migrate it" if version < SCHEMA_VERSION else "")
    )
