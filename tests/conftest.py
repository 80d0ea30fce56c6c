from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from integration.bootstrap import build_pipeline
from integration.config import PROJECT_ROOT, Settings
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
