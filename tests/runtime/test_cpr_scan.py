"""The suite's CPR scan (tests/conftest.py) reaches CLI output and dead-letter headers: a CPR number planted
in either is found. The planted files live outside pytest's base temp dir, so the real scan stays clean."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from integration.topology import DEAD_LETTER_EXCHANGE, FLOWS_BY_NAME
from tests.cli_runs import CLI_OUTPUT, _session_log, run_logged
from tests.conftest import cpr_leaks, scanned_files
from tests.runtime.broker_helpers import take_all
from tests.runtime.conftest import DEAD_LETTER_HEADERS_LOG, broker_url, dump_dead_letter_headers
from tests.support.events import TEST_CPRS

PLANTED = TEST_CPRS[0]


@pytest.fixture
def elsewhere() -> Iterator[Path]:
    """A directory outside pytest's base temp dir, standing in for it."""
    directory = Path(tempfile.mkdtemp(prefix="cpr-scan-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory)


def test_the_session_writes_both_where_the_scan_looks(tmp_path_factory: pytest.TempPathFactory) -> None:
    base = tmp_path_factory.getbasetemp()
    assert _session_log == [base / CLI_OUTPUT]
    for name in (CLI_OUTPUT, DEAD_LETTER_HEADERS_LOG):
        (base / name).touch()
        assert base / name in scanned_files(base)


def test_the_scan_finds_a_cpr_number_in_cli_output(elsewhere: Path) -> None:
    done = run_logged([sys.executable, "-c", f"print('patient {PLANTED}')"], log=elsewhere / CLI_OUTPUT, text=True)
    assert done.returncode == 0
    assert cpr_leaks(scanned_files(elsewhere)) == {str(elsewhere / CLI_OUTPUT): [PLANTED[:4] + "…"]}


def test_the_scan_finds_a_cpr_number_in_dead_letter_headers(vhost: str, elsewhere: Path) -> None:
    dlq = FLOWS_BY_NAME["discharge"].dead_letter_queue
    connection = pika.BlockingConnection(pika.URLParameters(broker_url(vhost)))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        leaky = {"x-rehab-reason": f"patient.cpr: {PLANTED} is not ours"}  # what a bug in a reason would write
        channel.basic_publish(DEAD_LETTER_EXCHANGE, "discharge", b"{}", pika.BasicProperties(headers=leaky))
    finally:
        connection.close()
    try:
        dumped = dump_dead_letter_headers(broker_url(vhost), [dlq], elsewhere / DEAD_LETTER_HEADERS_LOG, vhost)
        assert dumped == 1
        found = cpr_leaks(scanned_files(elsewhere))
        assert found == {str(elsewhere / DEAD_LETTER_HEADERS_LOG): [PLANTED[:4] + "…"]}
    finally:
        take_all(vhost, dlq)  # not left for the vhost's own dump into the real scan
