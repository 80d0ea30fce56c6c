"""The audit chain's repository: the hash-chained records (`audit_log`) and the chain's head (`audit_head`).

Records are only appended, in the transaction that makes the changes they report, under the chain
lock; the last record of a transaction carries the digests of the covered rows it left (audit_state).
With a signing key, every record gets an HMAC. The readers give the records back as written: all of them
a chunk at a time (`records`), or those of a patient's trail; `audit verify` streams them from one
snapshot (`evidence.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import orjson

from integration.adapters.sql.audit_state import StateDigests
from integration.adapters.sql.unit_of_work import UnitOfWork
from integration.errors import ConfigurationError, StoreRefused
from integration.service.audit_chain import AuditEntry, AuditRecord, chain, malformed_head

Signer = Callable[[str], str]  # a record's hash → its HMAC, "key-id:hex"
RECORD_COLUMNS = "seq, at, step, flow, message_id, patient, detail, prev_hash, hash, state, mac"
RECORDS_PER_READ = 1000  # records per read transaction of `records`
INSERT_RECORD = (
    "INSERT INTO audit_log (seq, at, step, flow, message_id, patient, detail, prev_hash, hash, state, mac) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class AuditLog:
    """The chain over one unit of work; `sign` gives each appended record its HMAC."""

    def __init__(self, unit: UnitOfWork, sign: Signer | None = None) -> None:
        self._unit = unit
        self._sign = sign

    def append(self, cursor: Any, entries: Sequence[AuditEntry], stamp: str, state: StateDigests) -> None:
        """Append entries to the chain (one of its own when only state changed), the state with the last.
        The caller holds the chain lock (`UnitOfWork.lock_chain`) in this transaction."""
        if state and not entries:
            entries = [AuditEntry("state-changed", "audit", "-")]
        if not entries:
            return
        seq, prev = self._head(cursor)
        records = chain(entries, seq, prev, stamp, state, self._sign)
        cursor.executemany(self._unit.sql(INSERT_RECORD), [_row(r) for r in records])
        cursor.execute(
            self._unit.sql("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1"), (records[-1].seq, records[-1].hash)
        )

    def _head(self, cursor: Any) -> tuple[int, str]:
        """The head; StoreRefused when it holds values of types the service never writes (nothing is
        appended after such a head: `audit verify` names it)."""
        cursor.execute(self._unit.sql("SELECT seq, hash FROM audit_head WHERE id = 1"))
        seq, digest = cursor.fetchone()
        if (problem := malformed_head((seq, digest))) is not None:
            raise StoreRefused(f"the audit chain's head is not as the service wrote it: {problem}")
        return seq, digest

    def head(self) -> tuple[int, str]:
        """(sequence number of the last record, its hash); (0, GENESIS) for an empty chain. StoreRefused
        when the head is malformed."""
        with self._unit.transaction(write=False) as cursor:
            return self._head(cursor)

    def rows(self, where: str = "", params: tuple[Any, ...] = ()) -> list[AuditRecord]:
        """The records matching `where` (an SQL WHERE clause with `?` placeholders), in chain order."""
        with self._unit.transaction(write=False) as cursor:
            cursor.execute(self._unit.sql(f"SELECT {RECORD_COLUMNS} FROM audit_log {where} ORDER BY seq"), params)
            return [record_from_row(r) for r in cursor.fetchall()]

    def records(self, after: int = 0, chunk: int = RECORDS_PER_READ) -> Iterator[AuditRecord]:
        """Every record after record `after`, in chain order, read `chunk` at a time, each chunk in a short
        read transaction of its own: never the whole log in memory, and no transaction left open while the
        caller holds the iterator. (Records are only appended: the chunks join into the log as it was at the
        first read, plus what was appended since.)"""
        query = self._unit.sql(f"SELECT {RECORD_COLUMNS} FROM audit_log WHERE seq > ? ORDER BY seq LIMIT {int(chunk)}")
        while True:
            with self._unit.transaction(write=False) as cursor:
                cursor.execute(query, (after,))
                rows = cursor.fetchall()
            if not rows:
                return
            yield from (record_from_row(row) for row in rows)
            after = rows[-1][0]

    def check_signing(self) -> None:
        """Without a key, refuse to write to a log whose last record is signed: a record appended
        unsigned would read as a forgery (ConfigurationError)."""
        if self._sign is not None:
            return
        with self._unit.transaction(write=False) as cursor:
            cursor.execute("SELECT mac FROM audit_log WHERE seq = (SELECT seq FROM audit_head WHERE id = 1)")
            row = cursor.fetchone()
        if row is not None and row[0]:
            raise ConfigurationError(
                f"the audit log is signed (HMAC key id {str(row[0]).split(':')[0]!r}) and no key is configured: "
                "set audit_hmac_key_file to the service's key file"
            )


def _row(record: AuditRecord) -> tuple[Any, ...]:
    """A record as the values of INSERT_RECORD: detail and state as JSON with sorted keys."""
    state = None if record.state is None else orjson.dumps(record.state, option=orjson.OPT_SORT_KEYS).decode()
    return (
        record.seq,
        record.at,
        record.step,
        record.flow,
        record.message_id,
        record.patient,
        orjson.dumps(record.detail, option=orjson.OPT_SORT_KEYS).decode(),
        record.prev_hash,
        record.hash,
        state,
        record.mac,
    )


def record_from_row(row: Sequence[Any]) -> AuditRecord:
    """A record from a row of RECORD_COLUMNS."""
    state = None if row[9] is None else _json(row[9])
    return AuditRecord(row[0], row[1], row[2], row[3], row[4], row[5], _json(row[6]), row[7], row[8], state, row[10])


def _json(text: Any) -> Any:
    """A stored JSON value; a value that is not JSON text (written by someone else: text that does not
    parse, a blob even of JSON) is kept as text, so that verification reports the record as changed
    instead of failing to read it."""
    if not isinstance(text, str):
        return {"<not JSON>": f"<{type(text).__name__}>"}
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return {"<not JSON>": text}
