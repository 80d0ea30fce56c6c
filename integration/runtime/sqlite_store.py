"""The audit store in an SQLite file: embedded, zero set-up, the default on a laptop.

WAL journal with synchronous=FULL: a committed record survives a crash of the process or the
machine. BEGIN IMMEDIATE takes the write lock at once, which serialises appends to the chain
across consumer processes sharing the file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from integration.errors import Transient
from integration.runtime.audit_store import SqlAuditStore


class SqliteAuditStore(SqlAuditStore):
    def __init__(self, path: str) -> None:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            connection = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as exc:
            raise Transient(f"audit store (SQLite) cannot open {path}: {exc}") from None
        super().__init__(connection)

    @contextmanager
    def _transaction(self, write: bool = True) -> Iterator[Any]:
        cursor = self._db.cursor()
        try:
            cursor.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            yield cursor
            cursor.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise Transient(f"audit store (SQLite): {exc}") from None
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # no transaction was open
