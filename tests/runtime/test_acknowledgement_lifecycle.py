"""Acks, duplicates and resends through the processor, on the in-memory broker and both real audit stores."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from integration.adapters.memory import InMemoryBroker
from integration.adapters.sql.store import SqlAuditStore, StoredOutput
from integration.adapters.sql.stores import open_audit_store
from integration.bootstrap import build
from integration.config import Settings
from integration.conformance.checks import conformance_findings
from integration.flows.dispatch import Pipeline, transform
from integration.messages.acknowledgement import Issue, acknowledgement, addressing
from integration.service.audit_chain import verify
from integration.service.outbound import ResendPolicy, resend_unacknowledged
from integration.service.processor import FLOW_ATTEMPTS, Delivery, Processor, RetryPolicy
from tests.conftest import GOLDEN
from tests.support.events import distinct_referral_events
from tests.test_acknowledgements import _configured
from tests.test_care_communication import SATURDAY, _municipal_nursing_to_gp

FAST = RetryPolicy(attempts=2, seconds=1, initial_wait=0.001, max_wait=0.01)
EVENT = GOLDEN / "discharge" / "01-municipal-gop-general-sternotomy.event.json"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlAuditStore]:
    sqlite = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    dsn = sqlite if request.param == "sqlite" else request.getfixturevalue("postgres_dsn")
    opened = open_audit_store(dsn)
    yield opened  # type: ignore[misc]
    opened.close()


@pytest.fixture
def broker() -> InMemoryBroker:
    b = InMemoryBroker()
    for exchange in ("rehab.ack", "rehab.hotline", "rehab.referral"):
        b.bind(exchange, f"sink.{exchange}", "#")
    return b


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _processor(pipeline: Pipeline, store: Any, bus: Any, clock: Clock, handlers: Any = None) -> Processor:
    return build(
        Settings.from_env({}), bus=bus, store=store, clock=clock, pipeline=pipeline, handlers=handlers, retry=FAST
    ).processor


def _cc(shared: Path) -> dict[str, Any]:
    return json.loads(_municipal_nursing_to_gp(shared).read_bytes())


def _delivery(bundle: dict[str, Any], flow: str = "hotline", **extra: Any) -> Delivery:
    return Delivery(flow, orjson.dumps(bundle), bundle["id"], **extra)


def _taken(broker: InMemoryBroker, exchange: str) -> list[dict[str, Any]]:
    queue = broker.queues[f"sink.{exchange}"]
    bodies = [orjson.loads(m.body) for m in queue]
    queue.clear()
    return bodies


def _without_transmission(ack: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in ack.items() if k not in ("id", "timestamp")}


def test_processed_dead_lettered_and_duplicate_messages_are_each_acked_once_and_remembered(
    shared: Path, pipeline: Pipeline, store: SqlAuditStore, broker: InMemoryBroker
) -> None:
    bundle = _cc(shared)
    configured = _configured(pipeline, bundle)
    processor = _processor(configured, store, broker, Clock(SATURDAY))
    assert processor.process(_delivery(bundle)).disposition == "processed"
    (ack,) = _taken(broker, "rehab.ack")
    assert ack["entry"][0]["resource"]["response"]["code"] == "ok"
    forwarded_and_reply = _taken(broker, "rehab.hotline")
    assert len(forwarded_and_reply) == 2

    again = copy.deepcopy(bundle)
    again["id"] = "5f0e8d7c-6b5a-4c3d-8e2f-1a0b9c8d7e6f"  # the sender resends: new Bundle.id
    assert processor.process(_delivery(again)).disposition == "processed"
    (second,) = _taken(broker, "rehab.ack")
    assert _without_transmission(second) == _without_transmission(ack) and second["id"] != ack["id"]
    assert _taken(broker, "rehab.hotline") == [], "a duplicate is not processed again"

    header = bundle["entry"][0]["resource"]["id"]
    earlier = store.received(header)
    assert earlier is not None and earlier.bundle_ids == {bundle["id"], again["id"]} and earlier.code == "ok"
    steps = [r.step for r in store.records()]
    assert steps.count("fact:hotline-routed") == 1 and steps.count("fact:duplicate-message") == 1
    patient = next(r.patient for r in store.records() if r.step == "fact:hotline-routed")
    assert "fact:duplicate-message" in {r.step for r in store.trail(str(patient))}
    assert verify(store.records(), store.head()) is None


def test_an_invalid_message_is_dead_lettered_and_answered_fatal_error_and_a_redelivery_repeats_only_the_ack(
    shared: Path, pipeline: Pipeline, store: SqlAuditStore, broker: InMemoryBroker
) -> None:
    bundle = _cc(shared)
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "Patient":
            entry["resource"]["birthDate"] = "1948-13-45"
    processor = _processor(_configured(pipeline, bundle), store, broker, Clock(SATURDAY))
    outcome = processor.process(_delivery(bundle))
    assert outcome.disposition == "dead-lettered" and outcome.outputs == 1
    (dead,) = broker.queues["rehab.hotline-requests.dlq"]
    assert "Patient" in dead.headers["x-rehab-reason"]
    (ack,) = _taken(broker, "rehab.ack")
    outcome_resource = next(e["resource"] for e in ack["entry"] if e["resource"]["resourceType"] == "OperationOutcome")
    assert outcome_resource["issue"][0]["expression"] == ["Patient.birthDate"]
    again = processor.process(_delivery(bundle, redelivered=True))  # e.g. `integration dlq replay`
    assert again.disposition == "processed", "not dead-lettered twice: the duplicate rules answer it"
    (resent,) = _taken(broker, "rehab.ack")
    assert _without_transmission(resent) == _without_transmission(ack), "the same fatal-error, never a different answer"
    assert len(broker.queues["rehab.hotline-requests.dlq"]) == 1


def test_a_message_with_25000_errors_leaves_a_small_ack_and_small_audit_records(
    shared: Path, pipeline: Pipeline, store: SqlAuditStore, broker: InMemoryBroker
) -> None:
    """The hostile tester's 509 KB CareCommunication: a 13.9 MB ack and a 6 MB audit record before."""
    bundle = _cc(shared)
    communication = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Communication")
    communication["extension"] = [{"valueString": "x"} for _ in range(25_000)]
    processor = _processor(_configured(pipeline, bundle), store, broker, Clock(SATURDAY))
    assert processor.process(_delivery(bundle)).disposition == "dead-lettered"
    (ack,) = broker.queues["sink.rehab.ack"]
    assert len(ack.body) < 100_000
    assert max(len(orjson.dumps(r.detail)) for r in store.records()) < 50_000
    remembered = store.received(bundle["entry"][0]["resource"]["id"])
    assert remembered is not None and len(orjson.dumps(remembered.ack)) < 100_000


