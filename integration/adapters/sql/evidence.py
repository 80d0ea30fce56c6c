"""What `audit verify` reads (`StoreEvidence`), streamed from one snapshot of the store, and the state it
replays from the chain meanwhile (`ScratchReplay`), kept in a scratch SQLite file of its own.

Nothing here holds the log or a table in memory: records and rows come through the unit of work's
`stream` (SQLite steps its cursor; PostgreSQL reads a server-side cursor a chunk at a time), and the
replayed digests (one per covered row the chain ever wrote) go to a file that is deleted when the
examination ends. So verifying a log of any length takes the same memory; its time grows with the log.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from integration.adapters.sql import audit_state
from integration.adapters.sql.audit_log import RECORD_COLUMNS, record_from_row
from integration.adapters.sql.audit_state import COVERED
from integration.adapters.sql.unit_of_work import UnitOfWork
from integration.service.audit_chain import AuditRecord
from integration.service.audit_evidence import Row

WRITES_PER_FLUSH = 10_000  # replayed digests buffered before they go to the scratch file
SCRATCH_CACHE_KIB = 16_384  # the scratch file's page cache: the bound on what it holds in memory


class ScratchReplay:
    """The chain's replayed state (`audit_evidence.StateReplay`) in a scratch SQLite file, readable by its
    owner only (it holds key digests, as the chain does), deleted when closed. Later writes of a key replace
    earlier ones, as the chain's records do."""

    def __init__(self, directory: str | None = None) -> None:
        handle, self._path = tempfile.mkstemp(prefix="audit-verify-", suffix=".sqlite3", dir=directory)
        os.close(handle)
        self._db = sqlite3.connect(self._path, isolation_level=None)
        for pragma in ("journal_mode=OFF", "synchronous=OFF", f"cache_size=-{SCRATCH_CACHE_KIB}"):
            self._db.execute(f"PRAGMA {pragma}")
        self._db.execute(
            "CREATE TABLE expected (tbl TEXT NOT NULL, key TEXT NOT NULL, digest TEXT NOT NULL, "
            "seq INTEGER NOT NULL, PRIMARY KEY (tbl, key)) WITHOUT ROWID"
        )
        self._pending: list[tuple[str, str, str, int]] = []

    def write(self, seq: int, state: Mapping[str, Mapping[str, str]]) -> None:
        self._pending += [(table, key, digest, seq) for table, rows in state.items() for key, digest in rows.items()]
        if len(self._pending) >= WRITES_PER_FLUSH:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        with self._transaction():
            self._db.executemany(
                "INSERT INTO expected VALUES (?, ?, ?, ?) "
                "ON CONFLICT (tbl, key) DO UPDATE SET digest = excluded.digest, seq = excluded.seq",
                self._pending,
            )
        self._pending = []

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN")
        yield
        self._db.execute("COMMIT")

    def take(self, table: str, keys: Sequence[str]) -> dict[str, tuple[str, int]]:
        self._flush()
        if not keys:
            return {}
        marks = ", ".join("?" * len(keys))
        with self._transaction():
            found = self._db.execute(
                f"SELECT key, digest, seq FROM expected WHERE tbl = ? AND key IN ({marks})", (table, *keys)
            ).fetchall()
            self._db.execute(f"DELETE FROM expected WHERE tbl = ? AND key IN ({marks})", (table, *keys))
        return {key: (digest, int(seq)) for key, digest, seq in found}

    def left(self, table: str, first: int) -> tuple[int, list[int]]:
        self._flush()
        (count,) = self._db.execute("SELECT COUNT(*) FROM expected WHERE tbl = ?", (table,)).fetchone()
        seqs = self._db.execute("SELECT seq FROM expected WHERE tbl = ? ORDER BY seq LIMIT ?", (table, first))
        return int(count), [int(seq) for (seq,) in seqs]

    def close(self) -> None:
        self._db.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path)


class StoreEvidence:
    """The evidence (`audit_evidence.Evidence`) on a read transaction that sees one snapshot; valid while
    it lasts (`SqlAuditStore.evidence`)."""

    def __init__(self, unit: UnitOfWork, cursor: Any, replay: ScratchReplay) -> None:
        self._unit, self._cursor = unit, cursor
        cursor.execute("SELECT seq, hash FROM audit_head WHERE id = 1")
        seq, digest = cursor.fetchone()
        self.head: tuple[Any, Any] = (seq, digest)  # as stored: the examination checks their types
        self.foreign_objects = unit.foreign_objects(cursor)
        self.tables: tuple[str, ...] = tuple(COVERED)
        self.replay = replay

    def records(self) -> Iterator[AuditRecord]:
        """Every record, in chain order."""
        query = f"SELECT {RECORD_COLUMNS} FROM audit_log ORDER BY seq"
        return (record_from_row(row) for row in self._unit.stream(self._cursor, query))

    def rows(self, table: str) -> Iterator[Row]:
        """Every row of a covered table: (key digest, row digest, the key as it may be shown)."""
        query = f"SELECT {', '.join(COVERED[table].columns)} FROM {table}"
        return audit_state.digested(table, self._unit.stream(self._cursor, query))
