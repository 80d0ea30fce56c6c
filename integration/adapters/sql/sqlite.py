"""The audit store in an SQLite file: embedded, zero set-up, the default on a laptop.

WAL journal with synchronous=FULL: a committed record survives a crash of the process or the
machine. BEGIN IMMEDIATE takes the write lock at once, which serialises appends to the chain
across consumer processes sharing the file; a lock not granted within the busy timeout is an
outage (Transient), like a file that cannot be opened. The file holds CPR numbers: it is created
readable by its owner only (0600), and a looser existing database is tightened (never a directory, a
symbolic link or a file that is no SQLite database: `_owner_only`). Opened with
`create=False`, a missing file is `StoreMissing` and is never created (read-write, `mode=rw`).
"""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import structlog

from integration.adapters.sql.audit_log import Signer
from integration.adapters.sql.schema import StoreMissing
from integration.adapters.sql.store import SqlAuditStore
from integration.adapters.sql.unit_of_work import UnitOfWork
from integration.config import AUDIT_DSN_SETTING, hard_links
from integration.errors import ConfigurationError, StoreDamaged, StoreRefused, Transient

log = structlog.get_logger("integration.audit_store")
SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file (its file format)
BUSY_TIMEOUT_SECONDS = 5.0
OWNER_ONLY = 0o600
WAL_COMPANIONS = ("-wal", "-shm")  # the files SQLite keeps beside a database in WAL mode, named after it
WAL_MAGIC = (b"\x37\x7f\x06\x82", b"\x37\x7f\x06\x83")  # the first bytes of a write-ahead log (SQLite's WAL format)

# The files this process has SQLite connections to, by (device, inode), with how many. Closing any descriptor
# of a file drops every POSIX lock this process holds on it (fcntl semantics), SQLite's shared lock among
# them; a connection left without it lets another process's last close checkpoint and delete the WAL under
# it, and its later commits go to an unlinked file: invisible to every other reader, lost with the process.
# So `_owner_only` opens the file only while no connection of this process has it open (decision 34).
_OPEN: Counter[tuple[int, int]] = Counter()
_OPEN_LOCK = threading.Lock()
# Refusals of a value or a constraint; a damaged file is StoreDamaged; every other sqlite3 error (locked,
# I/O, no such table) is an outage.
_REFUSED = (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.InterfaceError)
_DAMAGED = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)  # result codes: a malformed page, not a database


def _damaged(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) in _DAMAGED


def _owner_only(path: Path) -> None:
    """Create the file 0600, or tighten an existing one that others could read — only when it is ours: a
    regular file that is an SQLite database (or empty: SQLite makes it one). Anything else keeps its mode:
    a directory or a symbolic link is a ConfigurationError, another file is refused by SQLite when opened
    (StoreMissing, "not an SQLite database").

    Why through a descriptor: the file is opened without following a symbolic link (O_NOFOLLOW; Linux has
    no lchmod, so `os.chmod(follow_symlinks=False)` is not there to use) and checked and changed through
    that descriptor (fstat, pread, fchmod), so the mode set is that of the very file checked: never a link's
    target (a link in the store's directory could point at any file the service's user owns), nor a file
    put in its place between the check and the change. (Settings refuse such paths first: `config._absolute_sqlite`.)"""
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, OWNER_ONLY)
    except FileExistsError:  # O_EXCL: also for a symbolic link, which is not followed
        _tighten(path)
    else:
        os.close(descriptor)


def _tighten(path: Path) -> None:
    """Make an existing store file owner-only, if it is an SQLite database or empty (`_owner_only`), and the
    write-ahead log and shared-memory index a crash left beside it (they hold the latest records)."""
    if _tighten_one(path, database=True):
        for companion in WAL_COMPANIONS:
            if os.path.lexists(f"{path}{companion}"):
                _tighten_one(Path(f"{path}{companion}"), database=False)


