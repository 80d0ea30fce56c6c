"""The audit log as evidence (decision 15), on both real databases: every tampering issue #10 lists is
found by `integration audit verify`, by the layer that can find it, and named in one line; a missing
or emptied log is an error; verify creates nothing; the consumer publishes anchors; reads are audited
with the OS user."""

from __future__ import annotations

import hashlib
import os
import pwd
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result

from integration.adapters.consumer import ConsumerService
from integration.adapters.rabbitmq import BrokerSettings
from integration.adapters.sql.store import MIGRATIONS, SCHEMA_VERSION, Failure, Resend, SqlAuditStore, StoredOutput
from integration.adapters.sql.stores import open_audit_store
from integration.bootstrap import build
from integration.cli.audit import audit
from integration.config import Settings
from integration.domain.course import AckReceived, Course, OpenRequest, ReceivedMessage, StateChanges
from integration.log import configure_logging, cpr_numbers_in
from integration.service.anchors import AnchorJob
from integration.service.audit_chain import GENESIS, AuditEntry, record_hash
from integration.service.audit_evidence import MASKED, MacKeys, parse_anchors
from integration.service.processor import RetryPolicy
from integration.topology import FLOWS_BY_NAME
from tests.conftest import FIXED_NOW, GOLDEN
from tests.runtime.broker_helpers import (
    output_queue,
    publish_events,
    queue_depth,
    referral_events,
    start_consumer,
    wait_for,
)
from tests.runtime.conftest import broker_url

AT = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)
CPR = "2512489996"
OTHER_CPR = "0107729995"
KEY = "k1 " + "11" * 32 + "\n"
ME = pwd.getpwuid(os.geteuid()).pw_name


