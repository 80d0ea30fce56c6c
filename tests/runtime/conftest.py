"""Real services for the runtime tests: a fresh PostgreSQL schema, a fresh RabbitMQ vhost."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.rabbit_nodes import own_broker, pytest_configure, rabbit_cluster  # noqa: F401

PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"


@contextmanager
def postgres_schema(prefix: str = "t") -> Iterator[str]:
    """A DSN on a PostgreSQL schema of the caller's own in the shared database, dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not running on 127.0.0.1:5432 (.ci/run starts it): {exc}")
    try:
        yield f"{PG_ADMIN_DSN}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def postgres_dsn() -> Iterator[str]:
    with postgres_schema() as dsn:
        yield dsn


def rabbitmqctl(*args: str) -> str:
    done = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


DEAD_LETTER_HEADERS_LOG = "dead-letter-headers.log"  # under pytest's base temp dir: scanned for CPR numbers


def _plain(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return value.decode("utf-8", "backslashreplace")
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def dump_dead_letter_headers(url: str, queues: Iterable[str], log: Path, where: str) -> int:
    """Append the headers of every message waiting in `queues` to `log`, one JSON line each; the messages
    stay where they are. Returns how many were written."""
    from integration.adapters.rabbitmq import BrokerSettings, RabbitConnection, drain

    written = 0
    connection = RabbitConnection(BrokerSettings(url))
    try:
        with log.open("a", encoding="utf-8") as out:
            for queue in queues:
                for message in drain(connection, queue, 1_000_000):
                    line = {"where": where, "queue": queue, "headers": dict(message.raw_headers)}
                    out.write(json.dumps(line, default=_plain, ensure_ascii=False) + "\n")
                    written += 1
    finally:
        connection.close()  # unacked: back to their queues
    return written


@contextmanager
def fresh_vhost(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh vhost with the service's topology applied. When it is deleted, the headers of every dead letter
    left in it go to dead-letter-headers.log, which the session's end scans for CPR numbers."""
    if shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmqctl is not installed; the broker tests need a local RabbitMQ")
    name = f"test-{uuid.uuid4().hex[:10]}"
    rabbitmqctl("add_vhost", name)
    rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    from integration.adapters.rabbitmq import BrokerSettings, connected

    with connected(BrokerSettings(broker_url(name))) as connection:
        connection.apply_topology()
    try:
        yield name
    finally:
        try:
            dead_letter_queues = [
                q for q in rabbitmqctl("list_queues", "-p", name, "name", "--silent").split() if q.endswith(".dlq")
            ]
            log = tmp_path_factory.getbasetemp() / DEAD_LETTER_HEADERS_LOG
            dump_dead_letter_headers(broker_url(name), dead_letter_queues, log, f"vhost {name}")
        finally:
            rabbitmqctl("delete_vhost", name)


@pytest.fixture(scope="module")
def vhost(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh vhost for the module (see `fresh_vhost`)."""
    with fresh_vhost(tmp_path_factory) as name:
        yield name


@pytest.fixture
def vhost_of_its_own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh vhost for one test, where a test's leftovers must not meet the next test (see `fresh_vhost`)."""
    with fresh_vhost(tmp_path_factory) as name:
        yield name


def broker_url(vhost: str) -> str:
    return f"amqp://guest:guest@127.0.0.1:5672/{vhost}"


@pytest.fixture
def audit_dsn(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'audit.sqlite3'}"
