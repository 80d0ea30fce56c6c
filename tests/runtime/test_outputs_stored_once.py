"""Each outgoing Bundle stored once (schema 8, decision 32), on both real databases: as bytes in `output_body`,
compressed when it pays, named by digest from the processed outputs and the outbound tracking; republished
and resent byte for byte (decision 6); a store of schema 7, whose rows hold their bodies inline, migrates,
verifies and republishes as before; a body changed or gone is damage, never published."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from integration.adapters.sql import audit_state, bodies
from integration.adapters.sql.audit_log import AuditLog
from integration.adapters.sql.store import SCHEMA_VERSION, Resend, StoredOutput
from integration.adapters.sql.stores import open_audit_store
from integration.cli.audit import audit
from integration.errors import StoreDamaged
from integration.service.audit_chain import AuditEntry
from tests.support.audit_records import referral_bundle

AT = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)
CPR = "2512489996"


@pytest.fixture(params=["sqlite", "postgres"])
def dsn(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    return str(request.getfixturevalue("postgres_dsn"))


@pytest.fixture
def store(dsn: str) -> Iterator[Any]:
    opened = open_audit_store(dsn)
    yield opened
    opened.close()


def query(dsn: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """SQL from outside the service, committed."""
    if dsn.startswith("sqlite:///"):
        with sqlite3.connect(dsn.removeprefix("sqlite:///")) as connection:
            return connection.execute(statement, params).fetchall()
    import psycopg

    with psycopg.connect(dsn) as connection:
        cursor = connection.execute(statement.replace("?", "%s"), params)
        return cursor.fetchall() if cursor.description else []


def verify(dsn: str) -> Any:
    return CliRunner().invoke(audit, ["verify"], env={"INTEGRATION_AUDIT_DSN": dsn, "INTEGRATION_CONFIG": ""})


def referral(n: int = 1, body: bytes | None = None) -> StoredOutput:
    sent = body if body is not None else b'{"n":%d,' % n + referral_bundle()[1:]
    return StoredOutput("rehab.referral", "referral.municipality.851", f"o-{n}", sent, awaits_ack=f"h-{n}", patient=CPR)


def test_a_bundle_is_stored_once_compressed_and_republished_byte_for_byte(dsn: str, store: Any) -> None:
    sent, small = referral(1), StoredOutput("rehab.ack", "ack.x", "o-2", '{"ok":"Ærø ✓"}'.encode())
    store.record([AuditEntry("transformed", "discharge", "m-1")], AT, [("discharge", "m-1", "a" * 64, [sent, small])])
    assert store.processed("discharge", "m-1") == [sent, small]  # every field, the bodies byte for byte
    (tracked,) = store.outbound_sent(["h-1"]).values()
    assert tracked.output == sent
    assert store.outbound_sent(["h-1"], bodies=False)["h-1"].output.body == b""
    stored = {digest: (encoding, bytes(body)) for digest, encoding, body in query(dsn, "SELECT * FROM output_body")}
    assert stored.keys() == {bodies.body_sha256(sent.body), bodies.body_sha256(small.body)}
    encoding, packed = stored[bodies.body_sha256(sent.body)]
    assert encoding == "zlib" and len(packed) < len(sent.body) / 3  # a Bundle compresses to under a third
    assert stored[bodies.body_sha256(small.body)] == ("identity", small.body)  # too small to pay
    ((outputs,),) = query(dsn, "SELECT outputs FROM processed_message")
    ((output,),) = query(dsn, "SELECT output FROM outbound_message")
    for text in (outputs, output):
        assert b"Bundle" not in text.encode() and bodies.body_sha256(sent.body) in text  # named, not held
    assert verify(dsn).exit_code == 0


def test_a_resent_body_is_stored_once_and_the_resend_reads_it(dsn: str, store: Any) -> None:
    first = referral(1)
    store.record([AuditEntry("transformed", "discharge", "m-1")], AT, [("discharge", "m-1", "a" * 64, [first])])
    again = first.body.replace(b'"n":1', b'"n":2')
    store.record([AuditEntry("outbound-resent", "discharge", "h-1")], AT, resends=[Resend("h-1", again)])
    assert store.outbound_sent(["h-1"])["h-1"].output.body == again
    assert store.processed("discharge", "m-1") == [first]  # a redelivery republishes the first, as published
    assert query(dsn, "SELECT COUNT(*) FROM output_body") == [(2,)]
    store.record([AuditEntry("outbound-resent", "discharge", "h-1")], AT, resends=[Resend("h-1", first.body)])
    assert query(dsn, "SELECT COUNT(*) FROM output_body") == [(2,)]  # the same bytes: not stored twice
    assert store.outbound_sent(["h-1"])["h-1"].output.body == first.body
    assert verify(dsn).exit_code == 0


@pytest.mark.parametrize(
    ("tampering", "said"),
    [
        ("UPDATE output_body SET encoding = 'brotli'", "an encoding the service does not write"),
        ("UPDATE output_body SET encoding = 'identity'", "does not match its digest"),
        ("DELETE FROM output_body", "is not there (deleted?)"),
    ],
)
def test_a_body_changed_or_gone_is_damage_never_published(dsn: str, store: Any, tampering: str, said: str) -> None:
    store.record([AuditEntry("transformed", "discharge", "m-1")], AT, [("discharge", "m-1", "a" * 64, [referral()])])
    query(dsn, tampering)
    with pytest.raises(StoreDamaged, match=re.escape(said)):
        store.processed("discharge", "m-1")
    with pytest.raises(StoreDamaged, match=re.escape(said)):
        store.outbound_messages(["awaiting"])
    assert len(store.outbound_messages(["awaiting"], bodies=False)) == 1  # counts and deadlines need no body
    done = verify(dsn)
    assert done.exit_code == 1 and "audit log BROKEN at table output_body: " in done.stderr


# -- a store of schema 7 -------------------------------------------------------------------------------------
def _write_as_schema_7(dsn: str, outputs: list[StoredOutput]) -> None:
    """What the release before this one wrote for a processed message with these outputs (bodies inline, as
    `StoredOutput.as_json`, in both tables), chained as it chained them; then the store set back to schema 7."""
    store = open_audit_store(dsn)
    unit = store._unit  # noqa: SLF001 - the test writes as the previous release did, through the same chain
    inline = [o.as_json() for o in outputs]
    processed = ("discharge", "old-1", "a" * 64, AT.isoformat(), orjson.dumps(inline).decode())
    tracked = [
        (o.awaits_ack, "discharge", orjson.dumps(o.as_json()).decode(), AT.isoformat(), AT.isoformat(), 0, "awaiting")
        for o in outputs
        if o.awaits_ack
    ]
    with unit.transaction() as cursor:
        unit.lock_chain(cursor)
        cursor.execute(unit.sql(audit_state.insert_sql("processed_message")), processed)
        columns = "header_id, flow, output, first_sent_at, last_sent_at, resends, state"
        cursor.executemany(unit.sql(f"INSERT INTO outbound_message ({columns}) VALUES (?, ?, ?, ?, ?, ?, ?)"), tracked)
        state = {
            "processed_message": audit_state.digest_rows("processed_message", [processed]),
            "outbound_message": audit_state.digest_rows("outbound_message", [(*row, None) for row in tracked]),
        }
        AuditLog(unit).append(cursor, [AuditEntry("transformed", "discharge", "old-1")], AT.isoformat(), state)
    store.close()
    query(dsn, "DROP TABLE output_body")
    query(dsn, "UPDATE schema_version SET version = 7")


def test_a_schema_7_store_migrates_verifies_and_republishes_its_inline_bodies_byte_for_byte(dsn: str) -> None:
    assert SCHEMA_VERSION == 8
    old = [referral(1), StoredOutput("rehab.ack", "ack.x", "o-2", '{"ok":"Ærø ✓"}'.encode())]
    _write_as_schema_7(dsn, old)
    store = open_audit_store(dsn)  # the service migrates it
    try:
        assert query(dsn, "SELECT version FROM schema_version") == [(8,)]
        assert query(dsn, "SELECT COUNT(*) FROM output_body") == [(0,)]  # the old rows keep their bodies inline
        assert verify(dsn).exit_code == 0, "the old rows' state digests stand"
        assert store.processed("discharge", "old-1") == old
        assert store.outbound_sent(["h-1"])["h-1"].output == old[0]
        again = old[0].body.replace(b'"n":1', b'"n":9')
        store.record([AuditEntry("outbound-resent", "discharge", "h-1")], AT, resends=[Resend("h-1", again)])
        assert store.outbound_sent(["h-1"])["h-1"].output.body == again  # the resent row names its body now
        store.record(
            [AuditEntry("transformed", "discharge", "new-1")], AT, [("discharge", "new-1", "b" * 64, [referral(3)])]
        )
        assert store.processed("discharge", "old-1") == old
    finally:
        store.close()
    assert verify(dsn).exit_code == 0
    query(dsn, "UPDATE processed_message SET outputs = REPLACE(outputs, 'Bundle', 'Bundel') WHERE message_id = 'old-1'")
    done = verify(dsn)
    assert done.exit_code == 1 and "table processed_message: row discharge, old-1 was changed" in done.stderr