# -- set-up ------------------------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgres"])
def dsn(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    return str(request.getfixturevalue("postgres_dsn"))


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "audit-hmac.keys"
    path.write_text(KEY)
    path.chmod(0o600)
    return path


def fill(store: Any) -> None:
    """Records that touch every covered table, as the service writes them."""
    tracked = StoredOutput("rehab.referral", "referral.municipality.851", "o-1", b'{"x": 1}', awaits_ack="h-1")
    tracked_too = StoredOutput("rehab.referral", "referral.municipality.851", "o-2", b'{"x": 2}', awaits_ack="h-2")
    store.record(
        [AuditEntry("received", "discharge", "m-1", patient=CPR), AuditEntry("transformed", "discharge", "m-1")],
        AT,
        processed=[("discharge", "m-1", "a" * 64, [tracked]), ("discharge", "m-3", "c" * 64, [tracked_too])],
        changes=StateChanges(
            courses=(Course(CPR, "715541000016001", "851", True, "hospital"),),
            opened=(
                OpenRequest("r-1", "urn:uuid:t-1", "434751000016002", "715541000016001", CPR),
                OpenRequest("r-2", None, "012345", None, OTHER_CPR),
            ),
            received=(ReceivedMessage("h-in-1", "b-in-1", "ok", {"resourceType": "Bundle", "id": "ack-1"}),),
        ),
        failures=[Failure("discharge", "m-2", "KeyError")],
    )
    store.record(
        [AuditEntry("fact:ack-received", "acknowledgement", "a-1", patient=CPR)],
        AT,
        changes=StateChanges(acks=(AckReceived("h-1", "ok"),), answered=("urn:uuid:t-1",)),
    )
    store.record([AuditEntry("outbound-resent", "discharge", "h-2")], AT, resends=[Resend("h-2", b'{"x": 3}')])
    store.note_overdue(["r-2"], AT, [AuditEntry("hotline-overdue", "hotline", "r-2", patient=OTHER_CPR)])
    store.record([AuditEntry("published", "discharge", "m-1")], AT)
    store.record([AuditEntry("acked", "discharge", "m-1")], AT)


@contextmanager
def attacker(dsn: str) -> Iterator[Callable[..., None]]:
    """Someone with write access to the database and no HMAC key: SQL in one transaction, bypassing the service."""
    if dsn.startswith("sqlite:///"):
        connection: Any = sqlite3.connect(dsn.removeprefix("sqlite:///"))
        mark = "?"
    else:
        import psycopg

        connection, mark = psycopg.connect(dsn), "%s"
    try:
        yield lambda statement, params=(): connection.execute(statement.replace("?", mark), params)
        connection.commit()
    finally:
        connection.close()


def sql(dsn: str, *statements: str) -> None:
    with attacker(dsn) as execute:
        for statement in statements:
            execute(statement)


def records(dsn: str, key_file: Path | None = None) -> list[Any]:
    store = open_audit_store(dsn, sign=MacKeys.parse(key_file.read_text()).sign if key_file else None)
    try:
        return list(store.records())
    finally:
        store.close()


def verify(dsn: str, *args: str, **env: str) -> Result:
    settings = {"INTEGRATION_AUDIT_DSN": dsn, "INTEGRATION_CONFIG": ""} | env
    return CliRunner().invoke(audit, ["verify", *args], env=settings)


def filled(dsn: str, key_file: Path | None = None) -> None:
    keys = MacKeys.parse(key_file.read_text()) if key_file else None
    store = open_audit_store(dsn, sign=keys.sign if keys else None)
    fill(store)
    store.close()


def anchor_now(dsn: str, path: Path, key_file: Path | None = None) -> None:
    store = open_audit_store(dsn, sign=MacKeys.parse(key_file.read_text()).sign if key_file else None)
    AnchorJob(store, path, timedelta(minutes=5)).publish()
    store.close()


def run_integration(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """The command as an operator runs it; what it prints (but transform's messages) never holds a CPR number."""
    done = subprocess.run([sys.executable, "-m", "integration", *args], capture_output=True, timeout=120, **kwargs)
    for stream in (done.stdout, done.stderr):
        text = stream.decode("utf-8", "replace") if isinstance(stream, bytes) else stream
        assert cpr_numbers_in(text) == [], f"a CPR number in the output of {args[:2]}"
    return done


def findings(result: Result) -> list[str]:
    lines = [line for line in result.stderr.splitlines() if line]
    assert all(line.startswith(("audit log BROKEN at ", "error: ")) for line in lines), lines
    return lines


# -- intact, empty, missing -------------------------------------------------------------------------
def test_an_intact_log_verifies_with_everything_it_covers(dsn: str, tmp_path: Path, key_file: Path) -> None:
    filled(dsn, key_file)
    anchors = tmp_path / "anchors.jsonl"
    anchor_now(dsn, anchors, key_file)
    done = verify(dsn, "--anchor", str(anchors), INTEGRATION_AUDIT_HMAC_KEY_FILE=str(key_file))
    assert done.exit_code == 0, done.stderr
    assert done.stdout.startswith("audit log intact: 7 records, head 7 ")
    assert "state row(s) in 10 tables as the chain recorded them" in done.stdout
    assert (
        "1 anchor(s) checked, the latest at record 7" in done.stdout and "HMAC: records from 1 on signed" in done.stdout
    )


def test_verify_of_a_missing_sqlite_file_fails_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "nothing-here.sqlite3"
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
    done = run_integration(
        "audit", "verify", env=env | {"INTEGRATION_AUDIT_DSN": f"sqlite:///{path}"}, text=True, cwd=tmp_path
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip() == f"error: no audit store at sqlite:///{path}: the file {path} does not exist"
    assert not path.exists() and list(tmp_path.iterdir()) == []
    for command in (("audit", "trail", "--patient", CPR), ("outbound", "pending"), ("hotline", "pending")):
        done = run_integration(*command, env=env | {"INTEGRATION_AUDIT_DSN": f"sqlite:///{path}"}, text=True)
        assert done.returncode == 66 and done.stderr.startswith("error: no audit store at ") and CPR not in done.stderr
    assert not path.exists()


def test_a_file_that_is_not_a_database_is_no_store(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"
    path.write_bytes(b"not a database, a text file of the same name " * 100)
    done = verify(f"sqlite:///{path}")
    assert done.exit_code == 1 and "is not an SQLite database" in done.stderr


def test_an_empty_log_is_an_error_unless_allowed_for_a_fresh_deployment(dsn: str) -> None:
    open_audit_store(dsn).close()  # a fresh store, as the service creates it
    done = verify(dsn)
    assert done.exit_code == 1
    assert findings(done) == [
        "audit log BROKEN at the log: it is empty (emptied, or a fresh store: --allow-empty accepts a fresh deployment)"
    ]
    done = verify(dsn, "--allow-empty")
    assert done.exit_code == 0 and done.stdout.startswith("audit log intact: 0 records, head 0 ")


def test_an_emptied_log_is_found(dsn: str) -> None:
    filled(dsn)
    sql(dsn, "DELETE FROM audit_log", f"UPDATE audit_head SET seq = 0, hash = '{GENESIS}'")
    done = verify(dsn)
    assert done.exit_code == 1
    lines = findings(done)
    assert lines[0].startswith("audit log BROKEN at the log: it is empty")
    assert any("table processed_message: row discharge, m-1 was inserted outside the service" in x for x in lines)
    done = verify(dsn, "--allow-empty")  # a fresh deployment has no state rows either
    assert done.exit_code == 1 and "table rehab_course" in done.stderr


def test_an_emptied_log_and_tables_are_found_by_the_anchor(dsn: str, tmp_path: Path) -> None:
    filled(dsn)
    anchors = tmp_path / "anchors.jsonl"
    anchor_now(dsn, anchors)
    sql(
        dsn,
        *(f"DELETE FROM {table}" for table in ("audit_log", "processed_message", "delivery_failure", "rehab_course")),
        *(f"DELETE FROM {table}" for table in ("hotline_request", "medcom_received", "medcom_ack", "outbound_message")),
        "DELETE FROM output_body",
        f"UPDATE audit_head SET seq = 0, hash = '{GENESIS}'",
    )
    done = verify(dsn, "--allow-empty", "--anchor", str(anchors))
    assert done.exit_code == 1
    assert findings(done) == [
        "audit log BROKEN at anchor anchors.jsonl:1: record 7 was anchored, but the log ends at record 0 "
        "(records cut off the end)"
    ]


def test_dropped_tables_are_found_and_not_recreated(dsn: str) -> None:
    filled(dsn)
    sql(dsn, "DROP TABLE audit_log", "DROP TABLE rehab_course")
    done = verify(dsn)
    assert done.exit_code == 1
    assert done.stderr.strip().endswith("the audit store lacks table(s) audit_log, rehab_course (dropped?)")
    sql(dsn, *(f"DROP TABLE {t}" for t in ("schema_version", "audit_head", "processed_message", "delivery_failure")))
    sql(dsn, *(f"DROP TABLE {t}" for t in ("hotline_request", "medcom_received", "medcom_ack", "outbound_message")))
    sql(dsn, "DROP TABLE watched_episode", "DROP TABLE hl7_received", "DROP TABLE output_body")
    done = verify(dsn)
    assert done.exit_code == 1 and done.stderr.strip().endswith("none of the audit store's tables exists")
    store = open_audit_store(dsn)  # only the service (create=True) makes a store
    store.close()


def test_an_unreachable_database_exits_69() -> None:
    done = verify("postgresql://postgres@127.0.0.1:1/test")
    assert done.exit_code == 69 and done.stderr.startswith("error: audit store unreachable: ")


def test_an_older_schema_is_not_migrated_by_a_reader(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"
    _version_2_store(path)
    done = verify(f"sqlite:///{path}")
    assert done.exit_code == 3
    assert (
        f"schema version 2, this release reads {SCHEMA_VERSION}: start the service (integration run) once"
        in done.stderr
    )


# -- the tail cut off, a record rewritten, a record appended: anchors and HMAC --------------------------
def _recompute_from(
    dsn: str, key_file: Path | None, seq: int, detail: dict[str, Any], strip_macs: bool = False
) -> None:
    """The attacker edits record `seq` and recomputes the chain after it (without the HMAC key)."""
    chain = records(dsn, key_file)
    prev = chain[seq - 2].hash if seq > 1 else GENESIS
    with attacker(dsn) as execute:
        for record in chain[seq - 1 :]:
            new = detail if record.seq == seq else record.detail
            entry = AuditEntry(record.step, record.flow, record.message_id, new, record.patient)
            digest = record_hash(record.seq, record.at, entry, prev, record.state)
            execute(
                "UPDATE audit_log SET detail = ?, prev_hash = ?, hash = ?"
                + (", mac = NULL" if strip_macs else "")
                + " WHERE seq = ?",
                (orjson.dumps(new, option=orjson.OPT_SORT_KEYS).decode(), prev, digest, record.seq),
            )
            prev = digest
        execute("UPDATE audit_head SET hash = ?", (prev,))


def test_a_cut_off_tail_with_the_head_fixed_is_found_by_the_anchor(dsn: str, tmp_path: Path) -> None:
    filled(dsn)
    anchors = tmp_path / "anchors.jsonl"
    anchor_now(dsn, anchors)
    fifth = records(dsn)[4]
    sql(dsn, "DELETE FROM audit_log WHERE seq > 5", f"UPDATE audit_head SET seq = 5, hash = '{fifth.hash}'")
    assert verify(dsn).exit_code == 0  # the chain alone cannot tell: it ends where its head says
    done = verify(dsn, "--anchor", str(anchors))  # (that verify appended its own record 6)
    assert done.exit_code == 1
    assert findings(done) == [
        "audit log BROKEN at anchor anchors.jsonl:1: record 7 was anchored, but the log ends at record 6 "
        "(records cut off the end)"
    ]


def test_a_head_set_back_is_found_and_verify_says_it_could_not_record_itself(dsn: str) -> None:
    filled(dsn)
    fifth = records(dsn)[4]
    sql(dsn, f"UPDATE audit_head SET seq = 5, hash = '{fifth.hash}'")
    done = verify(dsn)
    assert done.exit_code == 1
    lines = findings(done)
    assert lines[0] == "audit log BROKEN at record 5: the log ends at record 7, but record 5 was the last written"
    assert lines[1].startswith("error: this verification could not be recorded in the audit log: audit store (")
    assert len(lines) == 2


def test_an_edited_record_with_the_chain_recomputed_is_found_by_the_anchor(dsn: str, tmp_path: Path) -> None:
    filled(dsn)
    anchors = tmp_path / "anchors.jsonl"
    anchor_now(dsn, anchors)
    _recompute_from(dsn, None, 2, {"outputs": ["o-forged"]})
    assert verify(dsn).exit_code == 0  # the chain alone cannot tell
    done = verify(dsn, "--anchor", str(anchors))
    assert done.exit_code == 1
    assert findings(done) == [
        "audit log BROKEN at record 7: its hash differs from the anchor at anchors.jsonl:1 (rewritten after it was "
        "anchored)"
    ]


def test_an_edited_record_with_the_chain_recomputed_is_found_by_the_hmac(dsn: str, key_file: Path) -> None:
    filled(dsn, key_file)
    _recompute_from(dsn, key_file, 2, {"outputs": ["o-forged"]})
    done = verify(dsn, INTEGRATION_AUDIT_HMAC_KEY_FILE=str(key_file))
    assert done.exit_code == 1
    lines = findings(done)
    assert lines[0] == (
        "audit log BROKEN at record 2: its HMAC does not match its hash (a forged record, or the chain recomputed "
        "without the key)"
    )
    assert len(lines) == 6 and lines[-1] == "audit log BROKEN at HMAC: 1 more records fail their HMAC check"


def test_a_chain_recomputed_without_its_hmacs_is_found(dsn: str, key_file: Path) -> None:
    filled(dsn, key_file)
    _recompute_from(dsn, key_file, 1, {"i": "forged"}, strip_macs=True)
    done = verify(dsn, INTEGRATION_AUDIT_HMAC_KEY_FILE=str(key_file))
    assert done.exit_code == 1
    assert findings(done) == [
        "audit log BROKEN at HMAC: no record carries an HMAC, though a key is configured (the chain rewritten "
        "without it?)"
    ]


def test_a_forged_record_appended_is_found_by_the_hmac(dsn: str, key_file: Path) -> None:
    filled(dsn, key_file)
    last = records(dsn, key_file)[-1]
    forged = AuditEntry("published", "discharge", "m-forged", {"routingKey": "referral.municipality.851"})
    digest = record_hash(8, last.at, forged, last.hash)
    sql(
        dsn,
        "INSERT INTO audit_log (seq, at, step, flow, message_id, patient, detail, prev_hash, hash) VALUES "
        f"(8, '{last.at}', 'published', 'discharge', 'm-forged', NULL, "
        f"'{orjson.dumps(forged.detail).decode()}', '{last.hash}', '{digest}')",
        f"UPDATE audit_head SET seq = 8, hash = '{digest}'",
    )
    done = verify(dsn, INTEGRATION_AUDIT_HMAC_KEY_FILE=str(key_file))
    assert done.exit_code == 1
    assert findings(done) == [
        "audit log BROKEN at record 8: it carries no HMAC, though records before it do (written without the key)"
    ]
    sql(dsn, f"UPDATE audit_log SET mac = 'k1:{'0' * 64}' WHERE seq = 8")  # a made-up HMAC does no better
    done = verify(dsn, INTEGRATION_AUDIT_HMAC_KEY_FILE=str(key_file))
    assert done.exit_code == 1 and "record 8: its HMAC does not match its hash" in done.stderr


def test_keys_rotate_and_a_signed_log_refuses_unsigned_writers(dsn: str, tmp_path: Path, key_file: Path) -> None:
    filled(dsn, key_file)
    rotated = tmp_path / "rotated.keys"
    rotated.write_text(KEY + "k2 " + "22" * 32 + "\n")
    rotated.chmod(0o640)
    keys = MacKeys.parse(rotated.read_text(), "k2")
    store = open_audit_store(dsn, sign=keys.sign)
    store.record([AuditEntry("acked", "discharge", "m-9")], AT)
    store.close()
    env = {"INTEGRATION_AUDIT_HMAC_KEY_FILE": str(rotated), "INTEGRATION_AUDIT_HMAC_KEY_ID": "k2"}
    done = verify(dsn, **env)
    assert done.exit_code == 0 and "(key ids k1, k2)" in done.stdout
    done = verify(dsn, INTEGRATION_AUDIT_HMAC_KEY_FILE=str(key_file))  # the old key alone cannot vouch for k2's
    assert (
        done.exit_code == 1 and "record 8: its HMAC names key id 'k2', which the key file does not hold" in done.stderr
    )
    done = verify(dsn)  # no key: it would have to append its own record unsigned
    assert done.exit_code == 3 and "the audit log is signed (HMAC key id 'k1') and no key is configured" in done.stderr
    rotated.chmod(0o644)
    done = verify(dsn, **env)
    assert done.exit_code == 3 and "is readable by others" in done.stderr and "22" * 32 not in done.stderr


# -- the state tables ----------------------------------------------------------------------------------
BODY_1, BODY_2 = (hashlib.sha256(body).hexdigest() for body in (b'{"x": 1}', b'{"x": 2}'))
TAMPERING = {
    "processed_message": (
        "UPDATE processed_message SET outputs = '[]' WHERE message_id = 'm-1'",
        "INSERT INTO processed_message (flow, message_id, at, outputs, body_sha256) "
        "VALUES ('discharge', 'm-new', 'x', '[]', NULL)",
        "DELETE FROM processed_message WHERE message_id = 'm-3'",
        "discharge, m-1",
    ),
    "delivery_failure": (
        "UPDATE delivery_failure SET failures = 0",
        "INSERT INTO delivery_failure (flow, message_id, failures, last_error, at) "
        "VALUES ('hotline', 'x', 5, 'E', 'x')",
        "DELETE FROM delivery_failure",
        "discharge, m-2",
    ),
    "rehab_course": (
        "UPDATE rehab_course SET is_open = 0, responsible = 'gp'",
        "INSERT INTO rehab_course (patient, referring_department, municipality_code, is_open, responsible, changed_at) "
        f"VALUES ('{OTHER_CPR}', '715541000016001', '851', 1, 'hospital', 'x')",
        "DELETE FROM rehab_course",
        "key digest ",
    ),
    "hotline_request": (
        "UPDATE hotline_request SET answered_at = NULL WHERE request_id = 'r-1'",
        "INSERT INTO hotline_request (request_id, thread_id, requester, department, patient, received_at) "
        f"VALUES ('r-new', NULL, '012345', NULL, '{CPR}', 'x')",
        "DELETE FROM hotline_request WHERE request_id = 'r-2'",
        "r-1",
    ),
    "medcom_received": (
        "UPDATE medcom_received SET header_id = 'h-other'",
        "INSERT INTO medcom_received (bundle_id, header_id, at) VALUES ('b-new', 'h-in-1', 'x')",
        "DELETE FROM medcom_received",
        "b-in-1",
    ),
    "medcom_ack": (
        "UPDATE medcom_ack SET code = 'fatal-error'",
        "INSERT INTO medcom_ack (header_id, code, ack, at) VALUES ('h-new', 'ok', '{}', 'x')",
        "DELETE FROM medcom_ack",
        "h-in-1",
    ),
    "output_body": (  # the bodies of o-1 and o-2 (fill), each once
        f"UPDATE output_body SET encoding = 'zlib' WHERE body_sha256 = '{BODY_1}'",
        f"INSERT INTO output_body SELECT 'ab', encoding, body FROM output_body WHERE body_sha256 = '{BODY_1}'",
        f"DELETE FROM output_body WHERE body_sha256 = '{BODY_2}'",
        BODY_1,
    ),
    "outbound_message": (
        "UPDATE outbound_message SET state = 'acknowledged' WHERE header_id = 'h-2'",
        "INSERT INTO outbound_message (header_id, flow, output, first_sent_at, last_sent_at, resends, state) "
        "VALUES ('h-new', 'discharge', '{}', 'x', 'x', 0, 'awaiting')",
        "DELETE FROM outbound_message WHERE header_id = 'h-1'",
        "h-2",
    ),
}


@pytest.mark.parametrize("table", sorted(TAMPERING))
@pytest.mark.parametrize("how", ["changed", "inserted", "deleted"])
def test_a_state_row_changed_inserted_or_deleted_outside_the_service_is_found(dsn: str, table: str, how: str) -> None:
    filled(dsn)
    assert verify(dsn).exit_code == 0
    update, insert, delete, shown = TAMPERING[table]
    sql(dsn, {"changed": update, "inserted": insert, "deleted": delete}[how])
    done = verify(dsn)
    assert done.exit_code == 1
    (line,) = findings(done)
    assert line.startswith(f"audit log BROKEN at table {table}: ")
    if how == "changed":
        assert f"row {shown}" in line and "was changed outside the service (last written at record " in line
    elif how == "inserted":
        assert line.endswith("was inserted outside the service (no record wrote it)")
    else:
        assert "is gone (deleted outside the service)" in line
    assert cpr_numbers_in(line) == [] and CPR not in line and OTHER_CPR not in line


# SQLite keeps any value in any column (a typed column only prefers its type): each of these writes a value of
# a type the service never writes. (PostgreSQL refuses them: its columns are typed.) (tampering, where, problem)
TYPE_CONFUSIONS = [
    ("UPDATE audit_log SET seq = '5x' WHERE seq = 5", "the record read after record 7", "its seq holds text"),
    ("UPDATE audit_log SET seq = NULL WHERE seq = 5", "the first record read", "its seq holds NULL"),
    ("UPDATE audit_log SET seq = 5.5 WHERE seq = 5", "the record read after record 4", "its seq holds a real number"),
    ("UPDATE audit_log SET at = x'ff00'", "record 1", "its at holds a blob, not text"),
    ("UPDATE audit_log SET patient = x'ff'", "record 1", "its patient holds a blob, not text or NULL"),
    ("UPDATE audit_log SET step = x'ff' WHERE seq = 3", "record 3", "its step holds a blob, not text"),
    ("UPDATE audit_log SET hash = x'00' WHERE seq = 7", "record 7", "its hash holds a blob, not text"),
    ("UPDATE audit_log SET mac = x'00' WHERE seq = 2", "record 2", "its mac holds a blob, not text or NULL"),
    ("UPDATE audit_log SET detail = CAST('{}' AS BLOB) WHERE seq = 2", "record 2", "its content was changed"),
    ("UPDATE audit_head SET seq = 'x'", "the head", "its seq holds text, not a whole number"),
    ("UPDATE audit_head SET hash = x'00'", "the head", "its hash holds a blob, not text"),
    ("UPDATE rehab_course SET is_open = x'ff'", "table rehab_course", "was changed outside the service"),
]


@pytest.mark.parametrize(("tampering", "where", "problem"), TYPE_CONFUSIONS)
def test_a_value_of_a_type_the_service_never_writes_is_a_broken_record_named_with_its_field(
    tmp_path: Path, key_file: Path, tampering: str, where: str, problem: str
) -> None:
    """Not an internal error (70) with a traceback, nor the store "refusing" verify's scratch copy (65): exit 1,
    the record (or head, or table) and the field named, never a value (the patient's column holds a CPR)."""
    dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    anchors = tmp_path / "anchors.jsonl"
    filled(dsn, key_file)
    anchor_now(dsn, anchors, key_file)
    sql(dsn, tampering)
    done = verify(dsn, "--anchor", str(anchors), INTEGRATION_AUDIT_HMAC_KEY_FILE=str(key_file))
    assert isinstance(done.exception, SystemExit) and done.exit_code == 1, done.output
    lines = findings(done)
    assert any(line.startswith(f"audit log BROKEN at {where}: ") and problem in line for line in lines), lines
    assert "Traceback" not in done.output and cpr_numbers_in(done.output) == [] and CPR not in done.output


def test_an_export_of_a_log_with_a_malformed_record_is_one_line_and_65(tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    filled(dsn)
    sql(dsn, "UPDATE audit_log SET at = x'ff00' WHERE seq = 3")
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")} | {"INTEGRATION_AUDIT_DSN": dsn}
    done = run_integration("audit", "export", "--out", str(tmp_path / "out.json"), env=env, text=True)
    assert done.returncode == 65 and done.stderr.count("\n") == 1, done.stderr
    assert "audit log BROKEN at record 3: its at holds a blob, not text" in done.stderr
    assert not (tmp_path / "out.json").exists()


def test_a_store_from_before_the_evidence_adopts_its_rows_when_migrated(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"
    _version_2_store(path)
    adopted = [r for r in records(f"sqlite:///{path}") if r.step == "state-adopted"]  # the service migrates it
    assert len(adopted) == 1 and adopted[0].detail == {"fromVersion": 2, "rows": 2, "of": 2}
    assert verify(f"sqlite:///{path}").exit_code == 0
    sql(f"sqlite:///{path}", "UPDATE processed_message SET body_sha256 = 'ab'")
    done = verify(f"sqlite:///{path}")
    assert done.exit_code == 1 and "table processed_message: row discharge, old-1 was changed" in done.stderr


def test_a_version_3_store_gains_content_digests_and_its_received_rows_stay_covered(dsn: str) -> None:
    """Schema 4 adds medcom_received.content_sha256. Rows from before hold NULL there (unknown: a resend is
    a duplicate as before) and keep the digests the chain has for them, so a change made to them is found."""
    from integration.adapters.sql import audit_state

    schema_3 = hashlib.sha256(orjson.dumps(["medcom_received", "b-in-1", "h-in-1", "x"])).hexdigest()
    assert audit_state.row_digest("medcom_received", ("b-in-1", "h-in-1", "x", None)) == schema_3
    filled(dsn)
    schema_5 = (
        "DROP INDEX rehab_course_stage",
        *(f"ALTER TABLE rehab_course DROP COLUMN {c}" for c in ("stage", "pathway")),
    )
    sql(
        dsn,
        *schema_5,
        "ALTER TABLE medcom_received DROP COLUMN content_sha256",
        "UPDATE schema_version SET version = 3",
    )
    store = open_audit_store(dsn)  # the service migrates it
    try:
        earlier = store.received("h-in-1")
        assert earlier is not None and earlier.bundle_ids == {"b-in-1"} and earlier.contents == frozenset()
        store.record(
            [AuditEntry("fact:duplicate-message", "hotline", "b-in-2")],
            AT,
            changes=StateChanges(received=(ReceivedMessage("h-in-1", "b-in-2", content="d" * 64),)),
        )
        earlier = store.received("h-in-1")
        assert earlier is not None and earlier.contents == {"d" * 64}
    finally:
        store.close()
    assert verify(dsn).exit_code == 0
    sql(dsn, "UPDATE medcom_received SET content_sha256 = 'e' WHERE bundle_id = 'b-in-1'")
    sql(dsn, "UPDATE medcom_received SET content_sha256 = NULL WHERE bundle_id = 'b-in-2'")
    done = verify(dsn)
    assert done.exit_code == 1
    lines = findings(done)
    assert len(lines) == 2 and all(line.startswith("audit log BROKEN at table medcom_received: ") for line in lines)
    assert any("row b-in-1 was changed" in line for line in lines) and any(
        "row b-in-2 was changed" in line for line in lines
    )


def _version_2_store(path: Path) -> None:
    """A store as the release before this one left it: schema version 2, one record, two state rows."""
    connection = sqlite3.connect(path, isolation_level=None)
    for statement in (s for step in MIGRATIONS[:2] for s in step):
        connection.execute(statement)
    connection.execute("CREATE TABLE schema_version (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)")
    connection.execute("INSERT INTO schema_version VALUES (1, 2)")
    entry = AuditEntry("received", "discharge", "old-1")
    digest = record_hash(1, AT.isoformat(), entry, GENESIS)
    connection.execute(
        "INSERT INTO audit_log VALUES (1, ?, 'received', 'discharge', 'old-1', NULL, '{}', ?, ?)",
        (AT.isoformat(), GENESIS, digest),
    )
    connection.execute("INSERT INTO audit_head VALUES (1, 1, ?)", (digest,))
    connection.execute("INSERT INTO processed_message VALUES ('discharge', 'old-1', 'x', '[]', NULL)")
    connection.execute(f"INSERT INTO rehab_course VALUES ('{CPR}', '715541000016001', '851', 1, 'hospital', 'x')")
    connection.close()


# -- anchors: the format, and the running consumer -----------------------------------------------------
def test_anchors_are_read_from_the_file_and_from_log_lines_even_masked() -> None:
    digest = "ab" + "2512489996" + "cd" * 26
    assert len(digest) == 64
    masked = digest.replace("2512489996", MASKED)
    text = "\n".join(
        [
            '{"anchor": "audit-head", "seq": 7, "hash": "' + digest + '", "at": "2026-11-30T10:00:00+00:00"}',
            "Nov 30 10:00:00 host integration[99]: "
            + orjson.dumps({"event": "audit anchor", "seq": 8, "hash": masked, "level": "info"}).decode(),
            f"2026-11-30T10:05:00Z [info     ] audit anchor                   hash={digest} seq=9",
            '{"event": "message", "flow": "discharge", "outcome": "published"}',
            '{"event": "anchor file not written; retried at the next anchor", "file": "/x"}',
        ]
    )
    anchors = parse_anchors(text, "shipped.log")
    assert [(a.seq, a.source) for a in anchors] == [(7, "shipped.log:1"), (8, "shipped.log:2"), (9, "shipped.log:3")]
    assert all(a.matches(digest) for a in anchors)
    assert not anchors[1].matches("ab" + "1111111111" + "cd" * 25 + "ce")


def test_an_anchor_quoted_inside_another_line_is_not_an_anchor() -> None:
    """A sender's message-id ends up in log lines; written to look like an anchor, it must not count as one
    (it would let whoever rewrote the log plant the head of a rewritten chain)."""
    forged = "f" * 64
    quoted = f"x 2026-11-30T10:05:00Z [info     ] audit anchor                   hash='{forged}' seq=3"
    text = "\n".join(
        [
            f"2026-11-30T10:05:01Z [warning  ] a message-id was reused       flow='discharge' message_id={quoted!r}",
            f"2026-11-30T10:05:01Z [warning  ] a message-id was reused       message_id={quoted!r} reason='x'",
            f"2026-11-30T10:05:01Z [warning  ] reused   message_id='x {quoted[2:-7]}' seq=3",
            f"2026-11-30T10:05:02Z [info     ] message audit anchor seq=3 hash={forged} flow='discharge'",
            orjson.dumps({"event": "a message-id was reused", "message_id": quoted}).decode(),
            orjson.dumps(
                {"event": "message", "message_id": '{"anchor": "audit-head", "seq": 3, "hash": "' + forged + '"}'}
            ).decode(),
        ]
    )
    assert parse_anchors(text, "shipped.log") == []


def test_an_anchor_file_without_anchors_is_a_usage_error(dsn: str, tmp_path: Path) -> None:
    filled(dsn)
    other = tmp_path / "notes.txt"
    other.write_text("nothing here\n")
    done = verify(dsn, "--anchor", str(other))
    assert done.exit_code == 2 and "no audit anchor in it" in done.stderr
    done = verify(dsn, "--anchor", str(tmp_path / "absent.jsonl"))
    assert done.exit_code == 2 and "cannot read it" in done.stderr


FAST = RetryPolicy(attempts=2, seconds=1, initial_wait=0.01, max_wait=0.05)


@pytest.fixture
def consumer_log(tmp_path: Path) -> Iterator[Path]:
    """The structured log of this test, as the service writes it (scanned for CPR numbers at the end)."""
    path = tmp_path / "consumer.log"
    with path.open("a", encoding="utf-8") as stream:
        configure_logging("INFO", stream, fmt="json")
        yield path


def _consume(vhost: str, store: Any, job: Callable[[object], object]) -> ConsumerService:
    wiring = build(Settings.from_env({}), store=store, clock=lambda: FIXED_NOW, retry=FAST)
    return ConsumerService(
        BrokerSettings(broker_url(vhost), prefetch=20),
        [FLOWS_BY_NAME["discharge"]],
        wiring.processor_on,
        reconnect_max_wait=1.0,
        periodic=job,
        period=0.2,
    )


def _anchored_seq(anchors: Path) -> int:
    """The highest record number anchored in the file so far (0 when none)."""
    if not anchors.is_file():
        return 0
    return max((orjson.loads(line)["seq"] for line in anchors.read_text().splitlines() if line.strip()), default=0)


def _head(dsn: str) -> tuple[int, str]:
    """The store's head read through a handle of the test's own: the consumer's handle is its thread's alone
    (a SQLite connection used by two threads at once meets the other's open transaction)."""
    reader = open_audit_store(dsn, create=False)
    try:
        return reader.head()
    finally:
        reader.close()


def test_the_running_consumer_anchors_the_head_and_verify_checks_against_it(
    vhost: str, dsn: str, tmp_path: Path, consumer_log: Path
) -> None:
    anchors = tmp_path / "anchors.jsonl"
    store = open_audit_store(dsn)
    job = AnchorJob(store, anchors, timedelta(0))
    service = _consume(vhost, store, job)
    outputs = output_queue(vhost)
    worker = threading.Thread(target=service.run, daemon=True)
    worker.start()
    try:
        for part in (referral_events(30)[:15], referral_events(30)[15:]):
            expected = queue_depth(vhost, outputs) + len(part)
            publish_events(vhost, part)
            wait_for(lambda n=expected: queue_depth(vhost, outputs) >= n, 60, "the referrals")  # type: ignore[misc]
            head = _head(dsn)  # the acks' records may follow (decision 29): an anchor at or after it will do
            wait_for(lambda h=head: _anchored_seq(anchors) >= h[0], 30, "an anchor")  # type: ignore[misc]
    finally:
        service.stop()
        worker.join(timeout=30)
        store.close()
    lines = [orjson.loads(line) for line in anchors.read_text().splitlines()]
    assert len(lines) >= 2 and all(line["anchor"] == "audit-head" for line in lines)
    assert [line["seq"] for line in lines] == sorted({line["seq"] for line in lines}), "only when the head moved"
    logged = parse_anchors(consumer_log.read_text(), "consumer.log")
    assert {(a.seq, a.hash) for a in logged} >= {(line["seq"], line["hash"]) for line in lines[:-1]}
    done = verify(dsn, "--anchor", str(anchors), "--anchor", str(consumer_log))
    assert done.exit_code == 0, done.stderr
    cut = lines[0]["seq"] + 1
    kept = records(dsn)[cut - 2]
    sql(
        dsn, f"DELETE FROM audit_log WHERE seq >= {cut}", f"UPDATE audit_head SET seq = {cut - 1}, hash = '{kept.hash}'"
    )
    done = verify(dsn, "--anchor", str(consumer_log))
    assert done.exit_code == 1 and f"was anchored, but the log ends at record {cut - 1}" in done.stderr


def test_integration_run_anchors_to_its_log_and_file_and_once_more_at_stop(vhost: str, tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    anchors = tmp_path / "anchors.jsonl"
    log = tmp_path / "run.log"
    outputs = output_queue(vhost)
    process = start_consumer(vhost, dsn, log, INTEGRATION_AUDIT_ANCHOR_FILE=str(anchors))
    try:
        publish_events(vhost, referral_events(10))
        wait_for(lambda: queue_depth(vhost, outputs) >= 10, 90, "the referrals")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    last = orjson.loads(anchors.read_text().splitlines()[-1])
    store = open_audit_store(dsn)
    head = store.head()
    store.close()
    assert (last["seq"], last["hash"]) == head, "the head at stop is anchored"
    assert any(a.seq == head[0] for a in parse_anchors(log.read_text(), "run.log"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")} | {"INTEGRATION_AUDIT_DSN": dsn}
    done = run_integration("audit", "verify", "--anchor", str(anchors), "--anchor", str(log), env=env, text=True)
    assert done.returncode == 0, done.stderr


# -- who reads ---------------------------------------------------------------------------------------
def test_reads_by_trail_verify_and_transform_are_audited_with_the_os_user(tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    store = open_audit_store(dsn)
    store.record([], AT, changes=StateChanges(courses=(Course(CPR, "715541000016001", "851", True, "hospital"),)))
    store.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
    env |= {"INTEGRATION_AUDIT_DSN": dsn, "LOGNAME": "mallory", "USER": "mallory"}
    request = GOLDEN / "hotline" / "municipality-routine.request.json"
    assert orjson.loads(request.read_bytes())["patient"]["cpr"] == CPR
    for command in (("audit", "trail", "--patient", CPR), ("audit", "verify")):
        done = run_integration(*command, env=env)
        assert done.returncode == 0, done.stderr
    # transform prints the outgoing message, which names the patient by design: its output is not checked here
    done = subprocess.run(
        [sys.executable, "-m", "integration", "transform", str(request), "--store"],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stderr == b"", done.stderr
    store = open_audit_store(dsn)
    reads = {r.step: r for r in store.records() if "by" in r.detail}
    store.close()
    assert set(reads) == {"audit-trail-viewed", "audit-verified", "state-read"}
    assert all(r.detail["by"] == ME and r.detail["uid"] == os.geteuid() for r in reads.values())
    assert reads["audit-trail-viewed"].patient == CPR and reads["state-read"].patient == CPR
    assert reads["state-read"].detail["read"] == "course" and reads["audit-verified"].detail["intact"] is True


def test_transform_with_store_but_without_one_says_so_and_creates_none(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
    env |= {"INTEGRATION_AUDIT_DSN": f"sqlite:///{tmp_path / 'absent.sqlite3'}"}
    request = str(GOLDEN / "hotline" / "municipality-routine.request.json")
    done = run_integration("transform", request, "--store", env=env)
    assert done.returncode == 3 and done.stdout == b""
    assert b"course state unavailable: no audit store at " in done.stderr and b"(or give --state)" in done.stderr
    assert not (tmp_path / "absent.sqlite3").exists()


def test_the_processor_path_leaves_every_row_it_wrote_covered(dsn: str) -> None:
    """The state digests the service writes as it goes agree with its tables, message after message."""
    from integration.adapters.memory import InMemoryBroker

    store = open_audit_store(dsn)
    broker = InMemoryBroker()
    broker.bind("rehab.referral", "sink", "#")
    processor = build(Settings.from_env({}), bus=broker, store=store, clock=lambda: FIXED_NOW, retry=FAST).processor
    from integration.service.processor import Delivery

    deliveries = [Delivery("discharge", body, event_id) for event_id, body in referral_events(12)]
    outcomes = processor.process_batch(deliveries[:6]) + processor.process_batch(deliveries[6:])
    processor.acknowledged(list(zip(deliveries, outcomes, strict=True)))
    assert isinstance(store, SqlAuditStore)
    with store.evidence() as evidence:
        rows = sum(1 for table in evidence.tables for _ in evidence.rows(table))
    store.close()
    assert rows >= 24  # processed, and tracked for its ack
    done = verify(dsn)
    assert done.exit_code == 0, done.stderr


def test_the_anchor_job_publishes_when_due_and_moved_and_retries_an_unwritable_file(tmp_path: Path) -> None:
    store = open_audit_store(f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    anchors = tmp_path / "not-yet" / "anchors.jsonl"
    now = [0.0]
    job = AnchorJob(store, anchors, timedelta(minutes=5), clock=lambda: now[0])
    assert job() is None  # an empty log: nothing to anchor
    store.record([AuditEntry("received", "discharge", "m-1")], AT)
    now[0] = 1.0
    assert job() is None, "not due yet"
    now[0] = 301.0
    assert job() == store.head() and not anchors.exists()  # the file's directory is missing: logged, retried
    anchors.parent.mkdir()
    now[0] = 602.0
    assert job() == store.head() and len(anchors.read_text().splitlines()) == 1
    now[0] = 903.0
    assert job() is None and len(anchors.read_text().splitlines()) == 1, "the head did not move"
    store.record([AuditEntry("acked", "discharge", "m-1")], AT)
    job.last()
    lines = [orjson.loads(line) for line in anchors.read_text().splitlines()]
    assert [(x["seq"], x["hash"]) for x in lines] == [(1, lines[0]["hash"]), store.head()]
    store.close()


def test_the_evidence_settings_are_read() -> None:
    settings = Settings.from_env(
        {
            "INTEGRATION_AUDIT_ANCHOR_MINUTES": "2",
            "INTEGRATION_AUDIT_ANCHOR_FILE": "/var/lib/anchors/audit.jsonl",
            "INTEGRATION_AUDIT_HMAC_KEY_FILE": "/etc/hjerterehab/audit-hmac.keys",
            "INTEGRATION_AUDIT_HMAC_KEY_ID": "2026-11",
        }
    )
    assert settings.audit_anchor_minutes == 2 and settings.audit_anchor_file == Path("/var/lib/anchors/audit.jsonl")
    assert settings.audit_hmac_key_file == Path("/etc/hjerterehab/audit-hmac.keys")
    assert settings.audit_hmac_key_id == "2026-11"
    defaults = Settings.from_env({})
    assert (defaults.audit_anchor_minutes, defaults.audit_anchor_file, defaults.audit_hmac_key_file) == (5, None, None)


def _planted(dsn: str) -> list[str]:
    """A trigger (and on PostgreSQL a rule and a row policy) that rewrites what the service writes: its
    upserts and counts are read back and chained, so the chain alone would take the changes for ours."""
    if dsn.startswith("sqlite:///"):
        return [
            "CREATE TRIGGER evil AFTER INSERT ON rehab_course BEGIN "
            "UPDATE rehab_course SET municipality_code = '0999' WHERE patient = NEW.patient; END"
        ]
    return [
        "CREATE FUNCTION evil() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN NEW.municipality_code := '0999'; RETURN NEW; END $$",
        "CREATE TRIGGER evil BEFORE INSERT ON rehab_course FOR EACH ROW EXECUTE FUNCTION evil()",
        "CREATE RULE sly AS ON UPDATE TO delivery_failure DO ALSO NOTIFY sly",
        "CREATE POLICY hidden ON rehab_course USING (true)",
    ]


def test_a_planted_trigger_rule_or_policy_is_found(dsn: str) -> None:
    """Found by the attack on #10: a trigger rewrote new courses and `verify` said intact."""
    filled(dsn)
    sql(dsn, *_planted(dsn))
    done = verify(dsn)
    assert done.exit_code == 1
    lines = findings(done)
    assert any(x.startswith("audit log BROKEN at the schema: trigger evil on rehab_course") for x in lines), lines
    if not dsn.startswith("sqlite:///"):
        assert any("rule sly on delivery_failure" in x for x in lines), lines
        assert any("policy hidden on rehab_course" in x for x in lines), lines