def test_a_gap_in_our_configuration_is_transient_error_and_a_replay_after_the_fix_is_processed(
    shared: Path, pipeline: Pipeline, store: SqlAuditStore, broker: InMemoryBroker
) -> None:
    from integration.errors import ConfigurationError

    bundle = _cc(shared)
    configured = _configured(pipeline, bundle)

    def unmapped(body: bytes, now: datetime, state: Any) -> Any:
        def lacking() -> Any:
            raise ConfigurationError("the receiving department has no hotline in mappings/hotlines.yaml")

        return configured.acknowledger.handle(orjson.loads(body), lacking, state, now)

    broken = _processor(configured, store, broker, Clock(SATURDAY), handlers={"hotline": unmapped})
    assert broken.process(_delivery(bundle)).disposition == "dead-lettered"
    (ack,) = _taken(broker, "rehab.ack")
    assert ack["entry"][0]["resource"]["response"]["code"] == "transient-error"
    fixed = _processor(configured, store, broker, Clock(SATURDAY))
    assert fixed.process(_delivery(bundle)).disposition == "processed"  # the replay, same message id
    (ok,) = _taken(broker, "rehab.ack")
    assert ok["entry"][0]["resource"]["response"]["code"] == "ok"
    assert len(_taken(broker, "rehab.hotline")) == 2


