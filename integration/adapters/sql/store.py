"""The audit store: the hash-chained audit log and the processed-messages table, over SQL.

One implementation for both databases; `sqlite_store` and `postgres_store` supply the
connection, the placeholders, the lock that serialises appends to the chain, and the
translation of database errors: an outage (no connection, a timeout, a lock not granted) is
Transient, so the consumer waits for the database; a write refused for what it holds (a
constraint, a value the column cannot take) is StoreRefused, a defect counted against the message.

The schema is versioned (`schema_version`); `MIGRATIONS` bring any earlier store up to date,
under a lock, so that consumers starting together on a fresh database do not race. Opened with
`create=False` (the commands that read or verify), a store must already exist at this release's
version: nothing is created or migrated, and a missing one is `StoreMissing`. A store whose schema is
not what its recorded version says (a tampered `schema_version`) is `StoreDamaged`: never migrated.

The tables that drive behaviour are covered by the chain (`audit_state`): each transaction's last
record carries the digests of the rows it left. With a signing key, every record gets an HMAC.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from integration.adapters.sql import audit_state
from integration.adapters.sql.audit_state import COVERED, StateDigests
from integration.domain.course import (
    Course,
    EarlierMessage,
    OpenRequest,
    OutboundState,
    OutboundStatus,
    Responsible,
    StateChanges,
)
from integration.errors import ConfigurationError, StoreDamaged
from integration.flows.results import FHIR_JSON
from integration.service.audit_chain import GENESIS, AuditEntry, AuditRecord, chain

NO_CHANGES = StateChanges()
Signer = Callable[[str], str]  # a record's hash → its HMAC, "key-id:hex"


class StoreMissing(Exception):
    """Asked to open an existing audit store, there is none: no file, or not the audit tables (dropped?)."""


@dataclass(frozen=True, slots=True)
class Evidence:
    """What `audit verify` examines, read in one snapshot: the head, every record, and every row of the
    covered tables (table → key digest → (row digest, the key as it may be shown))."""

    head: tuple[int, str]
    records: list[AuditRecord]
    rows: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoredOutput:
    """One outgoing message exactly as first published, for byte-identical republishing."""

    exchange: str
    routing_key: str
    message_id: str
    body: bytes
    content_type: str = FHIR_JSON
    awaits_ack: str | None = None  # a MedCom message of ours: its MessageHeader id, tracked until acked
    patient: str | None = None  # whom a tracked message is about, for the audit records of its acks and resends

    def as_json(self) -> dict[str, Any]:
        return {
            "exchange": self.exchange,
            "routingKey": self.routing_key,
            "messageId": self.message_id,
            "contentType": self.content_type,
            "body": self.body.decode("utf-8"),
            "awaitsAck": self.awaits_ack,
            "patient": self.patient,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> StoredOutput:
        return cls(
            doc["exchange"],
            doc["routingKey"],
            doc["messageId"],
            doc["body"].encode("utf-8"),
            doc.get("contentType", FHIR_JSON),
            doc.get("awaitsAck"),
            doc.get("patient"),
        )


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """One of our MedCom messages waiting for its ack, as last sent."""

    header_id: str
    flow: str
    output: StoredOutput
    first_sent_at: datetime
    last_sent_at: datetime
    resends: int
    state: OutboundState

    @property
    def patient(self) -> str | None:
        return self.output.patient


@dataclass(frozen=True, slots=True)
class Resend:
    """A resend of one of our messages (`body` set) or the decision to stop resending (`body` None)."""

    header_id: str
    body: bytes | None


Processed = Sequence[tuple[str, str, str, Sequence[StoredOutput]]]  # (flow, key, body SHA-256, outputs)


@dataclass(frozen=True, slots=True)
class Failure:
    """Our side failed on a delivery (flow, key): counted, so attempts never depend on a header."""

    flow: str
    key: str
    error: str


@dataclass(frozen=True, slots=True)
class EarlierDelivery:
    """What the store knows of a key (flow, message-id or body hash) before a delivery is processed."""

    processed: bool
    digest: str | None = None  # the processed message's body SHA-256 (None: processed before hashes were kept)
    at: str | None = None  # when it was processed
    outputs: tuple[StoredOutput, ...] = ()
    failures: int = 0  # how often our side failed on it


@dataclass(frozen=True, slots=True)
class PendingRequest:
    request: OpenRequest
    received_at: datetime
    overdue_noted: bool


class AuditStore(Protocol):
    def deliveries(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], EarlierDelivery]: ...

    def record(
        self,
        entries: Sequence[AuditEntry],
        at: datetime,
        processed: Processed = (),
        changes: StateChanges = NO_CHANGES,
        resends: Sequence[Resend] = (),
        failures: Sequence[Failure] = (),
    ) -> None: ...

    def received(self, header_id: str) -> EarlierMessage | None: ...

    def bundle_header(self, bundle_id: str) -> str | None: ...

    def outbound(self, header_id: str) -> OutboundStatus | None: ...

    def outbound_messages(
        self, states: Sequence[str], sent_before: datetime | None = None, limit: int | None = None
    ) -> list[OutboundMessage]: ...

    def outbound_count(self, state: str) -> int: ...

    def course(self, patient: str) -> Course | None: ...

    def requester(self, thread_id: str) -> str | None: ...

    def open_requests(self) -> list[PendingRequest]: ...

    def note_overdue(self, request_ids: Sequence[str], at: datetime, entries: Sequence[AuditEntry] = ()) -> None: ...

    def records(self) -> Iterator[AuditRecord]: ...

    def evidence(self) -> Evidence: ...

    def head(self) -> tuple[int, str]: ...

    def trail(self, patient: str) -> list[AuditRecord]: ...

    def close(self) -> None: ...


def _version(value: object) -> int:
    """The recorded schema version, which must be a whole number from 1 on (StoreDamaged otherwise)."""
    try:
        version = int(str(value))
    except ValueError:
        raise StoreDamaged("the audit store's schema_version holds no version number (tampered?)") from None
    if version < 1:
        raise StoreDamaged(f"the audit store's schema_version holds {version}, which no release wrote (tampered?)")
    return version


def _outputs_json(outputs: Sequence[StoredOutput]) -> str:
    return orjson.dumps([o.as_json() for o in outputs]).decode()


def _utc(moment: datetime) -> str:
    """Outbound times in UTC with microseconds, so that they compare as text in SQL across DST changes."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


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
)
SCHEMA_VERSION = len(MIGRATIONS)
STATE_COVERED_FROM = 3  # a store migrated to this version adopts the rows it holds into the chain, as they are
ADOPT_PER_RECORD = 1000  # rows whose digests one adoption record carries
TABLES = ("schema_version", "audit_log", "audit_head", *COVERED)


