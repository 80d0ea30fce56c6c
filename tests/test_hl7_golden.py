"""An HL7 v2 ADT^A03 yields exactly the referral its equivalent JSON discharge event yields (issue #15).

Each tests/hl7/NN-*.a03.er7 says what tests/golden/discharge/NN-*.event.json says. The JSON event is given the
eventId the ER7 maps to (uuid5 of trigger, sending facility and message control id), its episodeOfCare and the SKS
procedures ADT carries and the JSON golden leaves out, so the two outputs are compared exactly.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from integration.fhir import fhir_json
from integration.flows.dispatch import Pipeline, read_inbound, transform
from integration.formats.adt import MappedDischarge, event_id, read_adt
from integration.formats.json_contract import decode_json
from tests.conftest import FIXED_NOW, GOLDEN, received_at

HL7 = Path(__file__).parent / "hl7"
PAIRS = sorted(HL7.glob("*.a03.er7"))


def _golden_event(er7: Path) -> Path:
    number = er7.name.split("-", 1)[0]
    return next((GOLDEN / "discharge").glob(f"{number}-*.event.json"))


def _mapped(raw: bytes, pipeline: Pipeline) -> MappedDischarge:
    message = read_inbound(raw, pipeline.max_payload_bytes).er7
    assert message is not None
    mapped = read_adt(message, pipeline.hl7_profile, FIXED_NOW)
    assert isinstance(mapped, MappedDischarge)
    return mapped


def _equivalent_json(er7: Path, mapped: MappedDischarge) -> dict[str, Any]:
    document: dict[str, Any] = decode_json(_golden_event(er7).read_bytes())
    for key in ("eventId", "episodeOfCare", "procedures"):
        if key in mapped.document:
            document[key] = mapped.document[key]
    return document


def _output(raw: bytes, pipeline: Pipeline, now: datetime = FIXED_NOW) -> dict[str, Any]:
    result = transform(raw, pipeline, now)
    return {
        "outgoing": [o.as_json() for o in result.outgoing],
        "facts": [{"kind": f.kind, "detail": dict(f.detail)} for f in result.facts],
    }


def test_there_are_at_least_three_er7_twins_of_golden_events() -> None:
    assert len(PAIRS) >= 3


@pytest.mark.parametrize("er7", PAIRS, ids=lambda p: p.name.removesuffix(".a03.er7"))
def test_er7_a03_yields_the_same_referral_as_its_json_event(er7: Path, pipeline: Pipeline) -> None:
    raw = er7.read_bytes()
    twin = _equivalent_json(er7, _mapped(raw, pipeline))
    now = received_at(_golden_event(er7))
    from_json = _output(fhir_json.dumps(twin), pipeline, now)
    from_er7 = _output(raw, pipeline, now)
    assert from_er7["outgoing"], "the golden event refers the patient: the ER7 must too"
    assert from_er7 == from_json


@pytest.mark.parametrize("er7", PAIRS, ids=lambda p: p.name.removesuffix(".a03.er7"))
def test_the_mapped_document_is_the_golden_event_apart_from_what_only_adt_carries(
    er7: Path, pipeline: Pipeline
) -> None:
    mapped = dict(_mapped(er7.read_bytes(), pipeline).document)
    golden = decode_json(_golden_event(er7).read_bytes())
    for key in ("eventId", "episodeOfCare", "procedures"):
        golden.pop(key, None)
        mapped.pop(key, None)
    assert _moments(mapped) == _moments(golden)  # minute-precision ER7 times are written without seconds
    assert _without_moments(mapped) == _without_moments(golden)


def _moments(document: dict[str, Any]) -> tuple[datetime, ...]:
    texts = (document["occurredAt"], document["admission"]["admittedAt"], document["admission"]["dischargedAt"])
    return tuple(datetime.fromisoformat(t) for t in texts)


def _without_moments(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k not in ("occurredAt", "admission")}


def test_a_resent_a03_is_the_same_event_and_a_discharge_sent_again_after_its_cancellation_is_not(
    pipeline: Pipeline,
) -> None:
    """HL7 v2 original mode: a sender with no ACK sends the same message (same MSH-10) again — the same event.
    A discharge sent again for the same visit after an A13 is a new message (new MSH-10): a new event, so its
    referral does not reuse the cancelled referral's MessageHeader and ServiceRequest ids."""
    raw = PAIRS[0].read_bytes()
    resent = raw.replace(b"20261120140512", b"20261120150000")  # MSH-7 may differ on a resend
    sent_again = raw.replace(b"RHN-0001", b"RHN-0999")
    first = _mapped(raw, pipeline).document["eventId"]
    assert _mapped(resent, pipeline).document["eventId"] == first
    assert _mapped(sent_again, pipeline).document["eventId"] != first
    assert first == event_id("A03", "RHN^1.2.208.176.1.1^ISO", "RHN-0001")
