"""The fuzz targets' one runner: `python -m tests.fuzz.fuzz_<entry> [libFuzzer options] [corpus folders]`.

Coverage-guided by atheris (libFuzzer) over the `integration` package, which is instrumented as it is
imported. Each input goes through `harness.answer` for its entry: an input that breaks an invariant raises,
and libFuzzer saves it as a crash (`-artifact_prefix`). `make fuzz` runs every target for FUZZ_SECONDS;
tests/fuzz/test_fuzz_targets.py runs each one briefly with a fixed seed, so CI exercises them.

Findings whose fix is under way are listed in `harness.KNOWN` (each with its xfail regression test): an
input that shows one of them is not a crash, so that the fuzzer goes on looking for new ones. With
FUZZ_SURVEY=FOLDER nothing is a crash: the first input of each distinct finding is written there instead
(`<key>.input` and `<key>.txt`), for a run that collects every class at once.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _surveying(check: Callable[[bytes], Any], folder: Path) -> Callable[[bytes], None]:
    folder.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()

    def one(raw: bytes) -> None:
        try:
            check(raw)
        except Exception as exc:  # noqa: BLE001 - a survey records every finding and goes on
            what = f"{type(exc).__name__}: {re.sub(r'[0-9]+', 'N', str(exc).splitlines()[0] if str(exc) else '')[:160]}"
            key = hashlib.sha1(what.encode()).hexdigest()[:12]
            if key not in seen:
                seen.add(key)
                (folder / f"{key}.input").write_bytes(raw)
                (folder / f"{key}.txt").write_text(what + "\n", encoding="utf-8")
                print(f"\nSURVEY new finding {key}: {what}", file=sys.stderr, flush=True)

    return one


def run(name: str) -> None:
    import atheris

    with atheris.instrument_imports(include=["integration"]):
        from tests.fuzz import harness

        check = harness.checker(name)  # builds the pipeline (and imports the flows) under instrumentation
        for seed in harness.golden_seeds(harness.ENTRIES[name])[:1]:
            with harness.warming():
                check(seed)  # warm every lazy import before the first timed input

    survey = os.environ.get("FUZZ_SURVEY")
    atheris.Setup(sys.argv, _surveying(check, Path(survey)) if survey else harness.tolerating_known(check))
    atheris.Fuzz()
