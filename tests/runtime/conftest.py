"""Real services for the runtime tests: a fresh PostgreSQL schema, a fresh RabbitMQ vhost."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runtime.rabbit_nodes import own_broker, pytest_configure, rabbit_cluster  # noqa: F401

PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def postgres_dsn() -> Iterator[str]:
    psycopg = pytest.importorskip("psycopg")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not running on 127.0.0.1:5432 (.ci/run starts it): {exc}")
    yield f"{PG_ADMIN_DSN}?options=-csearch_path%3D{schema}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def rabbitmqctl(*args: str) -> str:
    done = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


@pytest.fixture(scope="module")
def vhost() -> Iterator[str]:
    """A fresh vhost for the module, with the service's topology applied."""
    if shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmqctl is not installed; the broker tests need a local RabbitMQ")
    name = f"test-{uuid.uuid4().hex[:10]}"
    rabbitmqctl("add_vhost", name)
    rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    from integration.runtime.rabbitmq import BrokerSettings, apply_topology, connected

    with connected(BrokerSettings(broker_url(name))) as connection:
        apply_topology(connection.channel)
    yield name
    rabbitmqctl("delete_vhost", name)


def broker_url(vhost: str) -> str:
    return f"amqp://guest:guest@127.0.0.1:5672/{vhost}"


@pytest.fixture
def audit_dsn(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'audit.sqlite3'}"
