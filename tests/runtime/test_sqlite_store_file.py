"""The SQLite audit store's file, as the settings name it (attack on issue #16): the service makes the file it
writes owner-only (it holds CPR numbers), and nothing else. An empty path (the working directory), a directory, a
symbolic link or a path under a file is a configuration error (exit 3, one line naming INTEGRATION_AUDIT_DSN),
read with the settings, before any mode is touched; an existing file that is no SQLite database keeps its mode
(exit 66); a database that others could read is tightened through a descriptor that never follows a link."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from integration.adapters.sql.schema import StoreMissing
from integration.adapters.sql.stores import open_audit_store
from integration.config import Settings
from integration.errors import ConfigurationError
from integration.service.audit_chain import AuditEntry
from tests.cli_runs import run_integration, store_env


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def place(tmp_path: Path) -> Path:
    """A directory and a plain text file readable by others, a link to the file, the directory searchable."""
    (tmp_path / "dir").mkdir(mode=0o755)
    (tmp_path / "notes.txt").write_text("not a database\n")
    (tmp_path / "notes.txt").chmod(0o644)
    (tmp_path / "link.sqlite3").symlink_to(tmp_path / "notes.txt")
    tmp_path.chmod(0o755)
    return tmp_path


@pytest.mark.parametrize(
    ("dsn", "says"),
    [
        ("sqlite:///", "sqlite:/// names no file"),
        ("sqlite:///{place}/dir", "{place}/dir is a directory, not a file"),
        ("sqlite:///{place}/dir/", "names no file"),
        ("sqlite:///{place}/link.sqlite3", "{place}/link.sqlite3 is a symbolic link: name the file itself"),
        ("sqlite:///{place}/notes.txt/audit.sqlite3", "cannot be created: {place}/notes.txt is not a directory"),
    ],
    ids=["empty", "directory", "trailing-slash", "symlink", "under-a-file"],
)
@pytest.mark.parametrize("command", [("run",), ("audit", "verify")])
def test_a_path_that_cannot_be_the_store_file_is_exit_3_and_no_mode_changes(
    place: Path, dsn: str, says: str, command: tuple[str, ...]
) -> None:
    """`sqlite:///` chmod-ed the working directory (the checkout!) to 600 and waited forever for the store."""
    before = {path: mode(path) for path in (place, place / "dir", place / "notes.txt", place / "link.sqlite3")}
    done = run_integration(*command, env=store_env(dsn.format(place=place)), cwd=place / "dir", text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    (line,) = done.stderr.splitlines()
    assert (
        line.startswith("error: configuration: audit_dsn (INTEGRATION_AUDIT_DSN): ")
        and says.format(place=place) in line
    )
    assert {path: mode(path) for path in before} == before
    assert sorted(p.name for p in (place / "dir").iterdir()) == []


def test_an_existing_file_that_is_no_database_keeps_its_mode(place: Path) -> None:
    done = run_integration("run", env=store_env(f"sqlite:///{place}/notes.txt"), text=True, timeout=60)
    assert done.returncode == 66 and "is not an SQLite database" in done.stderr, done.stderr
    assert mode(place / "notes.txt") == 0o644 and (place / "notes.txt").read_text() == "not a database\n"


def test_the_store_itself_refuses_what_the_settings_would_have_refused(place: Path) -> None:
    """The adapter's own guard (a path that became a link or a directory after the settings were read): the
    target of a link is never chmod-ed, a directory never."""
    for name in ("dir", "link.sqlite3"):
        with pytest.raises(ConfigurationError, match="INTEGRATION_AUDIT_DSN"):
            open_audit_store(f"sqlite:///{place / name}")
    with pytest.raises(StoreMissing, match="is a directory"):
        open_audit_store(f"sqlite:///{place / 'dir'}", create=False)
    with pytest.raises(StoreMissing, match="not an SQLite database"):
        open_audit_store(f"sqlite:///{place / 'notes.txt'}")
    assert (mode(place / "dir"), mode(place / "notes.txt")) == (0o755, 0o644)


def test_a_new_store_is_owner_only_and_a_loose_database_is_tightened(tmp_path: Path) -> None:
    new = tmp_path / "new" / "audit.sqlite3"
    open_audit_store(f"sqlite:///{new}").close()
    assert mode(new) == 0o600
    loose = tmp_path / "loose.sqlite3"
    sqlite3.connect(loose).execute("CREATE TABLE t (x)").connection.close()
    loose.chmod(0o644)
    open_audit_store(f"sqlite:///{loose}").close()
    assert mode(loose) == 0o600
    assert Settings.from_env({"INTEGRATION_AUDIT_DSN": f"sqlite:///{loose}"}).audit_dsn == f"sqlite:///{loose}"


READ_STEPS = """
import sys
from integration.adapters.sql.stores import open_audit_store
store = open_audit_store(sys.argv[1], create=False)
print(",".join(r.message_id for r in store.records()))
store.close()
"""


def read_elsewhere(dsn: str) -> list[str]:
    """The records' message ids as another process (`audit verify`, the board, a test) reads them."""
    done = subprocess.run([sys.executable, "-c", READ_STEPS, dsn], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [m for m in done.stdout.strip().split(",") if m.startswith("m-")]


@pytest.mark.parametrize("second", ["service", "reader"])
def test_a_second_handle_in_the_process_leaves_the_first_its_locks(tmp_path: Path, second: str) -> None:
    """Issue #16's cluster test waited two minutes for an "acked" record the consumer had committed: the
    pathway counter's own handle, opened in the service's process, checked the file through a descriptor of
    ours, and closing it dropped every POSIX lock of the process on the file, the consumer's connection's too.
    The next reader elsewhere to close then deleted the WAL under the consumer, whose later commits went to an
    unlinked file — seen by no one, gone with a kill -9. A second handle must not touch the file's locks."""
    dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    now = datetime.now(UTC)
    service = open_audit_store(dsn)
    try:
        service.record([AuditEntry("received", "discharge", "m-1")], now)
        other = open_audit_store(dsn, create=second == "service")
        other.close()
        assert read_elsewhere(dsn) == ["m-1"]  # a reader in another process opens and closes
        service.record([AuditEntry("received", "discharge", "m-2")], now)
        assert (tmp_path / "audit.sqlite3-wal").exists(), "the WAL was deleted under an open connection"
        assert read_elsewhere(dsn) == ["m-1", "m-2"]
    finally:
        service.close()
    assert read_elsewhere(dsn) == ["m-1", "m-2"]
