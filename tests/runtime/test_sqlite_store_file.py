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
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from integration.adapters.sql import sqlite as sqlite_adapter
from integration.adapters.sql.schema import StoreMissing
from integration.adapters.sql.store import AuditStore
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


# -- what a second attack on decision 34 found -----------------------------------------------------------


@pytest.fixture
def writing(tmp_path: Path) -> Iterator[tuple[Path, AuditStore]]:
    """A store's file and the service's handle on it, one record ("m-1") committed into its WAL."""
    store = tmp_path / "audit.sqlite3"
    writer = open_audit_store(f"sqlite:///{store}")
    try:
        writer.record([AuditEntry("received", "discharge", "m-1")], datetime.now(UTC))
        yield store, writer
    finally:
        writer.close()


def test_a_store_file_with_a_second_name_is_a_configuration_error(tmp_path: Path) -> None:
    """SQLite names the WAL after the name it opened: through a hard link a second WAL, records lost or the
    file corrupted while `audit verify` said intact (SQLite's "multiple links to the same file")."""
    store = tmp_path / "audit.sqlite3"
    open_audit_store(f"sqlite:///{store}").close()
    os.link(store, tmp_path / "copy.sqlite3")
    for name in ("audit.sqlite3", "copy.sqlite3"):
        for command in (("run",), ("audit", "verify")):
            done = run_integration(*command, env=store_env(f"sqlite:///{tmp_path / name}"), text=True, timeout=60)
            assert done.returncode == 3, done.stderr
            assert "INTEGRATION_AUDIT_DSN" in done.stderr and "2 names (hard links)" in done.stderr
        for create in (True, False):
            with pytest.raises(ConfigurationError, match="hard links"):
                open_audit_store(f"sqlite:///{tmp_path / name}", create=create)


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm"])
@pytest.mark.parametrize("command", [("audit", "export"), ("topology", "export")])
def test_an_export_never_replaces_the_store_or_its_wal(
    writing: tuple[Path, AuditStore], suffix: str, command: tuple[str, ...]
) -> None:
    """`audit export --out` the store's own name replaced the store by the export (exit 0); its `-wal` left the
    service writing into a deleted file: every record since lost at the next kill."""
    store, _ = writing
    target = Path(f"{store}{suffix}")
    before = target.read_bytes()
    done = run_integration(*command, "--out", str(target), env=store_env(f"sqlite:///{store}"), text=True)
    assert done.returncode == 2, done.stderr
    assert (
        done.stderr.strip()
        == f"error: --out {target}: an SQLite database's file (the audit store?): it is never replaced"
    )
    assert target.read_bytes() == before
    assert read_elsewhere(f"sqlite:///{store}") == ["m-1"]


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm"])
@pytest.mark.parametrize("through", ["the same path", "a linked directory"])
def test_the_anchor_file_cannot_be_the_store(tmp_path: Path, suffix: str, through: str) -> None:
    """The anchor appended to the store's own file through a descriptor of its own: decision 34's lost locks
    (through a symbolic link to the store's directory too, before the store exists)."""
    store = tmp_path / "audit.sqlite3"
    (tmp_path / "linked").symlink_to(tmp_path)
    anchor = store if through == "the same path" else tmp_path / "linked" / store.name
    env = store_env(f"sqlite:///{store}") | {"INTEGRATION_AUDIT_ANCHOR_FILE": f"{anchor}{suffix}"}
    done = run_integration("run", env=env, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    assert "INTEGRATION_AUDIT_ANCHOR_FILE" in done.stderr and "the audit store's own file" in done.stderr
    assert not store.exists()


def test_a_crash_left_wal_and_index_are_tightened_with_the_store(tmp_path: Path) -> None:
    """The main file was made owner-only and the WAL beside it — the latest records — stayed readable by all."""
    store = tmp_path / "audit.sqlite3"
    crash = "\n".join(
        [
            "import os, sys",
            "from datetime import UTC, datetime",
            "from integration.adapters.sql.stores import open_audit_store",
            "from integration.service.audit_chain import AuditEntry",
            "s = open_audit_store(sys.argv[1])",
            "s.record([AuditEntry('received', 'discharge', 'm-1')], datetime.now(UTC))",
            "os._exit(9)  # as a kill: the WAL and its index stay",
        ]
    )
    subprocess.run([sys.executable, "-c", crash, f"sqlite:///{store}"], timeout=60)
    names = [store, Path(f"{store}-wal"), Path(f"{store}-shm")]
    assert all(p.exists() for p in names)
    for p in names:
        p.chmod(0o644)
    opened = open_audit_store(f"sqlite:///{store}")
    try:
        assert [mode(p) for p in names] == [0o600] * 3  # while open: at its close SQLite removes the two
        assert read_elsewhere(f"sqlite:///{store}") == ["m-1"]
    finally:
        opened.close()


def test_a_loose_store_of_another_user_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It waited for ever ("Operation not permitted", as an outage) when the mode could not be changed."""
    store = tmp_path / "audit.sqlite3"
    open_audit_store(f"sqlite:///{store}").close()
    store.chmod(0o644)

    def not_the_owner(_descriptor: int, _mode: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "fchmod", not_the_owner)
    with pytest.raises(ConfigurationError, match=r"INTEGRATION_AUDIT_DSN\): .* belongs to another user"):
        open_audit_store(f"sqlite:///{store}")


def test_a_store_that_fails_to_open_is_not_counted_open(tmp_path: Path) -> None:
    """A schema refused after the connection was made left the file counted open for good (never tightened)."""
    store = tmp_path / "audit.sqlite3"
    open_audit_store(f"sqlite:///{store}").close()
    raw = sqlite3.connect(store)
    raw.execute("UPDATE schema_version SET version = version + 1")
    raw.commit()
    raw.close()
    for _ in range(3):
        with pytest.raises(Exception):  # noqa: B017, PT011 - whichever refusal: the count is the point
            open_audit_store(f"sqlite:///{store}")
    info = os.stat(store)
    assert (info.st_dev, info.st_ino) not in sqlite_adapter._OPEN  # (other tests' stores may be open in this process)


@pytest.mark.parametrize("command", [("audit", "export"), ("topology", "export")])
def test_an_export_through_a_link_never_writes_into_the_wal(
    tmp_path: Path, writing: tuple[Path, AuditStore], command: tuple[str, ...]
) -> None:
    """`topology export --out` a symbolic link to the live WAL wrote the definitions into it (exit 0): the
    store was damaged for good. A link to the WAL, symbolic or hard, is refused; a link to any other file is
    replaced by the export, its target untouched."""
    store, writer = writing
    wal = Path(f"{store}-wal")
    before = wal.read_bytes()
    (tmp_path / "defs.json").symlink_to(wal)
    os.link(wal, tmp_path / "hard.json")
    for name in ("defs.json", "hard.json"):
        done = run_integration(*command, "--out", str(tmp_path / name), env=store_env(f"sqlite:///{store}"))
        assert done.returncode == 2 and b"an SQLite database's file" in done.stderr, done.stderr
    assert wal.read_bytes() == before
    (tmp_path / "notes.txt").write_text("mine\n")
    (tmp_path / "elsewhere.json").symlink_to(tmp_path / "notes.txt")
    done = run_integration(*command, "--out", str(tmp_path / "elsewhere.json"), env=store_env(f"sqlite:///{store}"))
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "elsewhere.json").is_symlink()
    assert (tmp_path / "elsewhere.json").read_bytes().startswith(b"{")
    assert (tmp_path / "notes.txt").read_text() == "mine\n"
    writer.record([AuditEntry("received", "discharge", "m-2")], datetime.now(UTC))
    assert read_elsewhere(f"sqlite:///{store}") == ["m-1", "m-2"]


def test_an_export_into_a_fifo_is_written_into_it_and_leaves_it_a_fifo(tmp_path: Path) -> None:
    """`--out /dev/stdout` (as root) replaced the device's link with a file of the export, CPR numbers and all;
    a FIFO was replaced by a file its reader never saw. A device or a FIFO is written into."""
    store = tmp_path / "audit.sqlite3"
    open_audit_store(f"sqlite:///{store}").close()
    fifo = tmp_path / "export.fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader_thread = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader_thread.start()
    done = run_integration("audit", "export", "--out", str(fifo), env=store_env(f"sqlite:///{store}"), timeout=60)
    reader_thread.join(30)
    assert done.returncode == 0, done.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert received and received[0].startswith(b"{") and b'"resourceType": "Bundle"' in received[0]
