"""The message lifecycle on the in-memory broker and a real SQLite audit store (pure core plus one real adapter)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from integration.adapters.memory import InMemoryBroker
from integration.adapters.sql.sqlite import SqliteAuditStore
from integration.bootstrap import flow_handlers
from integration.errors import Transient, Unconfirmed
from integration.flows.dispatch import Pipeline
from integration.formats.adt import event_id
from integration.service.audit_chain import verify
from integration.service.processor import Delivery, Processor, RetryPolicy
from tests.conftest import FIXED_NOW, GOLDEN

EVENT = GOLDEN / "discharge" / "01-municipal-gop-general-sternotomy.event.json"
FAST = RetryPolicy(attempts=3, seconds=2, initial_wait=0.001, max_wait=0.01)


@pytest.fixture
def store(tmp_path: Path) -> SqliteAuditStore:
    return SqliteAuditStore(str(tmp_path / "audit.sqlite3"))


@pytest.fixture
def broker() -> InMemoryBroker:
    b = InMemoryBroker()
    b.bind("rehab.referral", "sink", "#")
    return b


def make(pipeline: Pipeline, store: Any, bus: Any) -> Processor:
    return Processor(flow_handlers(pipeline), store, bus, lambda: FIXED_NOW, FAST)


def delivery(body: bytes, message_id: str | None = "m-1") -> Delivery:
    return Delivery("discharge", body, message_id, content_type="application/json")


def test_processed_message_publishes_confirmed_output_and_audits_every_step(pipeline, store, broker) -> None:
    processor = make(pipeline, store, broker)
    outcome = processor.process(delivery(EVENT.read_bytes()))
    processor.acknowledged([(delivery(EVENT.read_bytes()), outcome)])
    (out,) = broker.queues["sink"]
    bundle = orjson.loads(out.body)
    assert out.message_id == bundle["entry"][0]["resource"]["id"]
    steps = [r.step for r in store.records()]
    assert steps == [
        "received",
        "validated",
        "fact:referral-built",
        "fact:course-stage",
        "transformed",
        "published",
        "acked",
    ]
    assert all(r.patient == "2512489996" for r in store.records())
    assert verify(store.records(), store.head()) is None


def test_redelivery_republishes_byte_identical_output(pipeline, store, broker) -> None:
    first = make(pipeline, store, broker)
    first.process(delivery(EVENT.read_bytes()))
    later = Processor(flow_handlers(pipeline), store, broker, lambda: FIXED_NOW.replace(hour=18), FAST)
    outcome = later.process(Delivery("discharge", EVENT.read_bytes(), "m-1", redelivered=True))
    assert outcome.disposition == "replayed-outputs"
    one, two = broker.queues["sink"]
    assert one.body == two.body and one.message_id == two.message_id


def test_without_message_id_the_body_hash_is_the_key(pipeline, store, broker) -> None:
    processor = make(pipeline, store, broker)
    processor.process(delivery(EVENT.read_bytes(), None))
    assert processor.process(delivery(EVENT.read_bytes(), None)).disposition == "replayed-outputs"


def test_invalid_input_is_dead_lettered_with_reason_and_never_raises(pipeline, store, broker) -> None:
    processor = make(pipeline, store, broker)
    bad = EVENT.read_bytes().replace(b'"851"', b'"999"')
    outcome = processor.process(delivery(bad))
    assert outcome.disposition == "dead-lettered"
    (dead,) = broker.queues["rehab.discharge-events.dlq"]
    assert dead.body == bad
    assert dead.headers["x-rehab-reason"] == "patient.municipalityCode: unknown municipality code '999'"
    assert dead.headers["x-rehab-flow"] == "discharge"
    assert dead.headers["x-rehab-reason-code"] == "invalid-input"
    assert datetime.fromisoformat(dead.headers["x-rehab-rejected-at"])
    assert dead.content_type == "application/json"
    assert [r.step for r in store.records()] == ["received", "rejected", "dead-lettered"]
    assert broker.queues["sink"] == type(broker.queues["sink"])()


def test_wrong_kind_on_a_flow_queue_is_dead_lettered(pipeline, store, broker) -> None:
    processor = make(pipeline, store, broker)
    assert processor.process(delivery(b'{"resourceType": "Bundle"}')).disposition == "dead-lettered"


class FlakyBus:
    def __init__(self, inner: InMemoryBroker, failures: int) -> None:
        self.inner, self.failures = inner, failures

    def publish(self, *args: Any, **kwargs: Any) -> None:
        if self.failures:
            self.failures -= 1
            raise Transient("broker said no")
        self.inner.publish(*args, **kwargs)

    def publish_all(self, publications: Any) -> None:
        if self.failures:
            self.failures -= 1
            raise Unconfirmed("broker said no", frozenset())
        self.inner.publish_all(publications)


def test_transient_publish_failure_is_retried(pipeline, store, broker) -> None:
    processor = make(pipeline, store, FlakyBus(broker, failures=2))
    assert processor.process(delivery(EVENT.read_bytes())).disposition == "processed"
    assert len(broker.queues["sink"]) == 1


def test_persistent_failure_raises_transient_after_bounded_retries(pipeline, store, broker) -> None:
    processor = make(pipeline, store, FlakyBus(broker, failures=100))
    with pytest.raises(Transient):
        processor.process(delivery(EVENT.read_bytes()))
    # the outputs were stored before publishing: a redelivery republishes exactly them
    outcome = make(pipeline, store, broker).process(delivery(EVENT.read_bytes()))
    assert outcome.disposition == "replayed-outputs" and len(broker.queues["sink"]) == 1


def test_no_referral_is_processed_and_audited_without_output(pipeline, store, broker) -> None:
    body = (GOLDEN / "discharge" / "07-no-referral.event.json").read_bytes()
    processor = make(pipeline, store, broker)
    assert processor.process(delivery(body)).outputs == 0
    assert [r.step for r in store.records()] == [
        "received",
        "validated",
        "fact:no-referral",
        "fact:course-stage",
        "transformed",
    ]


def test_audit_detail_never_holds_the_cpr_outside_the_patient_column(pipeline, store, broker) -> None:
    make(pipeline, store, broker).process(delivery(EVENT.read_bytes()))
    for record in store.records():
        assert "2512489996" not in json.dumps(record.detail)


def test_received_record_names_the_source_and_the_body_hash(pipeline, store, broker) -> None:
    import hashlib

    body = EVENT.read_bytes()
    make(pipeline, store, broker).process(Delivery("discharge", body, "m-9", source="rehab-hospital"))
    received = next(r for r in store.records() if r.step == "received")
    assert received.detail["source"] == "rehab-hospital"
    assert received.detail["sha256"] == hashlib.sha256(body).hexdigest()
    assert received.message_id == "m-9" and received.flow == "discharge"


def _events(n: int) -> list[tuple[str, bytes]]:
    from tests.support.events import distinct_referral_events

    return distinct_referral_events(n)


def test_a_second_copy_in_one_batch_is_settled_with_the_first(pipeline, store, broker) -> None:
    (event_id, body), (other_id, other) = _events(2)
    outcomes = make(pipeline, store, broker).process_batch(
        [delivery(body, event_id), delivery(body, event_id), delivery(other, other_id)]
    )
    assert [o.disposition for o in outcomes] == ["processed", "duplicate-in-batch", "processed"]
    assert len(broker.queues["sink"]) == 2 and not broker.queues["rehab.discharge-events.dlq"]
    assert verify(store.records(), store.head()) is None


def test_a_reused_message_id_is_refused_in_the_batch_and_across_batches(pipeline, store, broker) -> None:
    from integration.service import metrics

    before = metrics.REUSED_MESSAGE_IDS.labels("discharge")._value.get()  # noqa: SLF001 - prometheus' own counter
    (_, first), (_, second), (_, third) = _events(3)
    processor = make(pipeline, store, broker)
    together = processor.process_batch([delivery(first, "same"), delivery(second, "same")])
    assert [o.disposition for o in together] == ["processed", "dead-lettered"]
    later = processor.process(delivery(third, "same"))
    assert later.disposition == "dead-lettered" and later.error == "reused-message-id"
    assert processor.process(delivery(first, "same")).disposition == "replayed-outputs"
    dead = list(broker.queues["rehab.discharge-events.dlq"])
    assert [d.body for d in dead] == [second, third]
    assert all("'same' was already used for a message with other content" in d.headers["x-rehab-reason"] for d in dead)
    assert "first processed" in dead[1].headers["x-rehab-reason"]
    assert metrics.REUSED_MESSAGE_IDS.labels("discharge")._value.get() == before + 2  # noqa: SLF001
    codes = [r.detail.get("code") for r in store.records() if r.step == "rejected"]
    assert codes == ["reused-message-id", "reused-message-id"]


def test_one_message_id_from_two_senders_is_two_messages(pipeline, store, broker) -> None:
    """Message-ids are the sender's own numbering: a municipality's id never stands for the hospital's,
    in one batch or later; each sender's own retry is still a redelivery."""
    (_, first), (_, second), (_, third) = _events(3)

    def sent_by(sender: str, body: bytes) -> Delivery:
        return Delivery("discharge", body, "42", content_type="application/json", source=sender)

    processor = make(pipeline, store, broker)
    together = processor.process_batch([sent_by("rehab-hospital", first), sent_by("rehab-hospital-2", second)])
    assert [o.disposition for o in together] == ["processed", "processed"]
    assert processor.process(sent_by("rehab-hospital-3", third)).disposition == "processed"
    assert processor.process(sent_by("rehab-hospital-2", second)).disposition == "replayed-outputs"
    assert processor.process(sent_by("rehab-hospital", second)).error == "reused-message-id"
    assert len(broker.queues["sink"]) == 4  # three referrals and one republished


