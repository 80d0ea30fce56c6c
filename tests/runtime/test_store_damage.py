"""A damaged audit store is an error with one line and an exit code, never a wait and never a partial
answer: a page SQLite cannot read (every reader checks the file first: a damaged index can make a query
return too little without an error), a `schema_version` that is not what the schema is (the service does
not migrate it: `run` exits 65 at once instead of waiting for the "outage" forever), a version that is no
number. A PostgreSQL database that does not exist is "unavailable" (69), and the line says it does not exist.
"""

from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from integration.adapters.sql.stores import open_audit_store
from integration.domain.course import Course, StateChanges
from integration.service.audit_chain import AuditEntry
from tests.cli_runs import run_integration, store_env
from tests.conftest import FIXED_NOW

CPR = "2512489996"
READERS = [
    (("audit", "trail", "--patient", CPR), 65),
    (("hotline", "pending"), 65),
    (("outbound", "pending"), 65),
    (("audit", "verify"), 1),
]


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in done.stderr, done.stderr
    assert CPR not in done.stderr
    return lines[0]


def filled(dsn: str, records: int = 400) -> None:
    """A store as the service leaves it, with enough of one patient's records to span many pages."""
    store = open_audit_store(dsn)
    try:
        store.record([], FIXED_NOW, changes=StateChanges(courses=(Course(CPR, "dept", "851", True, "hospital"),)))
        for n in range(records):
            detail = {"note": "x" * 200}
            store.record([AuditEntry("received", "discharge", f"m-{n}", detail, patient=CPR)], FIXED_NOW)
    finally:
        store.close()


def test_a_damaged_index_page_is_found_by_every_reader(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"
    dsn = f"sqlite:///{path}"
    filled(dsn)
    with sqlite3.connect(path) as db:
        (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'audit_log_patient'").fetchone()
        (size,) = db.execute("PRAGMA page_size").fetchone()
    with path.open("r+b") as file:  # overwrite the cells of the patient index's root page
        file.seek((root - 1) * size + 12)
        file.write(b"\x00\xff" * 200)
    for command, code in READERS:
        done = run_integration(*command, env=store_env(dsn), text=True, timeout=60)
        assert done.returncode == code, (command, done.stderr)
        assert "audit store (SQLite) damaged" in one_line(done) and "restore it from a backup" in done.stderr
        assert done.stdout == ""


@pytest.mark.parametrize(
    "tampering",
    [
        "UPDATE schema_version SET version = 1",
        "DELETE FROM schema_version",
        "DROP TABLE schema_version",
        "UPDATE schema_version SET version = 'three'",
        "UPDATE schema_version SET version = -1",
    ],
)
def test_run_on_a_tampered_schema_version_exits_65_at_once(tampering: str, tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"
    dsn = f"sqlite:///{path}"
    filled(dsn, records=3)
    with sqlite3.connect(path) as db:
        db.execute(tampering)
    started = time.monotonic()
    done = run_integration("run", env=store_env(dsn), text=True, timeout=60)
    assert done.returncode == 65, done.stderr
    assert time.monotonic() - started < 30  # not waiting for an outage that is none
    line = one_line(done)
    assert "not migrated" in line or "no version number" in line or "which no release wrote" in line


@pytest.mark.parametrize("tampering", ["UPDATE schema_version SET version = 2", "DELETE FROM schema_version"])
def test_run_on_a_tampered_postgres_schema_version_exits_65(tampering: str, postgres_dsn: str) -> None:
    import psycopg

    filled(postgres_dsn, records=3)
    with psycopg.connect(postgres_dsn, autocommit=True) as db:
        db.execute(tampering)
    done = run_integration("run", env=store_env(postgres_dsn), text=True, timeout=60)
    assert done.returncode == 65, done.stderr
    assert "not migrated" in one_line(done)


def test_a_schema_version_that_is_no_number_is_damage_for_a_reader(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"
    dsn = f"sqlite:///{path}"
    filled(dsn, records=3)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE schema_version SET version = 'three'")
    for command, code in READERS:
        done = run_integration(*command, env=store_env(dsn), text=True, timeout=60)
        assert done.returncode == code and "no version number" in one_line(done), (command, done.stderr)


def test_a_missing_postgres_database_is_unavailable_and_says_it_does_not_exist() -> None:
    dsn = "postgresql://postgres@127.0.0.1:5432/no_such_database_here"
    for command, _ in READERS:
        done = run_integration(*command, env=store_env(dsn), text=True, timeout=60)
        assert done.returncode == 69, (command, done.stderr)
        assert 'database "no_such_database_here" does not exist' in one_line(done)
