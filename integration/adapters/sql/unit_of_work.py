"""The unit of work: one connection to the store's database, the transactions on it, and what differs
between SQLite and PostgreSQL.

A transaction (`transaction(write)`) yields a DB-API cursor; it commits when the block ends and rolls
back when it raises. The database's errors leave it classified (integration.errors): an outage (no
connection, a timeout, a lock not granted) is `Transient`, so the consumer waits for the database; a
write refused for what it holds (a constraint, a value the column cannot take) is `StoreRefused`, a
defect counted against the message; a damaged file or index is `StoreDamaged`. `sqlite.py` and
`postgres.py` supply the connection, the placeholders, the locks that serialise appends to the chain
and schema changes, and that classification; the repositories write their SQL with `?` placeholders
and pass it through `sql`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

from integration.adapters.sql import audit_state

Row = tuple[Any, ...]
STREAM_CHUNK = 1000  # rows per fetch of `stream`


class UnitOfWork:
    """One connection and its transactions; a subclass per database supplies `transaction`, `tables` and
    `close`, and the hooks its database needs."""

    placeholder = "?"
    blob_type = "BLOB"  # the column type of bytes, `{blob}` in a migration
    row_lock = ""  # what locks the rows a SELECT returns until the transaction ends (PostgreSQL: FOR UPDATE)

    def transaction(self, write: bool = True) -> AbstractContextManager[Any]:
        """A transaction yielding a cursor (a writer's takes the write lock where the database has one);
        errors leave it as Transient, StoreRefused or StoreDamaged."""
        raise NotImplementedError

    def tables(self, cursor: Any) -> set[str]:
        """The names of the tables this connection sees."""
        raise NotImplementedError

    def close(self) -> None:
        """Close the connection."""
        raise NotImplementedError

    def foreign_objects(self, cursor: Any) -> list[str]:
        """What in the schema can change rows as they are written or read, which the service never creates:
        triggers, rules, row-level policies — each as one line naming it and its table. The service reads
        back the rows it writes and chains them, so such an object would have its changes chained as ours."""
        raise NotImplementedError

    def lock_chain(self, cursor: Any) -> None:
        """Serialise appends to the chain across processes, for the rest of the transaction."""

    def lock_schema(self, cursor: Any) -> None:
        """Serialise schema changes across processes, for the rest of the transaction."""

    def schema_error(self, exc: Exception) -> bool:
        """Whether a statement failed for the schema it met (a table or column missing or already there),
        not for an outage: a migration that meets one finds a store other than its version says."""
        return False

    def snapshot(self, cursor: Any) -> None:
        """Make the rest of this read transaction see one consistent snapshot of every table."""

    def stream(self, cursor: Any, query: str, size: int = STREAM_CHUNK) -> Iterator[Row]:
        """The rows of `query` (no parameters) in this transaction, read `size` at a time: what a reader of
        the whole log or a whole table holds does not grow with it. (SQLite steps a cursor of its own on the
        connection; PostgreSQL overrides this with a server-side cursor.)"""
        reader = cursor.connection.cursor()
        try:
            reader.execute(query)
            while rows := reader.fetchmany(size):
                yield from rows
        finally:
            reader.close()

    def sql(self, text: str) -> str:
        """The statement with the database's placeholders for `?`."""
        return text.replace("?", self.placeholder)

    # Each writer returns the digests of the covered rows it changed, as they now stand: computed from what
    # it inserted when it knows that, read back when the database computed them (upserts, updates).
    def read_back(self, cursor: Any, table: str, keys: Collection[Row], lock: bool = False) -> dict[str, str]:
        """The digests of the covered table's rows with these keys, as they stand in this transaction;
        with `lock`, those rows locked until it ends (where the database locks rows: `row_lock`)."""
        return audit_state.read_back(cursor, self.sql, table, keys, self.row_lock if lock else "")

    def rows_where(self, cursor: Any, table: str, column: str, values: Collection[Any]) -> dict[str, str]:
        """The digests of the covered table's rows whose `column` is one of `values`."""
        return audit_state.rows_where(cursor, self.sql, table, column, values)

    def insert_new(self, cursor: Any, table: str, rows: Sequence[Row]) -> dict[str, str]:
        """Insert the rows (the covered columns' values, in order) whose key the table does not hold yet;
        the digests of those inserted (the others did not change)."""
        fresh = audit_state.first_of_each_key(table, rows)
        inserted = self.insert_missing(cursor, table, fresh) if fresh else []
        return audit_state.digest_rows(table, inserted)

    def insert_missing(self, cursor: Any, table: str, rows: dict[Row, Row]) -> list[Row]:
        """Insert rows by key, skipping keys the table holds; the rows inserted. (Asks which keys are there
        first; a database with INSERT … RETURNING does it in one statement.)"""
        present = audit_state.keys_present(cursor, self.sql, table, rows)
        new = [row for key, row in rows.items() if key not in present]
        if new:
            cursor.executemany(self.sql(audit_state.insert_sql(table)), new)
        return new
