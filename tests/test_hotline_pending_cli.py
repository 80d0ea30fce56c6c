"""`integration hotline pending` counts opening hours in Europe/Copenhagen (issue 11, point 10), as of --at;
--at and --hours that make no sense are usage errors (one line, exit 2)."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import pytest

from integration.adapters.sql.stores import open_audit_store
from integration.domain.course import OpenRequest, StateChanges
from tests.cli_runs import run_integration

AALBORG = "715541000016001"
FRIDAY_BEFORE_OCTOBER_CHANGE = datetime.fromisoformat("2026-10-23T14:00:00+02:00")
MONDAY_AFTER = "2026-10-26T14:30:00+01:00"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    store = open_audit_store(dsn)
    request = OpenRequest("r-friday", None, "434751000016002", AALBORG, "2512489996")
    store.record([], FRIDAY_BEFORE_OCTOBER_CHANGE, changes=StateChanges(opened=(request,)))
    store.close()
    return {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")} | {"INTEGRATION_AUDIT_DSN": dsn}


def test_friday_to_monday_across_the_october_change_is_seven_and_a_half_opening_hours(env: dict[str, str]) -> None:
    done = run_integration("hotline", "pending", "--at", MONDAY_AFTER, env=env, timeout=60, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("0 unanswered request(s) older than 8 opening hour(s) as of 2026-10-26T14:30+01:00")
    done = run_integration("hotline", "pending", "--at", MONDAY_AFTER, "--hours", "7", env=env, timeout=60, text=True)
    assert done.returncode == 0, done.stderr
    (line,) = [line for line in done.stdout.splitlines() if "r-friday" in line]
    assert "received 2026-10-23T14:00+02:00  7.5 h  to 715541000016001" in line
    assert "2512489996" not in done.stdout + done.stderr


def test_the_same_moment_written_with_any_offset_counts_the_same(env: dict[str, str]) -> None:
    for moment in ("2026-10-26T13:30:00Z", "2026-10-26T15:30:00+02:00"):
        done = run_integration("hotline", "pending", "--at", moment, "--hours", "7", env=env, timeout=60, text=True)
        assert done.returncode == 0 and "7.5 h" in done.stdout, done.stdout + done.stderr


def test_a_future_moment_lists_without_auditing(env: dict[str, str]) -> None:
    done = run_integration("hotline", "pending", "--at", "2099-01-05T10:00:00+01:00", env=env, timeout=60, text=True)
    assert done.returncode == 0 and "r-friday" in done.stdout
    assert "nothing was audited as overdue" in done.stdout
    store = open_audit_store(env["INTEGRATION_AUDIT_DSN"])
    try:
        assert not [r for r in store.records() if r.step == "hotline-overdue"]
        assert not store.open_requests()[0].overdue_noted
    finally:
        store.close()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--at", "yesterday"), "not an ISO 8601 date and time"),
        (("--at", "2026-13-01T00:00:00+01:00"), "not an ISO 8601 date and time"),
        (("--at", "2026-10-26T14:30:00"), "needs a time zone"),
        (("--at", "2512489996"), "not an ISO 8601 date and time"),
        (("--hours", "0"), "--hours"),
        (("--hours", "-3"), "--hours"),
        (("--hours", "1.5"), "--hours"),
    ],
)
def test_a_bad_at_or_hours_is_one_line_and_exit_2(env: dict[str, str], args: tuple[str, ...], says: str) -> None:
    done = run_integration("hotline", "pending", *args, env=env, timeout=60, text=True)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == "" and len(done.stderr.splitlines()) == 1 and says in done.stderr
    assert "Traceback" not in done.stderr and "2512489996" not in done.stderr
