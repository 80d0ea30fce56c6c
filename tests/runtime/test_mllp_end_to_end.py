"""Issue #15's acceptance test, end to end on the real broker: an ADT^A03 sent over MLLP by a test client is
answered AA once it is on the bus, and the discharge flow's consumer (as `integration run` wires it) then sends
the same referral as the equivalent JSON event does through the same consumer; an invalid ADT is AE naming the
field; a repeated control id publishes once; an A13 after it cancels the referral at the same receiver."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from integration.adapters.consumer import ConsumerService
from integration.adapters.rabbitmq import BrokerSettings
from integration.adapters.sql.stores import open_audit_store
from integration.bootstrap import build
from integration.config import Settings
from integration.fhir import fhir_json
from integration.flows.dispatch import read_inbound
from integration.formats.adt import MappedDischarge, read_adt
from integration.formats.hl7_ack import read_header
from integration.service.hl7_intake import message_id
from integration.topology import FLOWS_BY_NAME, REFERRAL_EXCHANGE
from tests.conftest import FIXED_NOW, GOLDEN
from tests.golden_normalise import generated_ids, normalise
from tests.runtime.broker_helpers import FAST, collector, publish, take_all, wait_for
from tests.runtime.conftest import broker_url
from tests.runtime.mllp_client import CPR_FIELD, Client, adt, running, segment, settings_for

A13 = GOLDEN / "pathway" / "37-discharge-cancelled-by-hl7-a13" / "02-a13-cancels-the-discharge.er7"
JSON_TWIN = GOLDEN / "discharge" / "01-municipal-gop-general-sternotomy.event.json"
A13_RECEIVED = datetime.fromisoformat("2026-11-21T09:05:00+01:00")


class Clock:
    def __init__(self, at: datetime) -> None:
        self.now = at

    def __call__(self) -> datetime:
        return self.now


@contextmanager
def discharge_consumer(vhost: str, dsn: str, clock: Clock) -> Iterator[Any]:
    """The discharge flow's consumer as `integration run` builds it (bootstrap.build, ConsumerService) in a thread,
    on a store of its own; yields a second connection to that store for the test to read."""
    store, reader = open_audit_store(dsn), open_audit_store(dsn)
    wiring = build(Settings.from_env({}), store=store, clock=clock, retry=FAST)
    service = ConsumerService(BrokerSettings(broker_url(vhost)), [FLOWS_BY_NAME["discharge"]], wiring.processor_on)
    worker = threading.Thread(target=service.run, daemon=True)
    worker.start()
    try:
        yield reader
    finally:
        service.stop()
        worker.join(timeout=30)
        reader.close()
        store.close()


def settled(reader: Any, message: str) -> bool:
    return any(r.message_id == message and r.step in ("acked", "dead-lettered") for r in reader.records())


def json_twin(a03: bytes) -> bytes:
    """Golden event 01 given what only the ADT `a03` carries (its eventId, made of MSH-10; its episode and SKS
    procedures), as tests/test_hl7_golden.py compares them."""
    pipeline = build(Settings.from_env({})).pipeline
    er7 = read_inbound(a03, pipeline.max_payload_bytes).er7
    assert er7 is not None
    mapped = read_adt(er7, pipeline.hl7_profile, FIXED_NOW)
    assert isinstance(mapped, MappedDischarge)
    document = orjson.loads(JSON_TWIN.read_bytes())
    for key in ("eventId", "episodeOfCare", "procedures"):
        if key in mapped.document:
            document[key] = mapped.document[key]
    return fhir_json.dumps(document)


def structure(bundle: dict[str, Any]) -> Any:
    return normalise(bundle, FIXED_NOW.isoformat(timespec="seconds"), generated_ids([{"message": bundle}]))


def referral_of_the_json_event(vhost: str, dsn: str, a03: bytes) -> tuple[str, dict[str, Any]]:
    """(routing key, Bundle) the consumer sends for the JSON twin of `a03` published as a hospital does."""
    referrals = collector(vhost, REFERRAL_EXCHANGE)
    body = json_twin(a03)
    with discharge_consumer(vhost, dsn, Clock(FIXED_NOW)) as reader:
        publish(vhost, "discharge", [("json-twin-01", body)])
        wait_for(lambda: settled(reader, "json-twin-01"), 30, "the JSON event settled")
    [message] = take_all(vhost, referrals)
    return message.routing_key, orjson.loads(message.body)


def test_an_a03_over_mllp_yields_the_json_events_referral_and_an_a13_cancels_it(
    vhost: str, vhost_of_its_own: str, tmp_path: Path
) -> None:
    a03, a13 = adt("RHN-0001"), A13.read_bytes()
    expected_key, expected_bundle = referral_of_the_json_event(vhost, f"sqlite:///{tmp_path / 'json.sqlite3'}", a03)

    dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    referrals = collector(vhost_of_its_own, REFERRAL_EXCHANGE)
    clock = Clock(FIXED_NOW)
    settings = settings_for(vhost_of_its_own, dsn)
    with discharge_consumer(vhost_of_its_own, dsn, clock) as reader, running(settings, clock=clock) as listener:
        client = Client(listener.port)
        refused = client.ask(adt("RHN-BAD").replace(CPR_FIELD, b"PID|1||25124\\Q\\89996^^^CPR^NI"))
        first = client.ask(a03)
        again = client.ask(a03)
        wait_for(lambda: settled(reader, message_id_of(a03)), 30, "the A03 settled")
        sent = take_all(vhost_of_its_own, referrals)

        clock.now = A13_RECEIVED
        cancelled = client.ask(a13)
        wait_for(lambda: settled(reader, message_id_of(a13)), 30, "the A13 settled")
        revoked = take_all(vhost_of_its_own, referrals)
        steps = [(r.message_id, r.step) for r in reader.records()]

    assert segment(refused, "MSA")[1:3] == ["AE", "RHN-BAD"]
    err = segment(refused, "ERR")
    assert err[2].startswith("PID^1^3") and "PID-3" in err[8] and b"2512489996" not in refused
    assert not any(m == message_id_of(adt("RHN-BAD")) for m, step in steps if step != "hl7-received")

    assert segment(first, "MSA")[1:3] == ["AA", "RHN-0001"] and again == first  # the same ACK, byte for byte
    assert [s for m, s in steps if m == message_id_of(a03)].count("acked") == 1  # published once, consumed once
    [referral] = sent
    assert referral.routing_key == expected_key
    assert structure(orjson.loads(referral.body)) == structure(expected_bundle)

    assert segment(cancelled, "MSA")[1:3] == ["AA", "RHN-A13-0001"]
    [cancellation] = revoked
    assert cancellation.routing_key == referral.routing_key  # the same receiver
    bundle = orjson.loads(cancellation.body)
    header = bundle["entry"][0]["resource"]
    assert header["eventCoding"]["code"] == "cancel-referral"
    request = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest")
    original = next(
        e["resource"] for e in orjson.loads(referral.body)["entry"] if e["resource"]["resourceType"] == "ServiceRequest"
    )
    assert request["status"] == "revoked" and request["identifier"] == original["identifier"]


def message_id_of(raw: bytes) -> str:
    header = read_header(raw)
    assert header is not None
    return message_id(header)