def test_two_copies_in_one_batch_are_one_message_and_one_duplicate(
    shared: Path, pipeline: Pipeline, store: SqlAuditStore, broker: InMemoryBroker
) -> None:
    bundle = _cc(shared)
    again = copy.deepcopy(bundle)
    again["id"] = "5f0e8d7c-6b5a-4c3d-8e2f-1a0b9c8d7e6f"
    processor = _processor(_configured(pipeline, bundle), store, broker, Clock(SATURDAY))
    processor.process_batch([_delivery(bundle), _delivery(again)])
    first, second = _taken(broker, "rehab.ack")
    assert _without_transmission(first) == _without_transmission(second)
    assert len(_taken(broker, "rehab.hotline")) == 2  # one forward and one reply: processed once


def _changed(bundle: dict[str, Any], bundle_id: str) -> dict[str, Any]:
    """The same MessageHeader.id in a new Bundle, with another text: a changed message resent under its old id."""
    changed = copy.deepcopy(bundle)
    changed["id"] = bundle_id
    for entry in changed["entry"]:
        if entry["resource"]["resourceType"] == "Communication":
            entry["resource"]["payload"][0]["contentString"] = "Ændret: ny tekst"
    return changed


@pytest.mark.parametrize("together", [False, True], ids=["across-batches", "in-one-batch"])
def test_a_changed_message_resent_under_its_messageheader_id_is_refused_and_dead_lettered(
    shared: Path, pipeline: Pipeline, store: SqlAuditStore, broker: InMemoryBroker, together: bool
) -> None:
    from integration.service import metrics

    bundle = _cc(shared)
    changed = _changed(bundle, "5f0e8d7c-6b5a-4c3d-8e2f-1a0b9c8d7e6f")
    processor = _processor(_configured(pipeline, bundle), store, broker, Clock(SATURDAY))
    counted = metrics.DEAD_LETTERS.labels("hotline", "reused-medcom-message-id")
    before = counted._value.get()  # noqa: SLF001 - prometheus' own counter
    if together:
        outcomes = processor.process_batch([_delivery(bundle), _delivery(changed)])
    else:
        outcomes = [processor.process(_delivery(bundle)), processor.process(_delivery(changed))]
    assert [o.disposition for o in outcomes] == ["processed", "dead-lettered"]
    assert outcomes[1].error == "reused-medcom-message-id"
    assert counted._value.get() == before + 1  # noqa: SLF001
    (dead,) = broker.queues["rehab.hotline-requests.dlq"]
    assert dead.body == orjson.dumps(changed)
    assert dead.headers["x-rehab-reason"].startswith("MessageHeader.id: already received with other content")
    ok, refused = _taken(broker, "rehab.ack")
    assert ok["entry"][0]["resource"]["response"]["code"] == "ok"
    assert refused["entry"][0]["resource"]["response"]["code"] == "fatal-error"
    (issue,) = next(e["resource"] for e in refused["entry"] if e["resource"]["resourceType"] == "OperationOutcome")[
        "issue"
    ]
    assert issue["details"]["coding"][0]["code"] == "MSG_DUPLICATE_ID" and issue["expression"] == ["MessageHeader.id"]
    assert len(_taken(broker, "rehab.hotline")) == 2, "the first only: forwarded and replied once"
    earlier = store.received(bundle["entry"][0]["resource"]["id"])
    assert earlier is not None and earlier.bundle_ids == {bundle["id"]}, "the refused one is not remembered"
    assert verify(store.records(), store.head()) is None

    unchanged = copy.deepcopy(bundle)
    unchanged["id"] = "6a1f9e8d-7c6b-4d4e-9f30-2b1c0d9e8f70"  # a true resend still gets the first ok
    assert processor.process(_delivery(unchanged)).disposition == "processed"
    (resent,) = _taken(broker, "rehab.ack")
    assert _without_transmission(resent) == _without_transmission(ok)
    assert _taken(broker, "rehab.hotline") == []


