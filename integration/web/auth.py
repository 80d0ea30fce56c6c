"""The board's users, passwords, sessions' secret, CSRF tokens and the login rate limit.

Users come from the TOML file `board_users_file`: one `[[user]]` table each, with `name`, `role`
("operations": messages, queues and counts with every patient identifier masked; "clinical": the CPR number
too) and `password_hash`, an argon2 hash (`integration board hash-password` prints one). An unknown user and
a wrong password take the same path (a hash is verified either way), so the answer's time does not tell
which names exist. After `MAX_FAILURES` failed logins of one name from one client within `FAILURE_WINDOW`,
that pair is refused (429) until the oldest failure leaves the window; after `MAX_CLIENT_FAILURES` from one
client, whatever the names (trying many names with one password), that client is.

A session is signed by the secret and also known to the board's process (`Sessions`): logging out ends it
there, so a copy of the cookie taken before is worth nothing after; a restart of the board logs everyone out.

The session secret (`board_session_secret_file`) signs the session cookie (itsdangerous, through Starlette's
SessionMiddleware); it must hold at least `MIN_SECRET_BYTES` bytes.
"""

from __future__ import annotations

import secrets
import stat
import threading
import time
import tomllib
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from integration.errors import ConfigurationError

MIN_SECRET_BYTES = 32
MIN_PASSWORD = 12
MIN_DISTINCT = 5  # different characters in a password
MIN_SECRET_DISTINCT = 16  # different bytes in the session secret (48 random bytes in base64 have about 40)
MIN_HASH_BYTES = 16  # argon2 tag and salt (argon2-cffi's defaults: 32 and 16)
# The weakest argon2 parameters a users file may hold (OWASP's minimum for argon2id: 19 MiB, 2 passes).
MIN_MEMORY_KIB, MIN_TIME_COST = 19 * 1024, 2
MAX_FAILURES = 5
MAX_CLIENT_FAILURES = 100  # from one client, over every name (behind a proxy not trusted: every user's)
FAILURE_WINDOW = 15 * 60.0  # seconds
MAX_SESSIONS = 10_000  # open sessions the board keeps; the oldest is ended beyond it
MAX_NAME = 64
_HASHER = PasswordHasher()
# Verified when the name is unknown, so that an unknown name costs what a wrong password costs.
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))


class Role(StrEnum):
    """What a board user may see: `operations` sees no patient identifier, `clinical` sees the CPR number."""

    OPERATIONS = "operations"
    CLINICAL = "clinical"


@dataclass(frozen=True, slots=True)
class BoardUser:
    name: str
    role: Role
    password_hash: str


def hash_password(password: str) -> str:
    """An argon2id hash of `password` (argon2-cffi's defaults), for a `[[user]]` table's password_hash.
    ValueError for a password shorter than MIN_PASSWORD characters (these accounts see patients' data)."""
    if len(password.strip()) < MIN_PASSWORD or len(set(password)) < MIN_DISTINCT:
        raise ValueError(
            f"a password of at least {MIN_PASSWORD} characters, not blanks or one character repeated, please: "
            "these accounts see patient data"
        )
    return _HASHER.hash(password)


def load_users(path: Path | None) -> dict[str, BoardUser]:
    """The users of the file `board_users_file`, by name; ConfigurationError naming the setting when it is not
    set, unreadable, or a user is not shaped as the module's docstring says (never quoting a hash)."""
    key = "board_users_file"
    if path is None:
        raise ConfigurationError(f"{key} is not set: the board has no users (see `integration board hash-password`)")
    private(path, key)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"{key}: cannot read {path}: {type(exc).__name__}") from None
    tables = document.get("user")
    if not isinstance(tables, list) or not tables:
        raise ConfigurationError(f"{key}: {path} has no [[user]] table")
    users: dict[str, BoardUser] = {}
    for number, table in enumerate(tables, start=1):
        users_entry = _user(table, f"{key}: {path}: user {number}")
        if users_entry.name in users:
            raise ConfigurationError(f"{key}: {path}: user {number}: the name is given twice")
        users[users_entry.name] = users_entry
    return users


def _user(table: object, where: str) -> BoardUser:
    if not isinstance(table, Mapping):
        raise ConfigurationError(f"{where}: not a table")
    unknown = sorted(set(table) - {"name", "role", "password_hash"})
    if unknown:
        raise ConfigurationError(f"{where}: unknown key(s) {', '.join(unknown)}")
    name, role, hashed = table.get("name"), table.get("role"), table.get("password_hash")
    if not isinstance(name, str) or not name.isprintable() or not 0 < len(name) <= MAX_NAME or name != name.strip():
        raise ConfigurationError(f"{where}: name must be printable text of 1-{MAX_NAME} characters")
    if role not in tuple(Role):
        raise ConfigurationError(f"{where}: role must be one of {', '.join(Role)}")
    if not isinstance(hashed, str) or not hashed.startswith("$argon2id$"):
        raise ConfigurationError(f"{where}: password_hash must be an argon2id hash (integration board hash-password)")
    try:
        parameters = extract_parameters(hashed)
    except InvalidHashError:
        raise ConfigurationError(f"{where}: password_hash is not a readable argon2 hash") from None
    if (
        parameters.memory_cost < MIN_MEMORY_KIB
        or parameters.time_cost < MIN_TIME_COST
        or parameters.hash_len < MIN_HASH_BYTES
        or parameters.salt_len < MIN_HASH_BYTES
    ):
        raise ConfigurationError(
            f"{where}: password_hash is weaker than {MIN_MEMORY_KIB} KiB, {MIN_TIME_COST} passes and "
            f"{MIN_HASH_BYTES}-byte salt and tag: make it again with integration board hash-password"
        )
    return BoardUser(name, Role(role), hashed)


