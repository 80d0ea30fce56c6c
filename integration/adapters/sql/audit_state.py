"""The state tables the audit chain covers, and the digests of their rows that go into it.

The tables that drive behaviour (stored outputs that get republished, failure counts, courses,
hotline requests, MedCom messages received and answered, our messages awaiting acks) are written
only by the audit store, in the transaction that appends to the chain. That transaction puts,
into its last record, a digest of what each row it touched now holds, under a digest of the row's
key (a course is keyed by CPR number: no key goes into the chain as it is). `audit verify`
replays those digests and compares them with every row in the tables: a row changed, inserted or
deleted by anyone but the service shows up with its table.

A row's digest covers the columns listed here, in this order. A migration that adds a column to
one of these tables adds it here, as one of the table's `added` columns: a row whose added columns
are all NULL (the rows the migration found, which have no value for them) keeps the digest it had
without them, so the chain still covers those rows, and a change made to them before the upgrade
still shows. (Or it records the rows' new digests, as `adopt` does; that also adopts any change.)
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from integration.log import one_line

StateDigests = dict[str, dict[str, str]]  # table → key digest → row digest
Sql = Callable[[str], str]  # the store's placeholder translation


@dataclass(frozen=True, slots=True)
class Table:
    key: tuple[str, ...]
    columns: tuple[str, ...]  # the key's columns first
    key_is_personal: bool = False  # the key is a CPR number: never shown, not even masked
    added: int = 0  # how many of the last columns a migration added: left out of a row's digest while all NULL


COVERED: Mapping[str, Table] = {
    "processed_message": Table(("flow", "message_id"), ("flow", "message_id", "body_sha256", "at", "outputs")),
    "delivery_failure": Table(("flow", "message_id"), ("flow", "message_id", "failures", "last_error", "at")),
    # stage and pathway (schema 5): the course's place on the pathway; NULL in rows from before
    "rehab_course": Table(
        ("patient",),
        (
            "patient",
            "referring_department",
            "municipality_code",
            "is_open",
            "responsible",
            "changed_at",
            "stage",
            "pathway",
        ),
        key_is_personal=True,
        added=2,
    ),
    "hotline_request": Table(
        ("request_id",),
        (
            "request_id",
            "thread_id",
            "requester",
            "department",
            "patient",
            "received_at",
            "answered_at",
            "overdue_noted_at",
        ),
    ),
    # content_sha256 (schema 4): the message's `acknowledging.content_digest`; NULL in rows from before
    "medcom_received": Table(("bundle_id",), ("bundle_id", "header_id", "at", "content_sha256"), added=1),
    "medcom_ack": Table(("header_id",), ("header_id", "code", "ack", "at")),
    "outbound_message": Table(
        ("header_id",),
        ("header_id", "flow", "output", "first_sent_at", "last_sent_at", "resends", "state", "settled_at"),
    ),
    # schema 6: the HL7 v2 messages the MLLP listener published, and the ACK each got (hl7_received.py)
    "hl7_received": Table(
        ("sending_application", "sending_facility", "control_id"),
        (
            "sending_application",
            "sending_facility",
            "control_id",
            "content_sha256",
            "message_id",
            "ack_code",
            "ack",
            "at",
        ),
    ),
    # schema 7: a discharge home watched for its discharge event (watched.py); keyed by patient and episode of care
    "watched_episode": Table(
        ("patient", "episode"),
        (
            "patient",
            "episode",
            "unit",
            "discharged_at",
            "due_at",
            "header_id",
            "watched_at",
            "matched_by",
            "matched_at",
            "cancelled_at",
        ),
        key_is_personal=True,  # the patient's CPR number leads the key
    ),
    # schema 8: the outgoing bodies, each once, keyed by its SHA-256 (bodies.py); the two tables above name them
    "output_body": Table(("body_sha256",), ("body_sha256", "encoding", "body")),
}
READ_BACK_CHUNK = 200  # keys per SELECT when reading touched rows back


def _odd(value: Any) -> str:
    """A value the service never writes (a blob, a decimal: someone else wrote it) still gets a digest."""
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<bytes:{bytes(value).hex()}>"
    return f"<{type(value).__name__}:{value!r}>"


def key_digest(table: str, key: Sequence[Any]) -> str:
    return hashlib.sha256(orjson.dumps([table, *key], default=_odd)).hexdigest()[:32]


def row_digest(table: str, values: Sequence[Any]) -> str:
    """The digest of a row's covered columns; the table's `added` columns are left out while all NULL."""
    added = COVERED[table].added if table in COVERED else 0
    if added and all(v is None for v in values[-added:]):
        values = values[:-added]
    return hashlib.sha256(orjson.dumps([table, *values], default=_odd)).hexdigest()


def shown_key(table: str, key: Sequence[Any]) -> str:
    """The key as an operator may see it: masked of CPR numbers, and not at all for a course."""
    if COVERED[table].key_is_personal:
        return f"key digest {key_digest(table, key)[:12]}"
    return one_line(", ".join("NULL" if k is None else str(k) for k in key), 120)


def digest_rows(table: str, rows: Iterator[Sequence[Any]] | Sequence[Sequence[Any]]) -> dict[str, str]:
    """Row digests by key digest, for rows of the table's covered columns."""
    width = len(COVERED[table].key)
    return {key_digest(table, row[:width]): row_digest(table, row) for row in rows}