def test_a_bug_is_retried_and_on_the_last_attempt_dead_lettered_with_transient_error(
    shared: Path, pipeline: Pipeline, store: SqlAuditStore, broker: InMemoryBroker
) -> None:
    def broken(body: bytes, now: datetime, state: Any) -> Any:
        raise RuntimeError("a bug")

    bundle = _cc(shared)
    processor = _processor(pipeline, store, broker, Clock(SATURDAY), handlers={"hotline": broken})
    for _ in range(FLOW_ATTEMPTS - 1):  # the attempts are counted in the store, whatever the headers say
        early = processor.process(_delivery(bundle, headers={"x-delivery-count": 99}))
        assert early.disposition == "failed" and not early.ackable and _taken(broker, "rehab.ack") == []
    last = processor.process(_delivery(bundle))
    assert last.disposition == "dead-lettered" and last.ackable
    (ack,) = _taken(broker, "rehab.ack")
    assert ack["entry"][0]["resource"]["response"]["code"] == "transient-error"
    assert conformance_findings(ack) == []
    (dead,) = broker.queues["rehab.hotline-requests.dlq"]
    assert dead.headers["x-rehab-reason-code"] == "internal-error"
    assert store.received(bundle["entry"][0]["resource"]["id"]) is None, "a replay after the fix is processed"


def _ack_for(message: dict[str, Any], code: str, now: datetime, pipeline: Pipeline) -> dict[str, Any]:
    """The receiver's ack of one of our messages (what a municipality's system sends back)."""
    issues = [] if code == "ok" else [Issue("invalid", "MSG_BAD_FORMAT", "the receiver did not like it", "Patient")]
    return acknowledgement(addressing(message), code, issues, now, pipeline.referral.terminology)


def _referral(pipeline: Pipeline, store: SqlAuditStore, broker: InMemoryBroker, clock: Clock) -> dict[str, Any]:
    _processor(pipeline, store, broker, clock).process(Delivery("discharge", EVENT.read_bytes(), "event-1"))
    (referral,) = _taken(broker, "rehab.referral")
    return referral


def test_acks_for_our_messages_settle_them_and_are_audited(
    pipeline: Pipeline, store: SqlAuditStore, broker: InMemoryBroker
) -> None:
    clock = Clock(SATURDAY)
    referral = _referral(pipeline, store, broker, clock)
    header = referral["entry"][0]["resource"]["id"]
    assert store.outbound(header).state == "awaiting"  # type: ignore[union-attr]
    processor = _processor(pipeline, store, broker, clock)
    failed = _ack_for(referral, "fatal-error", SATURDAY, pipeline)
    assert processor.process(_delivery(failed, "acknowledgement")).disposition == "processed"
    assert store.outbound(header).state == "failed"  # type: ignore[union-attr]
    received = next(r for r in store.records() if r.step == "fact:ack-received")
    assert received.detail["code"] == "fatal-error"
    assert received.detail["issues"][0]["details"]["text"] == "the receiver did not like it"
    late_ok = _ack_for(referral, "ok", SATURDAY, pipeline)
    late_ok["id"] = "3c2b1a09-8f7e-4d6c-9b5a-493827160504"
    processor.process(_delivery(late_ok, "acknowledgement"))
    assert store.outbound(header).state == "failed", "a second ack is logged and ignored"  # type: ignore[union-attr]
    assert any(r.step == "fact:ack-duplicate" for r in store.records())
    assert _taken(broker, "rehab.ack") == [], "an ack is never acknowledged"


def test_an_ack_for_nothing_we_sent_is_dead_lettered(
    pipeline: Pipeline, store: SqlAuditStore, broker: InMemoryBroker, shared: Path
) -> None:
    stranger = _ack_for(_cc(shared), "ok", SATURDAY, pipeline)
    outcome = _processor(pipeline, store, broker, Clock(SATURDAY)).process(_delivery(stranger, "acknowledgement"))
    assert outcome.disposition == "dead-lettered"
    (dead,) = broker.queues["rehab.acknowledgements.dlq"]
    assert "is not a message we sent" in dead.headers["x-rehab-reason"]


