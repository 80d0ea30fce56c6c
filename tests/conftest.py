from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TextIO
from zoneinfo import ZoneInfo

import pytest

from integration.bootstrap import build_pipeline
from integration.config import PROJECT_ROOT, Settings
from integration.log import configure_logging, cpr_numbers_in
from integration.pipeline import Pipeline

SHARED = PROJECT_ROOT.parent / "shared"
GOLDEN = Path(__file__).parent / "golden"
FIXED_NOW = datetime(2026, 11, 20, 14, 30, tzinfo=ZoneInfo("Europe/Copenhagen"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", help="rewrite the expected outputs of the golden samples")


@pytest.fixture(scope="session")
def pipeline() -> Pipeline:
    return build_pipeline(Settings.from_env({}))


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


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """No CPR number in any log output of the suite: in-process logs and every consumer's log file."""
    if not hasattr(session.config, "_tmp_path_factory"):
        return
    base = session.config._tmp_path_factory.getbasetemp()  # noqa: SLF001 - pytest's own temp root
    logs = [base / SUITE_LOG, *base.rglob("*.log")]
    leaks = {str(p): found for p in logs if p.is_file() and (found := cpr_numbers_in(p.read_text(errors="replace")))}
    scanned = sum(p.stat().st_size for p in logs if p.is_file())
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(
            f"CPR scan of the suite's log output: {scanned} bytes in {len(logs)} file(s), "
            f"{sum(len(v) for v in leaks.values())} CPR number(s) found"
        )
    if leaks:
        if reporter is not None:
            for path, found in leaks.items():
                reporter.write_line(f"  CPR numbers in {path}: {', '.join(found[:5])}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