def _tighten_one(path: Path, database: bool) -> bool:
    """Make `path` owner-only through a descriptor that never follows a link. False when it is no SQLite
    database (`database`: the store's own file; never ours to change). ConfigurationError for a link, a
    directory, a second name of the file (a hard link: SQLite would keep a second WAL for it) or a file
    whose mode we may not change."""
    try:  # O_NONBLOCK: a FIFO must not hang the open
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigurationError(f"{AUDIT_DSN_SETTING}: {path} is a symbolic link: name the file itself") from None
        raise
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise ConfigurationError(f"{AUDIT_DSN_SETTING}: {path} is {kind}, not the store's file")
        if info.st_nlink > 1:
            raise ConfigurationError(f"{AUDIT_DSN_SETTING}: {path} {hard_links(info.st_nlink)}")
        if database and info.st_size and os.pread(descriptor, len(SQLITE_HEADER), 0) != SQLITE_HEADER:
            return False  # not a database: never ours to change; SQLite refuses to open it
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            try:
                os.fchmod(descriptor, OWNER_ONLY)
            except PermissionError:
                raise ConfigurationError(
                    f"{AUDIT_DSN_SETTING}: {path} is readable by others (mode {oct(mode)}) and belongs to another "
                    f"user (uid {info.st_uid}): it holds CPR numbers; make it the service's, mode 600"
                ) from None
            log.warning("audit store file was readable by others: made owner-only", path=str(path), was=oct(mode))
        return True
    finally:
        os.close(descriptor)


def database_file(path: Path) -> bool:
    """Whether `path` is an SQLite database's file or one of those SQLite keeps beside it (its WAL, index or
    rollback journal): what an export's `--out` must never replace (the store's records would be lost).
    Reads the file's first bytes through a descriptor: ask before this process opens the store (decision 34)."""
    for companion in (*WAL_COMPANIONS, "-journal"):
        if path.name.endswith(companion) and database_file(path.with_name(path.name.removesuffix(companion))):
            return True
    try:  # O_NONBLOCK: a FIFO must not hang the question
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        start = os.pread(descriptor, len(SQLITE_HEADER), 0)
    except OSError:
        return False
    finally:
        os.close(descriptor)
    return start == SQLITE_HEADER or start[:4] in WAL_MAGIC


def _existing(path: str) -> str:
    """The URI that opens an existing file read-write and never creates one."""
    if path == ":memory:" or not Path(path).exists():
        raise StoreMissing(f"the file {path} does not exist")
    if not Path(path).is_file():
        raise StoreMissing(f"{path} is {'a directory' if Path(path).is_dir() else 'not a regular file'}, not a file")
    if (names := os.stat(path).st_nlink) > 1:
        raise ConfigurationError(f"{AUDIT_DSN_SETTING}: {path} {hard_links(names)}")
    return f"{Path(path).resolve().as_uri()}?mode=rw"


def _check_pages(connection: sqlite3.Connection, path: str) -> None:
    """A reader's answer is only as good as the file: SQLite's quick check of every page and b-tree (a
    damaged index can make a query return too little without an error). Linear in the file's size."""
    try:
        found = [str(row[0]) for row in connection.execute("PRAGMA quick_check(5)").fetchall()]
    except sqlite3.Error as exc:
        connection.close()
        if _damaged(exc):
            raise StoreDamaged(f"audit store (SQLite) damaged: {exc}") from None
        raise Transient(f"audit store (SQLite) cannot check {path}: {exc}") from None
    if found != ["ok"]:
        connection.close()
        raise StoreDamaged(f"audit store (SQLite) damaged: {' '.join(' '.join(found).split())[:300]}")


def _identity(path: str) -> tuple[int, int] | None:
    """The file at `path` as (device, inode); None for `:memory:` or a file not there."""
    if path == ":memory:":
        return None
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _release(identity: tuple[int, int] | None) -> None:
    """One connection of this process to the file `identity` closed (`_OPEN`)."""
    if identity is None:
        return
    with _OPEN_LOCK:
        _OPEN[identity] -= 1
        if _OPEN[identity] <= 0:
            del _OPEN[identity]