def test_a_message_processed_before_keys_were_scoped_is_still_a_redelivery(pipeline, store, broker) -> None:
    """A store written by the previous release holds the bare key: a redelivery after the upgrade is found."""
    (event_id, body), *_ = _events(1)
    make(pipeline, store, broker).process(delivery(body, event_id))  # no sender: stored under the bare key
    again = Delivery("discharge", body, event_id, redelivered=True, content_type="application/json", source="guest")
    assert make(pipeline, store, broker).process(again).disposition == "replayed-outputs"


def test_a_property_refused_by_the_adapter_is_dead_lettered_before_any_flow(pipeline, store, broker) -> None:
    outcome = make(pipeline, store, broker).process(
        Delivery("discharge", EVENT.read_bytes(), None, problem=("user-id", "missing: senders must set it"))
    )
    assert outcome.disposition == "dead-lettered" and not broker.queues["sink"]
    (dead,) = broker.queues["rehab.discharge-events.dlq"]
    assert dead.headers["x-rehab-reason"] == "user-id: missing: senders must set it"


def test_dead_letter_headers_never_hold_a_cpr_number_or_a_senders_forgery(pipeline, store, broker) -> None:
    from integration.log import cpr_numbers_in

    bad = EVENT.read_bytes().replace(b'"decision": "municipality"', b'"decision": "0101701234"')
    bad = bad.replace(b'"851"', b'"2512489996"')  # a CPR typed into the municipality field
    forged = {"x-rehab-reason": "forged", "x-death": [{"reason": "forged"}], "x-mine": "kept"}
    make(pipeline, store, broker).process(Delivery("discharge", bad, "m-cpr", headers=forged, source="guest"))
    (dead,) = broker.queues["rehab.discharge-events.dlq"]
    assert cpr_numbers_in(json.dumps(dead.headers, default=str)) == []
    assert dead.headers["x-mine"] == "kept" and "x-death" not in dead.headers
    assert dead.headers["x-rehab-reason"] != "forged"
    assert all(cpr_numbers_in(json.dumps(r.detail)) == [] for r in store.records())


