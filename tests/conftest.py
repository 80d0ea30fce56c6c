from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import TextIO
from zoneinfo import ZoneInfo

import pytest

from integration.bootstrap import build
from integration.config import PROJECT_ROOT, Settings
from integration.flows.dispatch import Pipeline
from integration.log import configure_logging, cpr_numbers_in
from tests.cli_runs import CLI_OUTPUT, log_cli_output_to

SHARED = PROJECT_ROOT.parent / "shared"
GOLDEN = Path(__file__).parent / "golden"
FIXED_NOW = datetime(2026, 11, 20, 14, 30, tzinfo=ZoneInfo("Europe/Copenhagen"))
RECEIPT_DELAY = timedelta(minutes=5)


def received_at(event: Path) -> datetime:
    """When a golden discharge event (`tests/golden/discharge/*.event.json`) is received: FIXED_NOW, or five
    minutes after it occurred when that is later (a visitation talk a week after the discharge) — no event may
    report what had not happened when it arrived."""
    occurred = datetime.fromisoformat(json.loads(event.read_bytes())["occurredAt"])
    return max(FIXED_NOW, occurred + RECEIPT_DELAY)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", help="rewrite the expected outputs of the golden samples")


@pytest.fixture(scope="session")
def pipeline() -> Pipeline:
    return build(Settings.from_env({})).pipeline


@pytest.fixture
def shared() -> Path:
    """The shared reference material (MedCom examples, domain facts) beside the checkout."""
    if not SHARED.is_dir():
        pytest.skip(f"../shared is absent ({SHARED}); it holds the MedCom example messages these tests read")
    return SHARED


SUITE_LOG = "suite-log.jsonl"


@pytest.fixture(scope="session")
def _suite_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TextIO]:
    with (tmp_path_factory.getbasetemp() / SUITE_LOG).open("a", encoding="utf-8") as stream:
        yield stream


@pytest.fixture(autouse=True)
def _log_to_the_suite_log(_suite_log: TextIO) -> None:
    """Every log line of the suite goes to one file, which the session's end scans for CPR numbers."""
    configure_logging("DEBUG", _suite_log)


@pytest.fixture(scope="session", autouse=True)
def _cli_output_log(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every CLI run's stdout and stderr (tests/cli_runs.py) go to one file the session's end scans."""
    log_cli_output_to(tmp_path_factory.getbasetemp() / CLI_OUTPUT)


def scanned_files(base: Path) -> list[Path]:
    """What the CPR scan reads: the suite's log, every consumer's log file, the CLI runs' output
    (cli-output.log) and the headers of every dead letter left in a test vhost (dead-letter-headers.log)."""
    return [p for p in [base / SUITE_LOG, *sorted(base.rglob("*.log"))] if p.is_file()]


def cpr_leaks(files: list[Path]) -> dict[str, list[str]]:
    """Each file that holds CPR numbers, with them (masked)."""
    return {str(p): found for p in files if (found := cpr_numbers_in(p.read_text(errors="replace")))}


# The modules that take longest, longest first (measured with `make test`, 2026-12-02): run first, so that on several
# workers (pytest-xdist, --dist loadfile: a module stays on one worker) they overlap with the many short ones instead
# of running alone at the end. Only the wall time depends on this list; a module missing from it runs after these.
LONGEST_FIRST = (
    "tests/runtime/test_faults.py",
    "tests/runtime/test_database_outages.py",
    "tests/runtime/test_cluster.py",
    "tests/fuzz/test_fuzz_targets.py",
    "tests/test_parser_properties.py",
    "tests/test_validate_cli.py",
    "tests/runtime/test_mllp_listener.py",
    "tests/runtime/test_consumer_states.py",
    "tests/test_cli_errors.py",
    "tests/runtime/test_pathway_broker.py",
    "tests/runtime/test_sender_authorisation.py",
    "tests/runtime/test_dlq_trust.py",
    "tests/runtime/test_competing_consumers.py",
    "tests/runtime/test_fixtures_selftest.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest modules first (`LONGEST_FIRST`), the rest in their usual order (a stable sort)."""
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """No CPR number in any output of the suite: in-process logs, every consumer's log file, CLI output and
    dead-letter headers."""
    if not hasattr(session.config, "_tmp_path_factory") or hasattr(session.config, "workerinput"):
        return  # an xdist worker: the controller scans its workers' directories (under its own) at the end
    base = session.config._tmp_path_factory.getbasetemp()  # noqa: SLF001 - pytest's own temp root
    logs = scanned_files(base)
    leaks = cpr_leaks(logs)
    scanned = sum(p.stat().st_size for p in logs)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(
            f"CPR scan of the suite's log output, CLI output and dead-letter headers: {scanned} bytes in "
            f"{len(logs)} file(s), {sum(len(v) for v in leaks.values())} CPR number(s) found"
        )
    if leaks:
        if reporter is not None:
            for path, found in leaks.items():
                reporter.write_line(f"  CPR numbers in {path}: {', '.join(found[:5])}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def golden_discharge() -> bytes:
    """A discharge event that refers its patient (2512489996) to the municipality (pathway scenario 10)."""
    return (
        GOLDEN / "pathway" / "10-municipal-course-closed-at-the-hospital" / "01-discharge-control-at-end.json"
    ).read_bytes()
