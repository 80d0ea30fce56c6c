"""The fuzz targets run in CI: each one briefly, with a fixed seed and number of runs, from its committed corpus.

A short run proves the target starts, reads its corpus and keeps the harness's invariants over a few
thousand coverage-guided inputs; `make fuzz` runs them for minutes. The corpus is read, never written:
what libFuzzer finds goes to a temporary folder.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.harness import CORPUS, ENTRIES, TESTS

# Runs per target, so that each takes a few seconds (the slow engines — FHIR models, FHIRPath — get fewer).
RUNS = {
    "discharge_event": 20_000,
    "hl7_adt": 5_000,
    "advice_form": 20_000,
    "care_communication_json": 1_500,
    "care_communication_xml": 1_000,
    "closing_report": 3_000,
    "acknowledgement": 3_000,
    "validate": 400,
}


def test_every_entry_has_a_target_and_a_corpus() -> None:
    assert set(RUNS) == set(ENTRIES)
    for name in ENTRIES:
        assert (TESTS / "fuzz" / f"fuzz_{name}.py").is_file()
        assert any((CORPUS / name).iterdir()), f"no seed corpus for {name}"


@pytest.mark.parametrize("name", sorted(RUNS))
def test_fuzz_target_short_seeded_run(name: str, tmp_path: Path) -> None:
    pytest.importorskip("atheris", reason="the fuzz extra is not installed (make install installs it)")
    work = tmp_path / "corpus"
    work.mkdir()
    command = [
        sys.executable,
        "-m",
        f"tests.fuzz.fuzz_{name}",
        str(work),
        str(CORPUS / name),
        f"-runs={RUNS[name]}",
        "-seed=1",
        "-timeout=20",
        "-rss_limit_mb=2048",
        f"-artifact_prefix={tmp_path}/",
    ]
    done = subprocess.run(command, cwd=TESTS.parent, capture_output=True, text=True, timeout=300)
    tail = "\n".join(done.stderr.splitlines()[-30:])
    assert done.returncode == 0, f"fuzz target {name} found something (input saved under {tmp_path}):\n{tail}"
    assert "Done" in done.stderr, tail