class RefusingStore:
    """The real store, except that it refuses (as a constraint would) any write marking `key` processed."""

    def __init__(self, inner: Any, key: str) -> None:
        self.inner, self.key = inner, key

    def record(self, entries: Any, at: Any, processed: Any = (), *args: Any, **kwargs: Any) -> None:
        from integration.errors import StoreRefused

        if any(p[1] == self.key for p in processed):
            raise StoreRefused("audit store refused the write: IntegrityError")
        self.inner.record(entries, at, processed, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_refused_write_fails_only_its_own_delivery_and_counts_against_it(pipeline, store, broker) -> None:
    events = _events(4)
    refusing = RefusingStore(store, events[1][0])
    processor = make(pipeline, refusing, broker)
    outcomes = processor.process_batch([delivery(body, event_id) for event_id, body in events])
    assert [o.disposition for o in outcomes] == ["processed", "failed", "processed", "processed"]
    assert len(broker.queues["sink"]) == 3
    assert store.deliveries([("discharge", events[1][0])])[("discharge", events[1][0])].failures == 1


def test_a_defect_outside_the_flows_is_isolated_counted_and_finally_given_up(pipeline, store, broker) -> None:
    from integration.service.processor import FLOW_ATTEMPTS

    class Odd:  # a handler result the processor cannot take: a defect, not the sender's fault
        patient = None
        outgoing = (object(),)
        facts = ()

    (good_id, good), (bad_id, _) = _events(2)
    handlers = {
        "discharge": lambda body, now, state: (
            Odd() if body == b"odd" else flow_handlers(pipeline)["discharge"](body, now, state)
        )
    }
    processor = Processor(handlers, store, broker, lambda: FIXED_NOW, FAST)
    first = processor.process_batch([delivery(good, good_id), delivery(b"odd", bad_id)])
    assert [o.disposition for o in first] == ["processed", "failed"]
    for _ in range(FLOW_ATTEMPTS - 2):
        assert processor.process(delivery(b"odd", bad_id)).disposition == "failed"
    assert processor.process(delivery(b"odd", bad_id)).disposition == "dead-lettered"
    (dead,) = broker.queues["rehab.discharge-events.dlq"]
    assert dead.headers["x-rehab-reason-code"] == "internal-error"


def test_the_fault_hook_is_called_at_each_durable_step_in_order(pipeline, store, broker) -> None:
    points: list[str] = []
    (event_id, body), (_, bad) = _events(2)
    bad = bad.replace(b'"schemaVersion":"1"', b'"schemaVersion":"9"')
    processor = Processor(flow_handlers(pipeline), store, broker, lambda: FIXED_NOW, FAST, fault=points.append)
    processor.process_batch([delivery(body, event_id), delivery(bad, "bad")])
    assert points == ["handled", "dead-lettered", "committed", "published", "recorded"]


def test_the_store_going_away_while_a_flow_reads_its_state_is_an_outage_not_a_failure(pipeline, store, broker) -> None:
    from integration.errors import Transient

    def reads_state(body: bytes, now: datetime, state: Any) -> Any:
        state.course("2512489996")
        raise AssertionError("unreachable: the store is away")

    class Away:
        def __getattr__(self, name: str) -> Any:
            if name == "course":
                raise Transient("audit store (PostgreSQL) unavailable")
            return getattr(store, name)

    processor = Processor({"discharge": reads_state}, Away(), broker, lambda: FIXED_NOW, FAST)
    with pytest.raises(Transient):
        processor.process(delivery(EVENT.read_bytes()))
    assert store.deliveries([("discharge", "m-1")]) == {}, "no attempt was counted"


def test_a_copy_without_a_valid_property_does_not_stand_for_the_valid_message(pipeline, store, broker) -> None:
    body = EVENT.read_bytes()
    outcomes = make(pipeline, store, broker).process_batch(
        [
            Delivery("discharge", body, None, problem=("user-id", "missing")),
            Delivery("discharge", body, None, source="rehab-hospital"),
        ]
    )
    assert [o.disposition for o in outcomes] == ["dead-lettered", "processed"]
    assert len(broker.queues["sink"]) == 1


def test_a_replays_first_sender_is_believed_only_on_the_replay_exchange(pipeline, store, broker) -> None:
    from integration.adapters.consumer import delivery_of
    from integration.adapters.rabbitmq import Received
    from integration.topology import FLOWS_BY_NAME, REPLAY_EXCHANGE

    bad = EVENT.read_bytes().replace(b'"851"', b'"999"')
    claims = {"x-rehab-original-source": "rehab-hospital"}
    flow = FLOWS_BY_NAME["discharge"]
    replayed = Received(1, bad, "m-r", {}, None, False, "rehab-admin", "discharge", REPLAY_EXCHANGE, None, claims)
    forged = Received(
        2, bad, "m-f", {}, None, False, "rehab-municipality", "discharge", "rehab.inbound.municipality", None, claims
    )
    assert delivery_of(flow, replayed).original_source == "rehab-hospital"
    assert delivery_of(flow, forged).original_source is None
    make(pipeline, store, broker).process_batch([delivery_of(flow, replayed), delivery_of(flow, forged)])
    first, second = broker.queues["rehab.discharge-events.dlq"]
    assert first.headers["x-rehab-source"] == "rehab-hospital"  # a second replay still names the first sender
    assert second.headers["x-rehab-source"] == "rehab-municipality"
    received = [r for r in store.records() if r.step == "received"]
    assert received[0].detail["originalSource"] == "rehab-hospital" and "originalSource" not in received[1].detail


def test_a_retry_behind_a_reused_id_in_one_batch_is_a_redelivery(pipeline, store, broker) -> None:
    """Found by the attack on #10: the id reused for other content first, the sender's byte-identical
    retry of the processed message second, in one batch. The retry is compared with the store, not with the
    copy before it: it is a redelivery (republished once), and only the other content is refused."""
    (_, first), (_, other) = _events(2)
    processor = make(pipeline, store, broker)
    assert processor.process(delivery(first, "same")).disposition == "processed"
    outcomes = processor.process_batch([delivery(other, "same"), delivery(first, "same"), delivery(first, "same")])
    assert [o.disposition for o in outcomes] == ["dead-lettered", "replayed-outputs", "duplicate-in-batch"]
    assert [d.body for d in broker.queues["rehab.discharge-events.dlq"]] == [other]
    assert len(broker.queues["sink"]) == 2  # the referral, and its one republication
    assert verify(store.records(), store.head()) is None


def test_a_message_id_shaped_like_another_senders_scoped_key_is_not_taken_for_it(pipeline, store, broker) -> None:
    """Keys are stored as `sender/id`; a GP's id `rehab-hospital/42` must not find the hospital's `42`."""
    (_, first), (_, second) = _events(2)
    processor = make(pipeline, store, broker)
    hospital = Delivery("discharge", first, "42", content_type="application/json", source="rehab-hospital")
    mimic = Delivery("discharge", second, "rehab-hospital/42", content_type="application/json", source="rehab-gp")
    assert processor.process(hospital).disposition == "processed"
    assert processor.process(mimic).disposition == "processed"
    assert not broker.queues["rehab.discharge-events.dlq"]


# -- HL7 v2 on the bus: keyed by MSH-10 (issue #15, found by its first attack) ------------------------------
HL7 = Path(__file__).resolve().parents[1] / "hl7"
A03 = HL7 / "01-municipal-gop-general-sternotomy.a03.er7"
AFTER_THE_A13 = datetime.fromisoformat("2026-11-22T10:00:00+01:00")  # the A13 and the second A03 are dated 21 Nov


def er7(path: Path, amqp_id: str) -> Delivery:
    return Delivery("discharge", path.read_bytes(), amqp_id, content_type="x-application/hl7-v2+er7")


def test_an_er7_message_is_keyed_by_its_control_id_not_by_the_amqp_message_id(pipeline, store, broker) -> None:
    """The same A03 published again under another AMQP message-id is a redelivery (its referral republished,
    nothing built twice); another patient under that MSH-10 (an engine's counter wrapped) is a reused id,
    dead-lettered — not a second referral with the first one's Bundle and MessageHeader ids."""
    processor = make(pipeline, store, broker)
    assert processor.process(er7(A03, "amqp-1")).disposition == "processed"
    assert processor.process(er7(A03, "amqp-2")).disposition == "replayed-outputs"
    other = processor.process(er7(HL7 / "resend" / "other-patient-same-control-id.er7", "amqp-3"))
    assert other.disposition == "dead-lettered" and other.error == "reused-message-id"
    first, again = broker.queues["sink"]
    assert first.body == again.body
    assert [r.step for r in store.records()].count("fact:referral-built") == 1
    (dead,) = broker.queues["rehab.discharge-events.dlq"]
    assert "0101701234" not in dead.headers["x-rehab-reason"]


def test_an_er7_in_its_mllp_frame_on_the_bus_is_refused_naming_msh_and_the_frame(pipeline, store, broker) -> None:
    processor = make(pipeline, store, broker)
    framed = Delivery(
        "discharge", b"\x0b" + A03.read_bytes() + b"\x1c\x0d", "amqp-f", content_type="x-application/hl7-v2+er7"
    )
    outcome = processor.process(framed)
    assert outcome.disposition == "dead-lettered"
    (dead,) = broker.queues["rehab.discharge-events.dlq"]
    reason = dead.headers["x-rehab-reason"]
    assert reason.startswith("MSH") and "MLLP block characters on the bus" in reason and "JSON" not in reason


def test_an_er7_resend_changed_only_in_form_is_a_redelivery_and_the_audit_keeps_the_bodys_hash(
    pipeline, store, broker
) -> None:
    """CRLF for CR, a re-stamped MSH-7 and a trailing separator do not make a resend another message (the ER7
    content digest, integration.formats.er7_digest); the `received` record keeps each body's own SHA-256."""
    processor = make(pipeline, store, broker)
    raw = A03.read_bytes()
    resend = raw.replace(b"\r", b"\r\n").replace(b"|20261120140512|", b"|20261120150000|").replace(b"\rEVN", b"|\rEVN")
    assert processor.process(er7(A03, "amqp-1")).disposition == "processed"
    again = Delivery("discharge", resend, "amqp-2", content_type="x-application/hl7-v2+er7")
    assert processor.process(again).disposition == "replayed-outputs"
    received = [r.detail for r in store.records() if r.step == "received"]
    assert received[0]["sha256"] == hashlib.sha256(raw).hexdigest()  # the body's own hash, as before
    assert received[0]["er7ContentSha256"] != received[0]["sha256"] and received[1]["duplicate"] is True
    assert not broker.queues["rehab.discharge-events.dlq"]


def test_an_a13_resent_after_a_new_discharge_changes_nothing(pipeline, store, broker) -> None:
    """A03, A13 (cancelled), a new A03 for the visit (a new referral, ids of its own), then the A13 once more
    under a fresh AMQP message-id: it is the A13 already processed — its cancellation republished byte for byte,
    the new referral left in force (it cancelled the new one in our books while resending the old message)."""
    processor = Processor(flow_handlers(pipeline), store, broker, lambda: AFTER_THE_A13, FAST)
    cancel, again = HL7 / "resend" / "a13-cancel.er7", HL7 / "resend" / "a03-again.er7"
    outcomes = [
        processor.process(er7(A03, "amqp-1")),
        processor.process(er7(cancel, "amqp-2")),
        processor.process(er7(again, "amqp-3")),
        processor.process(er7(cancel, "amqp-4")),
    ]
    assert [o.disposition for o in outcomes] == ["processed", "processed", "processed", "replayed-outputs"]
    referral, cancellation, new_referral, resent = broker.queues["sink"]
    assert resent.body == cancellation.body and new_referral.message_id != referral.message_id
    facts = [r.step for r in store.records() if r.step.startswith("fact:referral-")]
    assert facts == ["fact:referral-built", "fact:referral-cancelled", "fact:referral-built"]
    course = store.course("2512489996")
    assert course is not None and course.current.open and course.referral is not None
    assert course.referral.event_id == event_id("A03", "RHN^1.2.208.176.1.1^ISO", "RHN-A03-9002")  # the new one


def test_a_redelivery_after_the_patients_death_sends_nothing_again(pipeline, store, broker) -> None:
    """Found by the second attack on issue #15: a hospital's discharge sent again after the patient's death was
    notified republished the referral that the death had stopped. A redelivery publishes nothing stopped or
    about a deceased patient, and says so in the audit under the patient."""
    from dataclasses import replace

    from integration.domain.course import StateChanges
    from integration.service.audit_chain import AuditEntry

    processor = make(pipeline, store, broker)
    assert processor.process(delivery(EVENT.read_bytes())).disposition == "processed"
    course = store.course("2512489996")
    assert course is not None
    died = StateChanges(courses=(replace(course, deceased=True, open=False),), stopped=("2512489996",))
    store.record(
        [AuditEntry("fact:patient-deceased", "discharge", "mors-1", patient="2512489996")], FIXED_NOW, changes=died
    )
    again = processor.process(delivery(EVENT.read_bytes()))
    assert again.disposition == "replayed-outputs" and again.outputs == 0
    assert len(broker.queues["sink"]) == 1  # only the first publication
    (withheld,) = [r for r in store.records() if r.step == "republish-withheld"]
    assert withheld.patient == "2512489996" and len(withheld.detail["outputs"]) == 1
    assert verify(store.records(), store.head()) is None


def test_a_redelivery_republishes_our_message_audited_under_its_patient(pipeline, store, broker) -> None:
    processor = make(pipeline, store, broker)
    processor.process(delivery(EVENT.read_bytes()))
    assert processor.process(delivery(EVENT.read_bytes())).disposition == "replayed-outputs"
    published = [r for r in store.records() if r.step == "published"]
    assert [r.patient for r in published] == ["2512489996", "2512489996"]


def test_acks_noted_by_one_processor_are_written_by_the_next(pipeline, store, broker) -> None:
    """The consumer makes a processor per connection: the "acked" records one noted and could not write yet are
    carried to the next, so that a reconnection loses none (the cluster tests count them)."""
    first = make(pipeline, store, broker)
    event_id, body = _events(1)[0]
    one = delivery(body, event_id)
    first.note_acknowledged([(one, first.process(one))])
    second = make(pipeline, store, broker)
    second.carry_acks(first.unrecorded_acks())
    second.flush_acknowledged()
    assert [r.message_id for r in store.records() if r.step == "acked"] == [event_id]