def _connect(path: str, create: bool) -> tuple[sqlite3.Connection, tuple[int, int] | None]:
    """Open the file (WAL, synchronous=FULL) and count it open in this process (`_OPEN`); a reader's must
    exist and pass the quick check. Returns the connection and the file's identity (`_release` it on close)."""
    with _OPEN_LOCK:
        connection = _open_file(path, create)
        identity = _identity(path)
        if identity is not None:
            _OPEN[identity] += 1
    if not create:
        try:
            _check_pages(connection, path)
        except BaseException:
            _release(identity)
            raise
    return connection, identity


def _open_file(path: str, create: bool) -> sqlite3.Connection:
    """`_connect`'s open, under `_OPEN_LOCK`: the file tightened first unless this process has it open."""
    try:
        if create and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            if _identity(path) not in _OPEN:
                _owner_only(Path(path))
        connection = sqlite3.connect(
            path if create else _existing(path),
            isolation_level=None,
            timeout=BUSY_TIMEOUT_SECONDS,
            check_same_thread=False,
            uri=not create,
        )
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_CORRUPT:
            raise StoreDamaged(f"audit store (SQLite) damaged: {exc}") from None
        if type(exc) is sqlite3.DatabaseError:  # "file is not a database": no outage, not a store at all
            raise StoreMissing(f"{path} is not an SQLite database") from None
        raise Transient(f"audit store (SQLite) cannot open {path}: {exc}") from None
    except (OSError, sqlite3.Error) as exc:
        raise Transient(f"audit store (SQLite) cannot open {path}: {exc}") from None
    return connection


class SqliteUnitOfWork(UnitOfWork):
    """Transactions on one SQLite connection: BEGIN IMMEDIATE for a writer (the file's write lock, which
    also serialises the chain and schema changes), BEGIN for a reader."""

    def __init__(self, path: str, create: bool = True) -> None:
        self._db, self._identity = _connect(path, create)

    def schema_error(self, exc: Exception) -> bool:
        """SQLITE_ERROR is SQLite's result code for a statement the schema refuses (no such table, a
        duplicate column); outages have codes of their own (busy, locked, I/O, full, cannot open)."""
        code = getattr(exc, "sqlite_errorcode", None)
        return isinstance(exc, sqlite3.OperationalError) and code == sqlite3.SQLITE_ERROR

    def tables(self, cursor: Any) -> set[str]:
        cursor.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {str(r[0]) for r in cursor.fetchall()}

    def foreign_objects(self, cursor: Any) -> list[str]:
        cursor.execute("SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger' ORDER BY name")
        return [f"trigger {name} on {table}" for name, table in cursor.fetchall()]

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[Any]:
        cursor = self._db.cursor()
        try:
            cursor.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            yield cursor
            cursor.execute("COMMIT")
        except _REFUSED as exc:
            self._rollback()
            raise StoreRefused(f"audit store (SQLite) refused the write: {type(exc).__name__}: {exc}") from None
        except sqlite3.Error as exc:
            self._rollback()
            if _damaged(exc):
                raise StoreDamaged(f"audit store (SQLite) damaged: {exc}") from None
            raise Transient(f"audit store (SQLite): {exc}") from None
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # no transaction was open

    def close(self) -> None:
        self._db.close()
        _release(self._identity)
        self._identity = None


class SqliteAuditStore(SqlAuditStore):
    """The audit store in the SQLite file at `path` (`:memory:` for a throwaway one)."""

    def __init__(self, path: str, create: bool = True, sign: Signer | None = None) -> None:
        unit = SqliteUnitOfWork(path, create)
        try:
            super().__init__(unit, create, sign)
        except BaseException:  # a schema refused, an outage while setting it up: the connection is not kept
            unit.close()
            raise
