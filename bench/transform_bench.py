"""Micro-benchmark: median cost to transform one discharge event into a validated, serialised referral Bundle.

Each timed event is distinct (own event id, patient, municipality, pathway), so no cache can
help; the stages are timed in the same run so their shares and ratios are comparable.
Run: .venv/bin/python bench/transform_bench.py [--events N]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import uuid
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson

from integration.bootstrap import build_pipeline
from integration.config import Settings
from integration.fhir.validation import fhir_problems, forget_validated, messaging_problems
from integration.pipeline import transform

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "golden" / "discharge"
CPRS = ["2512489996", "1502779995", "0107729995", "2911829996", "3103979995", "0104909995", "0201919990", "1310169995"]
NORDJYLLAND = ["773", "787", "810", "813", "820", "825", "840", "846", "849", "851", "860"]


def distinct_events(count: int) -> list[bytes]:
    templates = [orjson.loads(p.read_bytes()) for p in sorted(GOLDEN.glob("*.event.json"))]
    templates = [t for t in templates if t["referral"]["decision"] != "none"]
    events = []
    for i in range(count):
        event = copy.deepcopy(templates[i % len(templates)])
        event["eventId"] = str(uuid.uuid4())
        event["patient"]["cpr"] = CPRS[i % len(CPRS)]
        event["patient"]["municipalityCode"] = NORDJYLLAND[i % len(NORDJYLLAND)]
        events.append(orjson.dumps(event))
    return events


def timed(fn, items) -> tuple[list[float], list]:
    times, results = [], []
    for item in items:
        start = time.perf_counter()
        results.append(fn(item))
        times.append(time.perf_counter() - start)
    return times, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=3000)
    args = parser.parse_args()
    pipeline = build_pipeline(Settings.from_env())
    now = datetime(2026, 11, 20, 14, 30, tzinfo=ZoneInfo("Europe/Copenhagen"))
    warmup, events = distinct_events(300), distinct_events(args.events)
    for raw in warmup:
        orjson.dumps(transform(raw, pipeline, now).outgoing[0].message)

    end_to_end, results = timed(lambda raw: orjson.dumps(transform(raw, pipeline, now).outgoing[0].message), events)

    # The same work without validation, on other distinct events; then validation alone on those fresh bundles.
    unvalidated = replace(pipeline, referral=replace(pipeline.referral, validate=lambda bundle: None))
    fresh = distinct_events(args.events)
    build_only, built = timed(lambda raw: transform(raw, unvalidated, now).outgoing[0].message, fresh)
    cold_times, _ = timed(lambda bundle: (forget_validated(), fhir_problems(bundle)), built[: len(built) // 4])
    fhir_times, _ = timed(fhir_problems, built)
    rule_times, _ = timed(messaging_problems, built)
    dump_times, _ = timed(orjson.dumps, built)

    def median_us(ts: list[float]) -> float:
        return statistics.median(ts) * 1e6

    total = median_us(end_to_end)
    print(f"events: {len(events)} distinct per pass, one process, one core")
    print(
        f"end to end (decode, schema, rules, build, validate, serialise): median {total:.0f} µs, "
        f"p95 {statistics.quantiles(end_to_end, n=20)[-1] * 1e6:.0f} µs, "
        f"{1 / statistics.median(end_to_end):.0f} events/s"
    )
    stages = (
        ("decode, schema, rules, build (no validation)", build_only),
        ("fhir.resources validation", fhir_times),
        ("messaging rules", rule_times),
        ("orjson serialisation", dump_times),
    )
    for label, ts in stages:
        print(f"  {label}: median {median_us(ts):.0f} µs ({median_us(ts) / total:.0%} of end to end)")
    print(
        f"  fhir.resources validation with nothing remembered: median {median_us(cold_times):.0f} µs "
        f"({median_us(cold_times) / median_us(fhir_times):.1f}× the remembering validation)"
    )
    print(f"end to end / without validation: {total / median_us(build_only):.1f}×")
    print(f"bundle size: median {statistics.median(len(r) for r in results):.0f} bytes")


if __name__ == "__main__":
    main()