def test_no_ack_means_two_resends_then_manual_follow_up_and_a_late_ack_still_counts(
    pipeline: Pipeline, store: SqlAuditStore, broker: InMemoryBroker
) -> None:
    clock = Clock(SATURDAY)
    referral = _referral(pipeline, store, broker, clock)
    header = referral["entry"][0]["resource"]["id"]
    policy = ResendPolicy(timedelta(minutes=30), max_resends=2)

    def tick(minutes: int) -> tuple[tuple[str, ...], tuple[str, ...], list[dict[str, Any]]]:
        report = resend_unacknowledged(store, broker, SATURDAY + timedelta(minutes=minutes), policy)
        return report.resent, report.gave_up, _taken(broker, "rehab.referral")

    assert tick(29) == ((), (), [])
    resent, gave_up, (first,) = tick(31)
    assert resent == (header,) and gave_up == ()
    assert first["entry"] == referral["entry"], "same MessageHeader id and content"
    assert first["id"] != referral["id"] and first["timestamp"] != referral["timestamp"]
    assert conformance_findings(first) == []
    assert tick(60) == ((), (), []), "30 minutes from the last send, not the first"
    _, _, (second,) = tick(62)
    assert second["id"] not in (referral["id"], first["id"])
    assert tick(93)[:2] == ((), (header,))
    assert tick(500) == ((), (), []), "flagged once, never resent again"
    (flagged,) = store.outbound_messages(["gave-up"])
    assert flagged.header_id == header and flagged.resends == 2
    steps = [r.step for r in store.records()]
    assert steps.count("outbound-resent") == 2 and steps.count("outbound-gave-up") == 1
    assert {"outbound-resent", "outbound-gave-up"} <= {r.step for r in store.trail("2512489996")}

    ok = _ack_for(referral, "ok", SATURDAY + timedelta(hours=9), pipeline)
    _processor(pipeline, store, broker, clock).process(_delivery(ok, "acknowledgement"))
    assert store.outbound(header).state == "acknowledged"  # type: ignore[union-attr]
    assert "fact:ack-received" in {r.step for r in store.trail("2512489996")}, "the patient's trail shows the ack"
    assert verify(store.records(), store.head()) is None


def test_an_acked_message_is_never_resent(pipeline: Pipeline, store: SqlAuditStore, broker: InMemoryBroker) -> None:
    clock = Clock(SATURDAY)
    referral = _referral(pipeline, store, broker, clock)
    _processor(pipeline, store, broker, clock).process(
        _delivery(_ack_for(referral, "ok", SATURDAY, pipeline), "acknowledgement")
    )
    report = resend_unacknowledged(store, broker, SATURDAY + timedelta(days=1), ResendPolicy())
    assert report.resent == () and report.gave_up == ()


def test_a_pass_reads_only_what_is_due_and_at_most_its_share(
    pipeline: Pipeline, store: SqlAuditStore, broker: InMemoryBroker
) -> None:
    """A backlog of tens of thousands awaiting their ack must not be loaded by every pass (it was: 2 GB)."""
    for minutes, (event_id, body) in zip((0, 1, 2, 50), distinct_referral_events(4), strict=True):
        (out,) = transform(body, pipeline, SATURDAY + timedelta(minutes=minutes)).outgoing
        sent = StoredOutput(
            "rehab.referral", out.route.routing_key, out.id, orjson.dumps(out.message), awaits_ack=out.id
        )
        store.record([], SATURDAY + timedelta(minutes=minutes), processed=[("discharge", event_id, "a" * 64, [sent])])
    now = SATURDAY + timedelta(minutes=40)
    assert len(store.outbound_messages(["awaiting"], now - timedelta(minutes=30))) == 3, "the fourth is not due"
    policy = ResendPolicy(per_pass=2)
    assert len(resend_unacknowledged(store, broker, now, policy).resent) == 2
    assert len(resend_unacknowledged(store, broker, now, policy).resent) == 1, "the oldest first, then the rest"
    assert len(_taken(broker, "rehab.referral")) == 3
