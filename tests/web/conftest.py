"""The board's fixtures: a SQLite audit store filled by the demo's real flows (in memory), its users, a client."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from integration.adapters.rabbitmq import Received
from integration.adapters.sql.store import AuditStore
from integration.adapters.sql.stores import open_audit_store
from integration.bootstrap import build
from integration.cli.demo import demo_in_memory
from integration.config import Settings
from integration.domain.course import Stage
from integration.service.pathway_watch import deadlines
from integration.web.app import Board, create_app
from integration.web.auth import BoardUser, LoginLimiter, Role, hash_password

PASSWORDS = {"olga": "operations-password-1", "carl": "clinical-password-1"}
SECRET = b"s" * 40
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class FakeBroker:
    """A broker connection's named operations the board uses, over lists: dead letters to get, what was published."""

    queues: dict[str, list[Received]] = field(default_factory=dict)
    published: list[tuple[str, str, bytes, str, Any]] = field(default_factory=list)
    user: str = "guest"
    _out: dict[int, tuple[str, Received]] = field(default_factory=dict)
    acked: list[int] = field(default_factory=list)

    def get(self, queue: str) -> Received | None:
        waiting = self.queues.get(queue, [])
        if not waiting:
            return None
        message = waiting.pop(0)
        self._out[message.delivery_tag] = (queue, message)
        return message

    def requeue(self, tag: int) -> None:
        queue, message = self._out.pop(tag)
        self.queues.setdefault(queue, []).append(message)

    def ack(self, tag: int) -> None:
        self._out.pop(tag)
        self.acked.append(tag)

    def publish(self, exchange: str, key: str, body: bytes, message_id: str, headers: Any = None, *more: Any) -> None:
        self.published.append((exchange, key, body, message_id, headers))


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A store the demo's sample messages went through (the real flows), as a DSN."""
    path = tmp_path_factory.mktemp("board") / "audit.sqlite3"
    dsn = f"sqlite:///{path}"
    store = open_audit_store(dsn)
    try:
        demo_in_memory(build(Settings.from_env({"INTEGRATION_AUDIT_DSN": dsn}), store=store), overdue=True)
    finally:
        store.close()
    return dsn


@pytest.fixture
def store_dsn(filled: str, tmp_path: Path) -> str:
    """A copy of the filled store per test (the views add records)."""
    copy = tmp_path / "audit.sqlite3"
    copy.write_bytes(Path(filled.removeprefix("sqlite:///")).read_bytes())
    return f"sqlite:///{copy}"


def patients(dsn: str) -> list[str]:
    store = open_audit_store(dsn, create=False)
    try:
        courses = {c.patient for c in store.courses_at(list(Stage))}
        return sorted(courses | {r.patient for r in store.records() if r.patient})
    finally:
        store.close()


@pytest.fixture(scope="module")
def users() -> dict[str, BoardUser]:
    return {
        "olga": BoardUser("olga", Role.OPERATIONS, hash_password(PASSWORDS["olga"])),
        "carl": BoardUser("carl", Role.CLINICAL, hash_password(PASSWORDS["carl"])),
    }


@pytest.fixture
def broker() -> FakeBroker:
    return FakeBroker()


@pytest.fixture
def board(store_dsn: str, users: dict[str, BoardUser], broker: FakeBroker) -> Board:
    settings = Settings.from_env({"INTEGRATION_AUDIT_DSN": store_dsn})

    @contextmanager
    def store() -> Iterator[AuditStore]:
        opened = open_audit_store(store_dsn, create=False)
        try:
            yield opened
        finally:
            opened.close()

    @contextmanager
    def connection() -> Iterator[Any]:
        yield broker

    return Board(settings, users, store, connection, deadlines, LoginLimiter())


@pytest.fixture
def client(board: Board) -> Iterator[TestClient]:
    with TestClient(create_app(board, SECRET, secure_cookies=False), follow_redirects=False) as c:
        yield c


def csrf_of(client: TestClient, path: str = "/login") -> str:
    found = CSRF.search(client.get(path).text)
    assert found, f"no CSRF token on {path}"
    return found.group(1)


def log_in(client: TestClient, name: str, password: str | None = None) -> Any:
    token = csrf_of(client)
    return client.post("/login", data={"name": name, "password": password or PASSWORDS[name], "csrf": token})
