"""How a command ends when something is wrong: one line on stderr with a documented exit code, never a
traceback, never a CPR number — also not the one an operator typed in the wrong place, which click itself
would echo in its usage errors. Real processes (`tests/cli_runs.py`: their output goes to the CPR scan)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from integration.adapters.sql.store import StoreMissing
from integration.adapters.sql.stores import open_audit_store
from integration.cli.errors import IntegrationCommand, explain
from integration.errors import ConfigurationError, Conflict, ConnectionLost, InvalidInput, StoreDamaged, Transient
from tests.cli_runs import run_integration

CPR, DASHED, SPACED = "2512489996", "251248-9996", "251248 9996"
UNREACHABLE = "amqp://guest:guest@127.0.0.1:1/nowhere"


def clean_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
    return env | {f"INTEGRATION_{k.upper()}": v for k, v in settings.items()}


@pytest.fixture
def store_dsn(tmp_path: Path) -> str:
    dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    open_audit_store(dsn).close()  # the service's store: commands that read never create one
    return dsn


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single line on stderr, checked for what no error line may hold."""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in done.stderr
    for cpr in (CPR, DASHED, SPACED):
        assert cpr not in done.stderr and cpr not in done.stdout
    return lines[0]


@pytest.mark.parametrize(
    "args",
    [
        ("dlq", "list", "--flow", CPR),
        ("dlq", "replay", "--flow", SPACED, "--all"),
        ("dlq", "replay", "--id", "dl-abcdefghij", "--all"),  # --all would replay more than the one named
        ("transform", CPR),
        ("transform", "--state", DASHED, "-"),
        ("hotline", "pending", "--hours", CPR),
        ("outbound", "resend", "--at", CPR),
        ("outbound", "pending", "--at", DASHED),
        ("audit", "trail", "--patient", "3212489996"),  # no real birth date
        ("audit", "trail", "--patient", "251248-99961"),
        ("audit", "trail"),
        ("dlq", "list", CPR),  # an extra argument
        (CPR,),  # no such command
        ("--log-level", CPR, "dlq", "list"),
    ],
    ids=lambda a: " ".join(a).replace(CPR, "CPR"),
)
def test_a_usage_error_is_one_masked_line_and_exit_2(args: tuple[str, ...], store_dsn: str) -> None:
    done = run_integration(*args, env=clean_env(audit_dsn=store_dsn), text=True, input="", timeout=60)
    assert done.returncode == 2, done.stderr
    assert "--help" in one_error_line(done)


def test_an_unknown_log_level_names_the_levels() -> None:
    done = run_integration("--log-level", "bogus", "dlq", "list", env=clean_env(), text=True, timeout=60)
    assert done.returncode == 2 and "'bogus' is not one of 'debug', 'info'" in one_error_line(done)


@pytest.mark.parametrize("at", ["yesterday", CPR, "2026-13-01T00:00:00+01:00"])
def test_outbound_at_that_is_no_time_is_a_usage_error(at: str, store_dsn: str) -> None:
    for command in ("resend", "pending"):
        done = run_integration(
            "outbound", command, "--at", at, env=clean_env(audit_dsn=store_dsn), text=True, timeout=60
        )
        assert done.returncode == 2 and "not an ISO 8601 date and time" in one_error_line(done)


BROKER_COMMANDS = [
    ("dlq", "list"),
    ("dlq", "replay", "--all"),
    ("dlq", "refused"),
    ("topology", "apply"),
    ("outbound", "resend"),
]


@pytest.mark.parametrize(
    ("url", "exit_code", "says"),
    [
        (UNREACHABLE, 69, "broker unavailable: no connection to amqp://guest:***@127.0.0.1:1/nowhere"),
        ("amqp://guest:wrong-password@127.0.0.1:5672/%2F", 3, "the broker refused our login or vhost"),
        ("amqp://guest:guest@127.0.0.1:5672/no-such-vhost-here", 3, "vhost no-such-vhost-here not found"),
        ("http://guest:guest@127.0.0.1:15672/", 3, "is not an amqp:// or amqps:// URL"),
    ],
    ids=["unreachable", "wrong-password", "missing-vhost", "http"],
)
def test_a_broker_that_cannot_be_used_is_one_line_with_its_exit_code(
    url: str, exit_code: int, says: str, store_dsn: str
) -> None:
    for command in BROKER_COMMANDS:
        done = run_integration(*command, env=clean_env(broker_url=url, audit_dsn=store_dsn), text=True, timeout=60)
        assert done.returncode == exit_code, (command, done.stderr)
        line = one_error_line(done)
        assert says in line and "wrong-password" not in line, (command, line)


def test_run_with_a_broker_url_that_cannot_work_exits_3(store_dsn: str) -> None:
    done = run_integration(
        "run", env=clean_env(broker_url="http://x", audit_dsn=store_dsn, health_listen=""), text=True, timeout=60
    )
    assert done.returncode == 3 and "configuration: broker_url" in one_error_line(done)


def test_topology_export_to_a_place_that_cannot_be_written_is_an_io_error(tmp_path: Path) -> None:
    done = run_integration(
        "topology", "export", "--out", str(tmp_path / "missing" / "defs.json"), env=clean_env(), text=True
    )
    assert done.returncode == 74 and "No such file or directory" in one_error_line(done)


# -- the mapping itself ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigurationError("x"), 3),
        (InvalidInput("field", "bad"), 2),
        (StoreMissing("x"), 66),
        (StoreDamaged("x"), 65),
        (Transient("x"), 69),
        (Transient("x", "broker"), 69),
        (ConnectionLost("x"), 69),
        (Conflict("rehab_course", 1), 69),
        (FileNotFoundError(2, "No such file or directory", "f"), 74),
    ],
)
def test_every_expected_error_has_its_exit_code(error: Exception, code: int) -> None:
    explained = explain(error)
    assert explained is not None and explained[1] == code


def test_a_bug_is_exit_70_with_one_masked_line_and_the_traceback_in_the_log() -> None:
    @click.group(cls=IntegrationCommand)
    def group() -> None:
        pass

    @group.command()
    def broken() -> None:
        raise RuntimeError(f"a defect while reading {SPACED}")

    result = CliRunner().invoke(group, ["broken"])
    assert result.exit_code == 70
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert lines == ["error: internal error (a bug): RuntimeError: a defect while reading <cpr>"]
    assert SPACED not in result.output and SPACED not in result.stderr