def _by_keys(table: str, count: int) -> str:
    """A WHERE clause matching `count` keys of the table (its parameters: the keys' values in order)."""
    key = COVERED[table].key
    if len(key) == 1:
        return f"{key[0]} IN ({', '.join('?' * count)})"
    row = f"({', '.join('?' * len(key))})"
    return f"({', '.join(key)}) IN (VALUES {', '.join([row] * count)})"


def _chunks(keys: Collection[tuple[Any, ...]]) -> Iterator[list[tuple[Any, ...]]]:
    ordered = sorted(keys, key=repr)
    for start in range(0, len(ordered), READ_BACK_CHUNK):
        yield ordered[start : start + READ_BACK_CHUNK]


def read_back(cursor: Any, sql: Sql, table: str, keys: Collection[tuple[Any, ...]], lock: str = "") -> dict[str, str]:
    """The digests of the rows with these keys, as they stand in this transaction (absent ones left out);
    `lock` ends the SELECT (" FOR UPDATE": the rows stay locked until the transaction ends)."""
    found: dict[str, str] = {}
    for chunk in _chunks(keys):
        columns = ", ".join(COVERED[table].columns)
        where = _by_keys(table, len(chunk))
        cursor.execute(sql(f"SELECT {columns} FROM {table} WHERE {where}{lock}"), _flat(chunk))
        found.update(digest_rows(table, cursor.fetchall()))
    return found


def first_of_each_key(table: str, rows: Sequence[tuple[Any, ...]]) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """The rows by key, the first of a key given twice (as ON CONFLICT DO NOTHING keeps it)."""
    width = len(COVERED[table].key)
    fresh: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for row in rows:
        fresh.setdefault(tuple(row[:width]), row)
    return fresh


def keys_present(cursor: Any, sql: Sql, table: str, keys: Collection[tuple[Any, ...]]) -> set[tuple[Any, ...]]:
    """Which of these keys the table holds (only the keys come back, not the rows)."""
    present: set[tuple[Any, ...]] = set()
    for chunk in _chunks(keys):
        where = _by_keys(table, len(chunk))
        cursor.execute(sql(f"SELECT {', '.join(COVERED[table].key)} FROM {table} WHERE {where}"), _flat(chunk))
        present.update(tuple(found) for found in cursor.fetchall())
    return present


def insert_sql(table: str, rows: int = 1, returning_keys: bool = False) -> str:
    """INSERT of `rows` rows of the covered columns that skips a key already there."""
    spec = COVERED[table]
    row = f"({', '.join('?' * len(spec.columns))})"
    text = f"INSERT INTO {table} ({', '.join(spec.columns)}) VALUES {', '.join([row] * rows)} "
    text += f"ON CONFLICT ({', '.join(spec.key)}) DO NOTHING"
    return text + (f" RETURNING {', '.join(spec.key)}" if returning_keys else "")


def _flat(keys: Sequence[tuple[Any, ...]]) -> tuple[Any, ...]:
    return tuple(value for key in keys for value in key)


def rows_where(cursor: Any, sql: Sql, table: str, column: str, values: Collection[Any]) -> dict[str, str]:
    """The digests of the rows whose `column` is one of `values` (an update by something else than the key)."""
    spec, found, ordered = COVERED[table], {}, sorted(values)
    for start in range(0, len(ordered), READ_BACK_CHUNK):
        chunk = ordered[start : start + READ_BACK_CHUNK]
        cursor.execute(
            sql(f"SELECT {', '.join(spec.columns)} FROM {table} WHERE {column} IN ({', '.join('?' * len(chunk))})"),
            tuple(chunk),
        )
        found.update(digest_rows(table, cursor.fetchall()))
    return found


def every_row(cursor: Any, table: str) -> dict[str, tuple[str, str]]:
    """Every row of a covered table: key digest → (row digest, the key as it may be shown)."""
    cursor.execute(f"SELECT {', '.join(COVERED[table].columns)} FROM {table}")
    return {key: (digest, shown()) for key, digest, shown in digested(table, cursor)}


def digested(table: str, rows: Iterable[Sequence[Any]]) -> Iterator[tuple[str, str, Callable[[], str]]]:
    """Rows of a covered table's columns as (key digest, row digest, the key as it may be shown), one by one;
    the key is made showable only when asked (a finding), which verifying every row would otherwise pay for."""
    width = len(COVERED[table].key)
    for row in rows:
        key = row[:width]
        yield key_digest(table, key), row_digest(table, row), functools.partial(shown_key, table, key)


def merge(into: StateDigests, more: Mapping[str, Mapping[str, str]]) -> StateDigests:
    for table, digests in more.items():
        if digests:
            into.setdefault(table, {}).update(digests)
    return into
