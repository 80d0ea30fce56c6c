"""Benchmark: what each conformance layer costs per message, and what an ack adds to a CareCommunication.

The messages are everything the service emits for its golden samples and for MedCom's example
CareCommunications (replies, ok, fatal-error and transient-error acks). Each layer is timed message by
message, interleaved, over several rounds; medians per message are printed, then one JSON line.
Run: .venv/bin/python bench/conformance_bench.py [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time as timer
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import holidays

from integration.bootstrap import build
from integration.config import PROJECT_ROOT, Settings
from integration.conformance import r4_validator
from integration.conformance.checks import fhirpath_findings
from integration.conformance.definitions import load_definitions
from integration.conformance.profile_check import check_profiles, standard_of
from integration.conformance.resource_validation import fhir_problems
from integration.conformance.validation import document_problems, messaging_problems
from integration.domain.hotline import Hotline
from integration.domain.opening_hours import OpeningHours
from integration.flows.dispatch import Pipeline, answer_unprocessable, transform
from integration.formats.care_communication import decode_xml_bundle, parse_care_communication
from integration.messages.acknowledgement import acknowledgement, addressing

GOLDEN = PROJECT_ROOT / "tests" / "golden"
SHARED_CC = PROJECT_ROOT.parent / "shared" / "medcom" / "dk-medcom-carecommunication-testscripts" / "send"
SATURDAY = datetime(2026, 11, 28, 10, 0, tzinfo=ZoneInfo("Europe/Copenhagen"))
Message = dict[str, Any]


def _with_hotline_for(pipeline: Pipeline, sor: str) -> Pipeline:
    weekdays = OpeningHours({d: (time(8), time(15)) for d in range(5)}, frozenset(), holidays.DK().__contains__)
    hotline = Hotline(sor, "Modtagende afdeling", weekdays, "Bagvagt", "+45 11 22 33 44")
    return replace(pipeline, hotline=replace(pipeline.hotline, hotlines={sor: hotline}))


def emitted(pipeline: Pipeline) -> tuple[list[Message], list[Message]]:
    """(every message we emit for the samples, MedCom's example CareCommunications)."""
    messages: list[Message] = []
    for path in sorted((GOLDEN / "discharge").glob("*.event.json")):
        messages += [o.message for o in transform(path.read_bytes(), pipeline, SATURDAY).outgoing]
    inbound = []
    for path in sorted(SHARED_CC.glob("*")) if SHARED_CC.is_dir() else []:
        raw = path.read_bytes()
        bundle = decode_xml_bundle(raw, 10**7) if path.suffix == ".xml" else json.loads(raw)
        request = parse_care_communication(bundle, pipeline.municipality_sors)
        configured = _with_hotline_for(pipeline, request.addressed_department or "")
        messages += [o.message for o in transform(raw, configured, SATURDAY).outgoing[1:]]
        transient = answer_unprocessable(raw, configured, SATURDAY)
        messages += [o.message for o in transient.outgoing] if transient else []
        inbound.append(bundle)
    return messages, inbound


def _structure(message: Message) -> list[str]:
    return document_problems(message) if message.get("type") == "document" else messaging_problems(message)


def _profiles(message: Message) -> list[str]:
    return check_profiles(message, load_definitions(standard_of(message))).findings


def _clock(fn: Callable[[Message], Any], message: Message) -> float:
    start = timer.perf_counter()
    fn(message)
    return timer.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    pipeline = build(Settings.from_env({})).pipeline
    messages, inbound = emitted(pipeline)
    for standard in ("care-communication", "acknowledgement"):
        load_definitions(standard)  # loaded once per process; not part of the per-message cost
    layers: dict[str, Callable[[Message], Any]] = {
        "messaging rules": _structure,
        "FHIR R4 content (fhir.resources)": fhir_problems,
        "TouchStone assertions (fhirpathpy)": fhirpath_findings,
        "profile snapshots (constraints, cardinality, values, bindings, targets)": _profiles,
    }
    times: dict[str, list[float]] = {name: [] for name in layers}
    totals: list[float] = []
    schema_times: list[float] = []
    for _ in range(rounds):
        for message in messages:
            total = 0.0
            for name, layer in layers.items():
                spent = _clock(layer, message)
                times[name].append(spent)
                total += spent
            totals.append(total)
            schema_times.append(_clock(r4_validator.content_errors, message))  # the message path's, not validate's
    ack_times: dict[bool, list[float]] = {True: [], False: []}  # by the schema (the message path), fhir.resources
    terms = pipeline.referral.terminology
    content = {True: r4_validator.content_errors, False: fhir_problems}
    for _ in range(rounds * 10):
        for bundle in inbound:
            for by_schema in (False, True):
                start = timer.perf_counter()
                ack = acknowledgement(addressing(bundle), "ok", [], SATURDAY, terms)
                messaging_problems(ack) + list(content[by_schema](ack))
                ack_times[by_schema].append(timer.perf_counter() - start)
    total_ms = statistics.median(totals) * 1000
    print(f"{len(messages)} messages x {rounds} rounds; median per message:")
    for name, spent in times.items():
        ms = statistics.median(spent) * 1000
        print(f"  {name:<64} {ms:7.2f} ms  ({ms / total_ms:5.1%})")
    print(f"  {'all layers (integration validate, definitions loaded)':<64} {total_ms:7.2f} ms")
    schema_ms = statistics.median(schema_times) * 1000
    fhir_ms = statistics.median(times["FHIR R4 content (fhir.resources)"]) * 1000
    print(f"  {'FHIR R4 content by the generated schema (the message path)':<64} {schema_ms:7.3f} ms", end="")
    print(f"  ({fhir_ms / schema_ms:.0f}x faster than fhir.resources)")
    cold, warm = (statistics.median(ack_times[r]) * 1000 if ack_times[r] else 0.0 for r in (False, True))
    print(
        f"building and validating an ok ack for a CareCommunication: {warm:.2f} ms with the generated schema (as the "
        f"service does), {cold:.2f} ms with fhir.resources; median of {len(ack_times[True])}"
    )
    profile_ms = (
        statistics.median(times["profile snapshots (constraints, cardinality, values, bindings, targets)"]) * 1000
    )
    print(
        json.dumps(
            {
                "messages": len(messages),
                "all_layers_ms": round(total_ms, 2),
                "profiles_ms": round(profile_ms, 2),
                "profiles_share": round(profile_ms / total_ms, 2),
                "schema_ms": round(schema_ms, 3),
                "ack_fhir_resources_ms": round(cold, 2),
                "ack_ms": round(warm, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