def private(path: Path, key: str) -> None:
    """ConfigurationError naming `key` when every user of the machine may read `path` (the session secret or the
    users' hashes: readable by the service's user, and its group at most)."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigurationError(f"{key}: cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    if mode & stat.S_IROTH:
        raise ConfigurationError(f"{key}: {path} is readable by every user: chmod o-r {path}")


def load_secret(path: Path | None) -> bytes:
    """The session secret from `board_session_secret_file` (surrounding blanks dropped); ConfigurationError
    naming the setting when unset, unreadable or shorter than MIN_SECRET_BYTES."""
    key = "board_session_secret_file"
    if path is None:
        raise ConfigurationError(f"{key} is not set: the board signs its session cookies with that secret")
    private(path, key)
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigurationError(f"{key}: cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    if len(secret) < MIN_SECRET_BYTES or len(set(secret)) < MIN_SECRET_DISTINCT:
        raise ConfigurationError(
            f"{key}: the secret in {path} must be at least {MIN_SECRET_BYTES} random bytes "
            "(head -c 48 /dev/urandom | base64)"
        )
    return secret


def check_password(users: Mapping[str, BoardUser], name: str, password: str) -> BoardUser | None:
    """The user when `name` is one and `password` is theirs, else None: an unknown name verifies a dummy hash
    (the same work as a wrong password)."""
    user = users.get(name)
    try:
        _HASHER.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    return user


class LoginLimiter:
    """Failed logins per (name, client) within a sliding window; thread-safe (the board's requests run in a
    thread pool). `clock` is seconds (time.monotonic)."""

    def __init__(
        self,
        max_failures: int = MAX_FAILURES,
        window: float = FAILURE_WINDOW,
        clock: Callable[[], float] = time.monotonic,
        max_client_failures: int = MAX_CLIENT_FAILURES,
    ) -> None:
        self._max, self._window, self._clock = max_failures, window, clock
        self._max_client = max_client_failures
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._by_client: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, table: dict[Any, deque[float]], key: Any) -> deque[float]:
        now = self._clock()
        failures = table.setdefault(key, deque())
        while failures and now - failures[0] >= self._window:
            failures.popleft()
        return failures

    def _forget_old(self) -> None:
        """Drop the keys whose failures have all left the window (so random names cannot grow the tables)."""
        now = self._clock()
        tables: tuple[dict[Any, deque[float]], ...] = (self._failures, self._by_client)
        for table in tables:
            for key in [k for k, v in table.items() if not v or now - v[-1] >= self._window]:
                del table[key]

    def blocked(self, name: str, client: str) -> bool:
        with self._lock:
            return self._blocked(name, client)

    def _blocked(self, name: str, client: str) -> bool:
        return (
            len(self._recent(self._failures, (name, client))) >= self._max
            or len(self._recent(self._by_client, client)) >= self._max_client
        )

    def attempt(self, name: str, client: str) -> bool:
        """Take an attempt: False when (name, client) or the client is blocked; else the attempt is counted as a
        failure at once (so parallel attempts cannot all pass the check before any fails) and True. A
        successful login then takes it back (`succeeded`)."""
        with self._lock:
            if self._blocked(name, client):
                return False
            self._recent(self._failures, (name, client)).append(self._clock())
            self._recent(self._by_client, client).append(self._clock())
            if len(self._failures) > 1000:
                self._forget_old()
            return True

    def failed(self, name: str, client: str) -> None:
        with self._lock:
            self._recent(self._failures, (name, client)).append(self._clock())
            self._recent(self._by_client, client).append(self._clock())
            if len(self._failures) > 1000:
                self._forget_old()

    def succeeded(self, name: str, client: str) -> None:
        """A login succeeded: the name's failures from the client are forgotten, and the attempt it took back."""
        with self._lock:
            self._failures.pop((name, client), None)
            taken = self._by_client.get(client)
            if taken:
                taken.pop()


class Sessions:
    """The sessions the board's process opened and has not ended: id → (user name, when it expires, seconds of
    `clock`). Thread-safe. A signed cookie alone is not enough: its session must still be open here."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, limit: int = MAX_SESSIONS) -> None:
        self._open: dict[str, tuple[str, float]] = {}
        self._clock, self._limit = clock, limit
        self._lock = threading.Lock()

    def open(self, user: str, seconds: float) -> str:
        """A new session of `user` for `seconds`; its id (256 bits)."""
        sid = new_token()
        with self._lock:
            now = self._clock()
            for key in [k for k, (_, ends) in self._open.items() if ends <= now]:
                del self._open[key]
            while len(self._open) >= self._limit:
                del self._open[next(iter(self._open))]  # the oldest
            self._open[sid] = (user, now + seconds)
        return sid

    def user(self, sid: object) -> str | None:
        """The user of the open session `sid`, or None (unknown, ended, expired)."""
        if not isinstance(sid, str):
            return None
        with self._lock:
            found = self._open.get(sid)
            if found is None or found[1] <= self._clock():
                return None
            return found[0]

    def end(self, sid: object) -> None:
        with self._lock:
            if isinstance(sid, str):
                self._open.pop(sid, None)


def new_token() -> str:
    """A CSRF token for a session (256 bits)."""
    return secrets.token_urlsafe(32)


def same_token(expected: object, given: object) -> bool:
    """Whether the form's CSRF token is the session's, compared in constant time; never for a missing one."""
    return (
        isinstance(expected, str)
        and isinstance(given, str)
        and bool(expected)
        and secrets.compare_digest(expected.encode(), given.encode())
    )
