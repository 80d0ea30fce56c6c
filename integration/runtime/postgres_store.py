"""The audit store in PostgreSQL (psycopg 3), for production.

A transaction-scoped advisory lock serialises appends to the chain across consumer processes.
A broken connection is reopened on the next use; until then every call is Transient.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from integration.errors import Transient
from integration.runtime.audit_store import SqlAuditStore

CHAIN_LOCK = 0x72656861  # any constant; the same in every process


class PostgresAuditStore(SqlAuditStore):
    placeholder = "%s"

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        super().__init__(self._connect())

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(self._dsn, connect_timeout=5, autocommit=True)
        except psycopg.Error as exc:
            raise Transient(f"audit store (PostgreSQL) unavailable: {type(exc).__name__}") from None

    @contextmanager
    def _transaction(self, write: bool = True) -> Iterator[Any]:
        if self._db.closed or self._db.broken:
            self._db = self._connect()
        try:
            with self._db.transaction(), self._db.cursor() as cursor:
                yield cursor
        except psycopg.Error as exc:
            raise Transient(f"audit store (PostgreSQL): {type(exc).__name__}: {exc}".splitlines()[0]) from None

    def _lock_chain(self, cursor: Any) -> None:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (CHAIN_LOCK,))
