"""`integration audit verify` reads the log as a stream (issue #16): the memory it takes does not grow with
the log, on both real databases. Python's allocations are traced (tracemalloc) while the command verifies a
log, then a log ten times as long; before, it held every record and every covered row in lists and dicts,
ten times as much."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest
from click.testing import CliRunner

from integration.adapters.sql.stores import open_audit_store
from integration.cli.audit import audit
from tests.support.audit_records import RECORDS_PER_EVENT, fill_log

SMALL, LARGE = 7_000, 70_000  # records; ten times as many, each event with its state rows


@pytest.fixture(params=["sqlite", "postgres"])
def dsn(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    return str(request.getfixturevalue("postgres_dsn"))


def _verify_peak(dsn: str) -> tuple[int, str]:
    """(the peak of Python's allocations while `audit verify` ran, in bytes; what it printed)."""
    tracemalloc.start()
    try:
        done = CliRunner().invoke(audit, ["verify"], env={"INTEGRATION_AUDIT_DSN": dsn, "INTEGRATION_CONFIG": ""})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert done.exit_code == 0, done.stderr
    return peak, done.stdout


def test_verify_takes_the_same_memory_for_a_log_ten_times_as_long(dsn: str) -> None:
    store = open_audit_store(dsn)
    try:
        small = fill_log(store, SMALL)
        small_peak, said = _verify_peak(dsn)
        assert f"{small + 1} records" not in said and f"{small} records" in said
        # the first verification's own record lies between the two fills
        large = small + 1 + fill_log(store, LARGE - small, first=small // RECORDS_PER_EVENT)
    finally:
        store.close()
    large_peak, said = _verify_peak(dsn)
    assert f"{large} records" in said
    # every event's processed_message, outbound_message and output_body rows compared (a Bundle of its own each)
    assert f"{3 * (large // RECORDS_PER_EVENT)} state row(s)" in said
    assert large_peak < 1.5 * small_peak + 2**20, f"{small_peak / 2**20:.1f} MiB, then {large_peak / 2**20:.1f} MiB"
    assert large_peak < 16 * 2**20
    print(f"audit verify: {small_peak / 2**20:.2f} MiB for {small} records, {large_peak / 2**20:.2f} MiB for {large}")
