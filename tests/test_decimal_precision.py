"""A measured value keeps its precision from the closing report to every byte we emit: `85.00` stays `85.00`.

FHIR decimals carry their precision (R4 Datatypes, `decimal`). The reader keeps the report's digits in a
Decimal; `fhir_json` writes them digit for digit; the processor publishes and stores those bytes; a resend
reads them back without a float in between.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from integration.adapters.memory import InMemoryBroker
from integration.adapters.sql.store import StoredOutput
from integration.adapters.sql.stores import open_audit_store
from integration.bootstrap import build
from integration.config import Settings
from integration.conformance.validation import fhir_problems
from integration.fhir import fhir_json
from integration.flows.dispatch import Pipeline, transform
from integration.service.outbound import ResendPolicy, resend_unacknowledged
from integration.service.processor import Delivery, RetryPolicy
from tests.conftest import GOLDEN

NOW = datetime.fromisoformat("2027-02-20T10:05:00+01:00")
REPORT = (GOLDEN / "closing" / "01-full-items.report.xml").read_text(encoding="utf-8")
WEIGHT = 'before="88.5" after="85.0"'


def _report(weight: str) -> bytes:
    assert WEIGHT in REPORT
    return REPORT.replace(WEIGHT, weight).encode()


def _weights(body: bytes) -> list[str]:
    """The body-weight Observation's values as the bytes write them."""
    document = body.decode()
    observation = document[document.index('"display":"Vægt"') :]
    return re.findall(r'"value":([-0-9.eE+]+)', observation[: observation.index('"resourceType"')])


@pytest.mark.parametrize(
    ("written", "published"),
    [
        ('before="88.50" after="85.00"', ["88.50", "85.00"]),
        ('before="85" after="85.0"', ["85", "85.0"]),
        ('before="+085.50" after=" 0085.000 "', ["85.50", "85.000"]),
        ('before=".5" after="5."', ["0.5", "5"]),
        ('before="0.000000000000001" after="12345678901.2340"', ["0.000000000000001", "12345678901.2340"]),
    ],
    ids=["trailing-zeros", "integer-and-one-zero", "sign-leading-zeros-spaces", "bare-points", "tiny"],
)
def test_the_document_writes_each_measured_value_with_the_reports_digits_after_the_point(
    pipeline: Pipeline, written: str, published: list[str]
) -> None:
    result = transform(_report(written), pipeline, NOW)
    document = result.outgoing[0].message
    assert fhir_problems(document) == []  # fhir.resources takes the Decimal as FHIR's decimal
    assert _weights(fhir_json.dumps(document)) == published
    narratives = fhir_json.dumps([o.message for o in result.outgoing]).decode()
    assert f"Vægt: før forløbet {published[0]} kg; efter forløbet {published[1]} kg" in narratives
    assert f"Vægt: før {published[0]}, efter {published[1]} kg" in narratives  # the GP's CareCommunication


def test_the_shared_trailing_zero_case_keeps_85_00(pipeline: Pipeline, shared: Path) -> None:
    raw = (shared / "cases" / "edge-inputs" / "03-decimal-trailing-zero.closing.xml").read_bytes()
    assert _weights(fhir_json.dumps(transform(raw, pipeline, NOW).outgoing[0].message)) == ["88.5", "85.00"]


def test_the_bytes_published_and_stored_keep_the_precision(pipeline: Pipeline, tmp_path: Path) -> None:
    broker = InMemoryBroker()
    broker.bind("rehab.status", "sink", "#")
    store = open_audit_store(f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    try:
        processor = build(
            Settings.from_env({}),
            bus=broker,
            store=store,
            clock=lambda: NOW,
            pipeline=pipeline,
            retry=RetryPolicy(attempts=2, seconds=1, initial_wait=0.001, max_wait=0.01),
        ).processor
        outcome = processor.process(Delivery("closing", _report('before="88.50" after="85.00"'), "report-1"))
        assert outcome.disposition == "processed", outcome
        published = [m.body for m in broker.queues["sink"]]
        assert _weights(published[0]) == ["88.50", "85.00"]
        stored = store.processed("closing", "report-1")  # what a redelivery republishes
        assert stored is not None and [o.body for o in stored] == published
    finally:
        store.close()


def test_a_resend_writes_the_numbers_as_first_sent(pipeline: Pipeline, tmp_path: Path) -> None:
    """A stored body read back with floats would resend 7.50 as 7.5: fhir_json.loads keeps the digits."""
    event = (GOLDEN / "discharge" / "08-exercise-test-with-results.event.json").read_bytes()
    (out,) = transform(event, pipeline, NOW).outgoing
    body = fhir_json.dumps(out.message).replace(b'"value":7.5,', b'"value":7.50,')
    assert b'"value":7.50,' in body
    store = open_audit_store(f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    broker = InMemoryBroker()
    broker.bind("rehab.referral", "sink", "#")
    try:
        sent = StoredOutput("rehab.referral", out.route.routing_key, out.id, body, awaits_ack=out.id)
        store.record([], NOW, processed=[("discharge", "event-1", "a" * 64, [sent])])
        report = resend_unacknowledged(store, broker, NOW + timedelta(hours=1), ResendPolicy(timedelta(minutes=30)))
        assert report.resent == (out.id,)
        (again,) = broker.queues["sink"]
        assert b'"value":7.50,' in again.body
    finally:
        store.close()


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("85.00", "85.00"),
        ("8.500E+1", "85.00"),
        ("1E+2", "100"),
        ("1E-15", "0.000000000000001"),
        ("-0.0", "0.0"),
        ("-1.50", "-1.50"),
    ],
)
def test_a_decimal_is_written_positionally_with_its_digits(value: str, text: str) -> None:
    assert fhir_json.decimal_text(Decimal(value)) == text
    assert fhir_json.dumps({"v": Decimal(value)}) == b'{"v":' + text.encode() + b"}"


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "sNaN"])
def test_no_decimal_that_json_cannot_hold_is_written(value: str) -> None:
    with pytest.raises(TypeError):
        fhir_json.dumps([Decimal(value)])


def test_loads_then_dumps_is_the_same_bytes() -> None:
    raw = b'{"a":[85.00,7,0.10,-3.250,1e2,{"b":null,"c":"85.00"}]}'
    assert fhir_json.dumps(fhir_json.loads(raw)) == raw.replace(b"1e2", b"100")
    assert orjson.loads(fhir_json.dumps(fhir_json.loads(raw))) == orjson.loads(raw)
