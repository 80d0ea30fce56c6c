"""Micro-benchmark: median cost to transform one discharge event into a validated, serialised referral Bundle.

Each timed event is distinct, as in production: its own event id (so its own message ids), patient,
municipality, free-text note and times; the pathways rotate over the golden samples. The stages
are timed event by event, interleaved, so their shares and ratios are comparable.
Run: .venv/bin/python bench/transform_bench.py [--events N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout, for tests.support

from integration.bootstrap import build  # noqa: E402 - after the path is set
from integration.config import Settings  # noqa: E402 - after the path is set
from integration.conformance import r4_validator  # noqa: E402 - after the path is set
from integration.conformance.checks import assertion_findings  # noqa: E402 - after the path is set
from integration.conformance.validation import (  # noqa: E402 - after the path is set
    fhir_problems,
    messaging_problems,
    narrative_findings,
)
from integration.fhir import fhir_json  # noqa: E402 - after the path is set
from integration.flows.dispatch import transform  # noqa: E402 - after the path is set
from tests.support.events import distinct_referral_events  # noqa: E402 - after the path is set


def distinct_events(count: int) -> list[bytes]:
    return [body for _, body in distinct_referral_events(count)]


def clock(fn: Callable[[Any], Any], item: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn(item)
    return time.perf_counter() - start, result


def median_us(times: list[float]) -> float:
    return statistics.median(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=3000)
    args = parser.parse_args()
    pipeline = build(Settings.from_env()).pipeline
    unvalidated = replace(pipeline, referral=replace(pipeline.referral, validate=lambda bundle: None))
    now = datetime(2026, 11, 20, 14, 30, tzinfo=ZoneInfo("Europe/Copenhagen"))

    def end_to_end(raw: bytes) -> bytes:
        return fhir_json.dumps(transform(raw, pipeline, now).outgoing[0].message)

    def build_only(raw: bytes) -> dict[str, Any]:
        return transform(raw, unvalidated, now).outgoing[0].message

    for raw in distinct_events(300):
        end_to_end(raw)

    # The stages are measured interleaved, event by event, so that drift in the machine's speed
    # falls on all of them alike and their ratios hold.
    stage_keys = ("end", "build", "schema", "fhir", "rules", "touchstone", "narrative", "dump")
    times: dict[str, list[float]] = {k: [] for k in stage_keys}
    sizes = []
    for raw, other in zip(distinct_events(args.events), distinct_events(args.events), strict=True):
        elapsed, message = clock(end_to_end, raw)
        times["end"].append(elapsed)
        sizes.append(len(message))
        elapsed, bundle = clock(build_only, other)  # a fresh event, never validated
        times["build"].append(elapsed)
        times["schema"].append(clock(r4_validator.content_errors, bundle)[0])
        times["fhir"].append(clock(fhir_problems, bundle)[0])
        times["rules"].append(clock(messaging_problems, bundle)[0])
        times["touchstone"].append(clock(assertion_findings, bundle)[0])
        times["narrative"].append(clock(narrative_findings, bundle)[0])
        times["dump"].append(clock(fhir_json.dumps, bundle)[0])

    total = median_us(times["end"])
    print(f"events: {args.events} distinct, interleaved stages, one process, one core")
    print(
        f"end to end (decode, schema, rules, build, validate, serialise): median {total:.0f} µs, "
        f"p95 {statistics.quantiles(times['end'], n=20)[-1] * 1e6:.0f} µs, "
        f"{1 / statistics.median(times['end']):.0f} events/s"
    )
    stages = (
        ("decode, schema, rules, build (no validation)", "build"),
        ("FHIR R4 content, the generated schema (the outgoing gate)", "schema"),
        ("messaging rules", "rules"),
        ("TouchStone assertions (the outgoing gate)", "touchstone"),
        ("narrative rules txt-1/txt-2 (the outgoing gate)", "narrative"),
        ("serialisation (fhir_json, Decimal as written)", "dump"),
    )
    for label, key in stages:
        print(f"  {label}: median {median_us(times[key]):.0f} µs ({median_us(times[key]) / total:.0%} of end to end)")
    schema, fhir = median_us(times["schema"]), median_us(times["fhir"])
    print(
        f"  the same content by fhir.resources (integration validate, not on the message path): median {fhir:.0f} µs "
        f"({fhir / schema:.0f}× the schema's {schema:.1f} µs)"
    )
    print(f"end to end / without validation: {total / median_us(times['build']):.1f}×")
    print(f"bundle size: median {statistics.median(sizes):.0f} bytes")


if __name__ == "__main__":
    main()
