"""The audit store in PostgreSQL (psycopg 3), for production.

A transaction-scoped advisory lock serialises appends to the chain across consumer processes,
another one schema changes. A broken connection is reopened on the next use; until then every
call is Transient. Nothing can hang the consumer for long: connecting gives up after
`CONNECT_TIMEOUT` seconds, TCP keepalives and a TCP user timeout notice a black-holed path
within about ten seconds, the server cancels a statement after `STATEMENT_TIMEOUT` and a lock
wait after `LOCK_TIMEOUT`, and a watchdog abandons a connection on which a transaction outlives
`TRANSACTION_DEADLINE` (a peer that takes bytes and never answers, which TCP cannot notice); each of
these is an outage (Transient), which the consumer waits out.

The advisory locks are keyed by the schema the store lives in, so that stores in different schemas
of one database (tests, or several deployments) do not wait for each other.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from integration.adapters.sql import audit_state
from integration.adapters.sql.audit_log import Signer
from integration.adapters.sql.deadline import SocketDeadline
from integration.adapters.sql.store import SqlAuditStore
from integration.adapters.sql.unit_of_work import STREAM_CHUNK, Row, UnitOfWork
from integration.errors import StoreDamaged, StoreRefused, Transient

CHAIN_LOCK = "hjerterehab:audit-chain"  # with the schema's name: the same in every process of one store
SCHEMA_LOCK = "hjerterehab:audit-schema"
CONNECT_TIMEOUT = 5  # seconds
STATEMENT_TIMEOUT = "10s"  # the service's statements take milliseconds
LOCK_TIMEOUT = "8s"
TRANSACTION_DEADLINE = 15.0  # seconds: past the server's own timeouts, so those speak first when it can
INSERT_CHUNK = 200  # rows per multi-row INSERT (8 columns: far below the 65,535 parameters of a statement)
# libpq: probe an idle connection after 5 s, every 2 s, 3 times; give up on unacknowledged data after 10 s.
TCP_SETTINGS = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}
# Refusals of a value or a constraint; data or an index the server reports corrupted (SQLSTATE XX001, XX002)
# is StoreDamaged; every other error (connection, timeout, admin shutdown…) is an outage.
_REFUSED = (psycopg.IntegrityError, psycopg.DataError)
_DAMAGED = (psycopg.errors.DataCorrupted, psycopg.errors.IndexCorrupted)


class PostgresUnitOfWork(UnitOfWork):
    """Transactions on one psycopg connection, reopened on the next use once broken; advisory locks for
    the chain and schema changes; a watchdog on each transaction (`TRANSACTION_DEADLINE`)."""

    placeholder = "%s"
    blob_type = "BYTEA"
    row_lock = " FOR UPDATE"

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._deadline = SocketDeadline(TRANSACTION_DEADLINE)
        self._streams = itertools.count(1)  # names of server-side cursors
        self._db = self._connect()

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            connection = psycopg.connect(
                psycopg.conninfo.make_conninfo(self._dsn, connect_timeout=CONNECT_TIMEOUT, **TCP_SETTINGS),
                autocommit=True,
            )
            connection.execute(f"SET statement_timeout = '{STATEMENT_TIMEOUT}'")
            connection.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
            return connection
        except psycopg.Error as exc:
            raise Transient(f"audit store (PostgreSQL) unavailable: {_first_line(exc)}") from None

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[Any]:
        if self._db.closed or self._db.broken:
            self._db = self._connect()
        try:
            with self._deadline.armed(self._db.pgconn.socket), self._db.transaction(), self._db.cursor() as cursor:
                yield cursor
        except _REFUSED as exc:
            raise StoreRefused(f"audit store (PostgreSQL) refused the write: {_first_line(exc)}") from None
        except _DAMAGED as exc:
            raise StoreDamaged(f"audit store (PostgreSQL) damaged: {_first_line(exc)}") from None
        except psycopg.Error as exc:
            if self._deadline.fired:
                raise Transient(
                    f"audit store (PostgreSQL): no answer within {TRANSACTION_DEADLINE:.0f} s; connection abandoned"
                ) from None
            raise Transient(f"audit store (PostgreSQL): {_first_line(exc)}") from None

    def schema_error(self, exc: Exception) -> bool:
        """SQLSTATE class 42 (ProgrammingError): a table or column missing or already there, no privilege."""
        return isinstance(exc, psycopg.ProgrammingError)

    def lock_chain(self, cursor: Any) -> None:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema() || %s))", (CHAIN_LOCK,))

    def lock_schema(self, cursor: Any) -> None:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema() || %s))", (SCHEMA_LOCK,))

    def insert_missing(self, cursor: Any, table: str, rows: dict[Row, Row]) -> list[Row]:
        """One multi-row INSERT … ON CONFLICT DO NOTHING RETURNING the keys inserted: one round trip."""
        inserted: list[Row] = []
        ordered = list(rows.items())
        for start in range(0, len(ordered), INSERT_CHUNK):
            chunk = ordered[start : start + INSERT_CHUNK]
            text = audit_state.insert_sql(table, len(chunk), returning_keys=True)
            cursor.execute(self.sql(text), tuple(value for _, row in chunk for value in row))
            keys = {tuple(found) for found in cursor.fetchall()}
            inserted += [row for key, row in chunk if key in keys]
        return inserted

    def tables(self, cursor: Any) -> set[str]:
        """The tables on the search path, as unqualified names resolve them."""
        cursor.execute("SELECT relname FROM pg_class WHERE relkind IN ('r', 'p') AND pg_table_is_visible(oid)")
        return {str(r[0]) for r in cursor.fetchall()}

    def foreign_objects(self, cursor: Any) -> list[str]:
        ours = "c.relnamespace = current_schema()::regnamespace"  # the schema the store's tables are in
        cursor.execute(
            "SELECT 'trigger ' || t.tgname || ' on ' || c.relname FROM pg_trigger t "
            f"JOIN pg_class c ON c.oid = t.tgrelid WHERE NOT t.tgisinternal AND {ours} "
            "UNION ALL SELECT 'rule ' || r.rulename || ' on ' || c.relname FROM pg_rewrite r "
            f"JOIN pg_class c ON c.oid = r.ev_class WHERE r.rulename <> '_RETURN' AND {ours} "
            "UNION ALL SELECT 'policy ' || p.polname || ' on ' || c.relname FROM pg_policy p "
            f"JOIN pg_class c ON c.oid = p.polrelid WHERE {ours} ORDER BY 1"
        )
        return [str(r[0]) for r in cursor.fetchall()]

    def stream(self, cursor: Any, query: str, size: int = STREAM_CHUNK) -> Iterator[Row]:
        """A server-side cursor (DECLARE … FETCH): psycopg's client-side cursor would hold the whole answer.
        It lives until the transaction ends; each chunk is fetched whole before its rows are yielded, so the
        caller may use `cursor` meanwhile."""
        name = f"stream_{next(self._streams)}"
        cursor.execute(f"DECLARE {name} NO SCROLL CURSOR FOR {query}")
        while rows := cursor.execute(f"FETCH FORWARD {int(size)} FROM {name}").fetchall():
            yield from rows

    def snapshot(self, cursor: Any) -> None:
        """One consistent read of the whole log (audit verify): it may take as long as the log is long."""
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        cursor.execute("SET LOCAL statement_timeout = 0")
        self._deadline.disarm()

    def close(self) -> None:
        try:
            self._db.close()
        except psycopg.Error:
            pass


class PostgresAuditStore(SqlAuditStore):
    """The audit store in the PostgreSQL database at `dsn` (a libpq connection string or URI)."""

    def __init__(self, dsn: str, create: bool = True, sign: Signer | None = None) -> None:
        super().__init__(PostgresUnitOfWork(dsn), create, sign)


def _first_line(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