class SqlAuditStore:
    """The store over a DB-API connection; subclasses open it and lock the chain."""

    placeholder = "?"

    def __init__(self, connection: Any, create: bool = True, sign: Signer | None = None) -> None:
        self._db = connection
        self._sign = sign
        if create:
            self._setup()
        else:
            self._check_existing()
        self._check_signing()

    # -- hooks for the two databases -------------------------------------------------------
    def _transaction(self, write: bool = True) -> Any:
        raise NotImplementedError

    def _lock_chain(self, cursor: Any) -> None:
        """Serialise appends to the chain across processes, for the rest of the transaction."""

    def _lock_schema(self, cursor: Any) -> None:
        """Serialise schema changes across processes, for the rest of the transaction."""

    def _translate(self, exc: Exception) -> Exception:
        return exc

    def _schema_error(self, exc: Exception) -> bool:
        """Whether a statement failed for the schema it met (a table or column missing or already there),
        not for an outage: a migration that meets one finds a store other than its version says."""
        return False

    def _tables(self, cursor: Any) -> set[str]:
        """The names of the tables this connection sees."""
        raise NotImplementedError

    def _snapshot(self, cursor: Any) -> None:
        """Make the rest of this read transaction see one consistent snapshot of every table."""

    # ---------------------------------------------------------------------------------------
    def _sql(self, text: str) -> str:
        return text.replace("?", self.placeholder)

    def _setup(self) -> None:
        """Create or migrate the schema, under a lock: consumers starting together do not race."""
        with self._transaction() as cursor:
            self._lock_schema(cursor)
            cursor.execute(
                "CREATE TABLE IF NOT EXISTS schema_version "
                "(id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)"
            )
            cursor.execute("SELECT version FROM schema_version WHERE id = 1")
            row = cursor.fetchone()
            if row is None and "audit_log" in self._tables(cursor):
                raise StoreDamaged("the audit store has tables but no schema version row (tampered?): not migrated")
            version = 0 if row is None else _version(row[0])
            if version > SCHEMA_VERSION:
                raise ConfigurationError(
                    f"the audit store has schema version {version}, newer than this release knows ({SCHEMA_VERSION})"
                )
            for statement in (s for step in MIGRATIONS[version:] for s in step):
                try:
                    cursor.execute(statement)
                except Exception as exc:
                    if not self._schema_error(exc):
                        raise
                    said = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    raise StoreDamaged(
                        f"the audit store's schema is not what its version {version} says "
                        f"({type(exc).__name__}: {said}): not migrated"
                    ) from None
            if row is None:
                cursor.execute(self._sql("INSERT INTO schema_version (id, version) VALUES (1, ?)"), (SCHEMA_VERSION,))
            elif version != SCHEMA_VERSION:
                cursor.execute(self._sql("UPDATE schema_version SET version = ? WHERE id = 1"), (SCHEMA_VERSION,))
            cursor.execute(self._sql("SELECT seq FROM audit_head WHERE id = 1"))
            if cursor.fetchone() is None:
                cursor.execute(self._sql("INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, ?)"), (GENESIS,))
            if 0 < version < STATE_COVERED_FROM:
                self._adopt_state(cursor, version)

    def _adopt_state(self, cursor: Any, version: int) -> None:
        """Put the digests of the rows an older store holds into the chain: from here on, a change by
        anyone but the service shows. (What was changed before the upgrade cannot be told.)"""
        self._lock_chain(cursor)
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
            self._append(cursor, [AuditEntry("state-adopted", "audit", "-", detail)], stamp, state)

    def _check_existing(self) -> None:
        """The store must exist, whole, at this release's version: a reader creates and migrates nothing."""
        with self._transaction(write=False) as cursor:
            missing = [t for t in TABLES if t not in self._tables(cursor)]
            if len(missing) == len(TABLES):
                raise StoreMissing("none of the audit store's tables exists")
            if missing:
                raise StoreMissing(f"the audit store lacks table(s) {', '.join(missing)} (dropped?)")
            cursor.execute("SELECT version FROM schema_version WHERE id = 1")
            row = cursor.fetchone()
            cursor.execute("SELECT seq FROM audit_head WHERE id = 1")
            head = cursor.fetchone()
        if row is None or head is None:
            raise StoreMissing(f"the audit store lacks its {'schema version' if row is None else 'head'} row")
        version = _version(row[0])
        if version != SCHEMA_VERSION:
            raise ConfigurationError(
                f"the audit store has schema version {version}, this release reads {SCHEMA_VERSION}"
                + (": start the service (integration run) once to migrate it" if version < SCHEMA_VERSION else "")
            )

    def _check_signing(self) -> None:
        """Without a key, refuse to write to a log whose last record is signed: a record appended
        unsigned would read as a forgery."""
        if self._sign is not None:
            return
        with self._transaction(write=False) as cursor:
            cursor.execute("SELECT mac FROM audit_log WHERE seq = (SELECT seq FROM audit_head WHERE id = 1)")
            row = cursor.fetchone()
        if row is not None and row[0]:
            raise ConfigurationError(
                f"the audit log is signed (HMAC key id {str(row[0]).split(':')[0]!r}) and no key is configured: "
                "set audit_hmac_key_file to the service's key file"
            )

    def processed(self, flow: str, message_id: str) -> list[StoredOutput] | None:
        earlier = self.deliveries([(flow, message_id)]).get((flow, message_id))
        return list(earlier.outputs) if earlier and earlier.processed else None

    def deliveries(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], EarlierDelivery]:
        """What is known of each of `keys` (flow, key): processed (with its body hash and stored outputs),
        and how often our side failed on it. Keys the store never saw are left out."""
        processed: dict[tuple[str, str], tuple[str | None, str, tuple[StoredOutput, ...]]] = {}
        failures: dict[tuple[str, str], int] = {}
        if not keys:
            return {}
        with self._transaction(write=False) as cursor:
            for flow in {f for f, _ in keys}:
                ids = sorted({m for f, m in keys if f == flow})
                marks = ", ".join("?" * len(ids))
                cursor.execute(
                    self._sql(
                        "SELECT message_id, body_sha256, at, outputs FROM processed_message "
                        f"WHERE flow = ? AND message_id IN ({marks})"
                    ),
                    (flow, *ids),
                )
                for message_id, digest, at, outputs in cursor.fetchall():
                    stored = tuple(StoredOutput.from_json(o) for o in orjson.loads(outputs))
                    processed[(flow, message_id)] = (digest, at, stored)
                cursor.execute(
                    self._sql(
                        f"SELECT message_id, failures FROM delivery_failure WHERE flow = ? AND message_id IN ({marks})"
                    ),
                    (flow, *ids),
                )
                failures.update({(flow, m): int(n) for m, n in cursor.fetchall()})
        found = {}
        for key in set(processed) | set(failures):
            if key in processed:
                digest, at, stored = processed[key]
                found[key] = EarlierDelivery(True, digest, at, stored, failures.get(key, 0))
            else:
                found[key] = EarlierDelivery(False, failures=failures[key])
        return found

    def record(
        self,
        entries: Sequence[AuditEntry],
        at: datetime,
        processed: Processed = (),
        changes: StateChanges = NO_CHANGES,
        resends: Sequence[Resend] = (),
        failures: Sequence[Failure] = (),
    ) -> None:
        """Append entries to the chain, mark messages processed, count failures and record state, in one
        transaction."""
        if not (entries or processed or changes != NO_CHANGES or resends or failures):
            return
        stamp = at.isoformat()
        with self._transaction() as cursor:
            self._lock_chain(cursor)
            state = self._record_courses_and_requests(cursor, changes, stamp)
            if processed:
                audit_state.merge(state, self._record_processed(cursor, processed, stamp, _utc(at)))
            if failures:
                cursor.executemany(
                    self._sql(
                        "INSERT INTO delivery_failure (flow, message_id, failures, last_error, at) "
                        "VALUES (?, ?, 1, ?, ?) ON CONFLICT (flow, message_id) "
                        "DO UPDATE SET failures = delivery_failure.failures + 1, "
                        "last_error = excluded.last_error, at = excluded.at"
                    ),
                    [(f.flow, f.key, f.error, stamp) for f in failures],
                )
                keys = {(f.flow, f.key) for f in failures}
                audit_state.merge(state, {"delivery_failure": self._read_back(cursor, "delivery_failure", keys)})
            audit_state.merge(state, self._record_messaging(cursor, changes, resends, stamp, _utc(at)))
            self._append(cursor, entries, stamp, state)

    # Each writer below returns the digests of the covered rows it changed, as they now stand: computed from
    # what it inserted when it knows that, read back when the database computed them (upserts, updates).
    def _read_back(self, cursor: Any, table: str, keys: set[tuple[Any, ...]]) -> dict[str, str]:
        return audit_state.read_back(cursor, self._sql, table, keys)

    def _insert_new(self, cursor: Any, table: str, rows: Sequence[tuple[Any, ...]]) -> dict[str, str]:
        """Insert the rows (the covered columns' values, in order) whose key the table does not hold yet;
        the digests of those inserted (the others did not change)."""
        fresh = audit_state.first_of_each_key(table, rows)
        inserted = self._insert_missing(cursor, table, fresh) if fresh else []
        return audit_state.digest_rows(table, inserted)

    def _insert_missing(
        self, cursor: Any, table: str, rows: dict[tuple[Any, ...], tuple[Any, ...]]
    ) -> list[tuple[Any, ...]]:
        """Insert rows by key, skipping keys the table holds; the rows inserted. (Asks which keys are there
        first; a database with INSERT … RETURNING does it in one statement.)"""
        present = audit_state.keys_present(cursor, self._sql, table, rows)
        new = [row for key, row in rows.items() if key not in present]
        if new:
            cursor.executemany(self._sql(audit_state.insert_sql(table)), new)
        return new

    def _record_courses_and_requests(self, cursor: Any, changes: StateChanges, stamp: str) -> StateDigests:
        state: StateDigests = {}
        if changes.courses:
            cursor.executemany(
                self._sql(
                    "INSERT INTO rehab_course (patient, referring_department, municipality_code, is_open, "
                    "responsible, changed_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (patient) DO UPDATE SET "
                    "referring_department = excluded.referring_department, municipality_code = "
                    "excluded.municipality_code, is_open = excluded.is_open, responsible = excluded.responsible, "
                    "changed_at = excluded.changed_at"
                ),
                [
                    (c.patient, c.referring_department, c.municipality_code, int(c.open), c.responsible, stamp)
                    for c in changes.courses
                ],
            )
            state["rehab_course"] = self._read_back(cursor, "rehab_course", {(c.patient,) for c in changes.courses})
        if changes.opened:
            rows = [
                (r.request_id, r.thread_id, r.requester, r.department, r.patient, stamp, None, None)
                for r in changes.opened
            ]
            audit_state.merge(state, {"hotline_request": self._insert_new(cursor, "hotline_request", rows)})
        if changes.answered:
            cursor.executemany(
                self._sql("UPDATE hotline_request SET answered_at = ? WHERE thread_id = ? AND answered_at IS NULL"),
                [(stamp, thread) for thread in changes.answered],
            )
            answered = audit_state.rows_where(cursor, self._sql, "hotline_request", "thread_id", set(changes.answered))
            audit_state.merge(state, {"hotline_request": answered})
        return state

    def _record_processed(self, cursor: Any, processed: Processed, stamp: str, utc_stamp: str) -> StateDigests:
        """Mark messages processed with their outputs (a key already there fails the insert, so the digests
        are of what was inserted), and track those of our outputs that await an ack."""
        rows = [(flow, key, digest, stamp, _outputs_json(outputs)) for flow, key, digest, outputs in processed]
        cursor.executemany(
            self._sql(
                "INSERT INTO processed_message (flow, message_id, body_sha256, at, outputs) VALUES (?, ?, ?, ?, ?)"
            ),
            rows,
        )
        tracked = [
            (o.awaits_ack, flow, orjson.dumps(o.as_json()).decode(), utc_stamp, utc_stamp, 0, "awaiting", None)
            for flow, _, _, outputs in processed
            for o in outputs
            if o.awaits_ack
        ]
        return {
            "processed_message": audit_state.digest_rows("processed_message", rows),
            "outbound_message": self._insert_new(cursor, "outbound_message", tracked),
        }

    def _record_messaging(
        self, cursor: Any, changes: StateChanges, resends: Sequence[Resend], stamp: str, utc_stamp: str
    ) -> StateDigests:
        state: StateDigests = {}
        if changes.received:
            received = [(r.bundle_id, r.header_id, stamp, r.content) for r in changes.received]
            answered = [
                (r.header_id, r.code, orjson.dumps(r.ack).decode(), stamp) for r in changes.received if r.ack and r.code
            ]
            state["medcom_received"] = self._insert_new(cursor, "medcom_received", received)
            state["medcom_ack"] = self._insert_new(cursor, "medcom_ack", answered)
        if changes.acks:
            cursor.executemany(
                self._sql(
                    "UPDATE outbound_message SET state = ?, settled_at = ? "
                    "WHERE header_id = ? AND state IN ('awaiting', 'gave-up')"
                ),
                [("acknowledged" if a.code == "ok" else "failed", stamp, a.header_id) for a in changes.acks],
            )
        for resend in resends:
            if resend.body is None:
                cursor.execute(
                    self._sql("UPDATE outbound_message SET state = 'gave-up', settled_at = ? WHERE header_id = ?"),
                    (stamp, resend.header_id),
                )
                continue
            cursor.execute(self._sql("SELECT output FROM outbound_message WHERE header_id = ?"), (resend.header_id,))
            output = orjson.loads(cursor.fetchone()[0])
            output["body"] = resend.body.decode("utf-8")
            cursor.execute(
                self._sql(
                    "UPDATE outbound_message SET output = ?, last_sent_at = ?, resends = resends + 1 "
                    "WHERE header_id = ?"
                ),
                (orjson.dumps(output).decode(), utc_stamp, resend.header_id),
            )
        settled = {(a.header_id,) for a in changes.acks} | {(r.header_id,) for r in resends}
        if settled:
            state["outbound_message"] = self._read_back(cursor, "outbound_message", settled)
        return state

    def _append(self, cursor: Any, entries: Sequence[AuditEntry], stamp: str, state: StateDigests) -> None:
        """Append entries to the chain (one of its own when only state changed), the state with the last."""
        if state and not entries:
            entries = [AuditEntry("state-changed", "audit", "-")]
        if not entries:
            return
        cursor.execute(self._sql("SELECT seq, hash FROM audit_head WHERE id = 1"))
        seq, prev = cursor.fetchone()
        records = chain(entries, seq, prev, stamp, state, self._sign)
        cursor.executemany(
            self._sql(
                "INSERT INTO audit_log (seq, at, step, flow, message_id, patient, detail, prev_hash, hash, state, mac) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ),
            [
                (
                    r.seq,
                    r.at,
                    r.step,
                    r.flow,
                    r.message_id,
                    r.patient,
                    orjson.dumps(r.detail, option=orjson.OPT_SORT_KEYS).decode(),
                    r.prev_hash,
                    r.hash,
                    None if r.state is None else orjson.dumps(r.state, option=orjson.OPT_SORT_KEYS).decode(),
                    r.mac,
                )
                for r in records
            ],
        )
        cursor.execute(
            self._sql("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1"), (records[-1].seq, records[-1].hash)
        )

    def outbound_count(self, state: str) -> int:
        with self._transaction(write=False) as cursor:
            cursor.execute(self._sql("SELECT COUNT(*) FROM outbound_message WHERE state = ?"), (state,))
            return int(cursor.fetchone()[0])

    def received(self, header_id: str) -> EarlierMessage | None:
        with self._transaction(write=False) as cursor:
            cursor.execute(
                self._sql("SELECT bundle_id, content_sha256 FROM medcom_received WHERE header_id = ?"), (header_id,)
            )
            rows = cursor.fetchall()
            bundles = frozenset(str(r[0]) for r in rows)
            contents = frozenset(str(r[1]) for r in rows if r[1] is not None)
            cursor.execute(self._sql("SELECT code, ack FROM medcom_ack WHERE header_id = ?"), (header_id,))
            row = cursor.fetchone()
        if not bundles and row is None:
            return None
        code, ack = (None, None) if row is None else (str(row[0]), orjson.loads(row[1]))
        return EarlierMessage(bundles, code, ack, contents)

    def bundle_header(self, bundle_id: str) -> str | None:
        with self._transaction(write=False) as cursor:
            cursor.execute(self._sql("SELECT header_id FROM medcom_received WHERE bundle_id = ?"), (bundle_id,))
            row = cursor.fetchone()
        return None if row is None else str(row[0])

    def outbound(self, header_id: str) -> OutboundStatus | None:
        with self._transaction(write=False) as cursor:
            cursor.execute(
                self._sql("SELECT state, resends, output FROM outbound_message WHERE header_id = ?"), (header_id,)
            )
            row = cursor.fetchone()
        if row is None:
            return None
        return OutboundStatus(header_id, OutboundState(row[0]), int(row[1]), orjson.loads(row[2]).get("patient"))

    def outbound_messages(
        self, states: Sequence[str], sent_before: datetime | None = None, limit: int | None = None
    ) -> list[OutboundMessage]:
        """Our messages in these states (last sent before `sent_before`), the longest waiting first."""
        marks = ", ".join("?" * len(states))
        where, params = f"state IN ({marks})", list(states)
        if sent_before is not None:
            where, params = where + " AND last_sent_at < ?", [*params, _utc(sent_before)]
        with self._transaction(write=False) as cursor:
            cursor.execute(
                self._sql(
                    "SELECT header_id, flow, output, first_sent_at, last_sent_at, resends, state FROM outbound_message "
                    f"WHERE {where} ORDER BY last_sent_at" + (f" LIMIT {int(limit)}" if limit else "")
                ),
                tuple(params),
            )
            rows = cursor.fetchall()
        return [
            OutboundMessage(
                r[0],
                r[1],
                StoredOutput.from_json(orjson.loads(r[2])),
                datetime.fromisoformat(r[3]),
                datetime.fromisoformat(r[4]),
                int(r[5]),
                OutboundState(r[6]),
            )
            for r in rows
        ]

    def _rows(self, where: str = "", params: tuple[Any, ...] = ()) -> list[AuditRecord]:
        with self._transaction(write=False) as cursor:
            cursor.execute(
                self._sql(f"SELECT {RECORD_COLUMNS} FROM audit_log {where} ORDER BY seq"),
                params,
            )
            return [_record(r) for r in cursor.fetchall()]

    def course(self, patient: str) -> Course | None:
        with self._transaction(write=False) as cursor:
            cursor.execute(
                self._sql(
                    "SELECT referring_department, municipality_code, is_open, responsible FROM rehab_course "
                    "WHERE patient = ?"
                ),
                (patient,),
            )
            row = cursor.fetchone()
        return None if row is None else Course(patient, row[0], row[1], bool(row[2]), Responsible(row[3]))

    def requester(self, thread_id: str) -> str | None:
        with self._transaction(write=False) as cursor:
            cursor.execute(
                self._sql("SELECT requester FROM hotline_request WHERE thread_id = ? ORDER BY received_at LIMIT 1"),
                (thread_id,),
            )
            row = cursor.fetchone()
        return None if row is None else str(row[0])

    def open_requests(self) -> list[PendingRequest]:
        with self._transaction(write=False) as cursor:
            cursor.execute(
                self._sql(
                    "SELECT request_id, thread_id, requester, department, patient, received_at, overdue_noted_at "
                    "FROM hotline_request WHERE answered_at IS NULL ORDER BY received_at"
                )
            )
            rows = cursor.fetchall()
        return [
            PendingRequest(OpenRequest(r[0], r[1], r[2], r[3], r[4]), datetime.fromisoformat(r[5]), r[6] is not None)
            for r in rows
        ]

    def note_overdue(self, request_ids: Sequence[str], at: datetime, entries: Sequence[AuditEntry] = ()) -> None:
        """Note requests as reported overdue, with the audit entries that report them, in one transaction."""
        stamp = at.isoformat()
        with self._transaction() as cursor:
            self._lock_chain(cursor)
            cursor.executemany(
                self._sql("UPDATE hotline_request SET overdue_noted_at = ? WHERE request_id = ?"),
                [(stamp, r) for r in request_ids],
            )
            keys = {(r,) for r in request_ids}
            state = {"hotline_request": audit_state.read_back(cursor, self._sql, "hotline_request", keys)}
            self._append(cursor, entries, stamp, state if state["hotline_request"] else {})

    def records(self) -> Iterator[AuditRecord]:
        yield from self._rows()

    def evidence(self) -> Evidence:
        """The head, every record and every covered row, from one snapshot (the service may be writing)."""
        with self._transaction(write=False) as cursor:
            self._snapshot(cursor)
            cursor.execute("SELECT seq, hash FROM audit_head WHERE id = 1")
            seq, digest = cursor.fetchone()
            cursor.execute(f"SELECT {RECORD_COLUMNS} FROM audit_log ORDER BY seq")
            records = [_record(r) for r in cursor]
            rows = {table: audit_state.every_row(cursor, table) for table in COVERED}
        return Evidence((int(seq), str(digest)), records, rows)

    def head(self) -> tuple[int, str]:
        with self._transaction(write=False) as cursor:
            cursor.execute(self._sql("SELECT seq, hash FROM audit_head WHERE id = 1"))
            seq, digest = cursor.fetchone()
        return int(seq), str(digest)

    def trail(self, patient: str) -> list[AuditRecord]:
        return self._rows("WHERE patient = ?", (patient,))

    def close(self) -> None:
        self._db.close()


RECORD_COLUMNS = "seq, at, step, flow, message_id, patient, detail, prev_hash, hash, state, mac"


def _record(row: Sequence[Any]) -> AuditRecord:
    state = None if row[9] is None else _json(row[9])
    return AuditRecord(row[0], row[1], row[2], row[3], row[4], row[5], _json(row[6]), row[7], row[8], state, row[10])


def _json(text: Any) -> Any:
    """A stored JSON value; text that is not JSON (written by someone else) is kept as it is, so that
    verification reports the record as changed instead of failing to read it."""
    try:
        return orjson.loads(text)
    except (orjson.JSONDecodeError, TypeError):
        return {"<not JSON>": str(text)}
