"""The consumer's start (issue #16's latency): the shipped sample inputs run through the pipeline once before the
first real message, so that it does not pay for the validator's compilation and the FHIRPath rules' parsing
(about 100 ms for the first referral), and what start-up made is kept out of the garbage collector's full
collections (each walked it: tens of milliseconds)."""

from __future__ import annotations

import gc
from datetime import datetime
from pathlib import Path

import pytest
import structlog

from integration.bootstrap import WARM_UP_SAMPLES, build, freeze_long_lived, warm_up
from integration.config import Settings
from integration.conformance import profile_check, r4_validator
from integration.flows.dispatch import Pipeline, transform
from tests.support.events import distinct_referral_events

NOW = datetime.fromisoformat("2026-11-30T10:00:00+01:00")


@pytest.fixture
def pipeline() -> Pipeline:
    return build(Settings.from_env({})).pipeline


def test_the_warm_up_runs_every_shipped_sample_and_compiles_what_the_first_message_would(pipeline: Pipeline) -> None:
    r4_validator._compiled.cache_clear()
    profile_check.compiled_fhirpath.cache_clear()
    with structlog.testing.capture_logs() as logs:
        ran = warm_up(pipeline, lambda: NOW)
    assert ran == len([p for p in WARM_UP_SAMPLES.glob("*/*") if p.is_file()]) >= 20
    assert r4_validator._compiled.cache_info().currsize == 1
    assert profile_check.compiled_fhirpath.cache_info().currsize > 0
    (said,) = [e for e in logs if e["event"] == "warmed up"]
    assert said["samples"] == ran and said["failed"] == [] and said["log_level"] == "info"
    parsed = profile_check.compiled_fhirpath.cache_info().misses
    _, body = distinct_referral_events(1)[0]
    transform(body, pipeline, NOW, "discharge")
    assert profile_check.compiled_fhirpath.cache_info().misses == parsed, "the first referral parsed a rule"


def test_a_sample_that_fails_is_skipped_and_never_stops_the_start(pipeline: Pipeline, tmp_path: Path) -> None:
    (tmp_path / "discharge").mkdir()
    (tmp_path / "discharge" / "broken.event.json").write_bytes(b'{"eventType": "discharge", "patient": ')
    (tmp_path / "discharge" / "binary.bin").write_bytes(b"\x00\xff" * 10)
    with structlog.testing.capture_logs() as logs:
        assert warm_up(pipeline, lambda: NOW, samples=tmp_path) == 2
    (said,) = [e for e in logs if e["event"] == "warmed up"]
    assert said["failed"] == ["binary.bin", "broken.event.json"]  # it said 2 samples as if both had run


def test_what_start_up_made_is_kept_out_of_full_collections() -> None:
    before = gc.get_freeze_count()
    try:
        freeze_long_lived()
        assert gc.get_freeze_count() > before
    finally:
        gc.unfreeze()
