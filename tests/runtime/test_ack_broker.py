"""Acknowledgements end to end on the real broker: routed + ok, invalid → DLQ + fatal-error, a duplicate →
one processing and two identical acks; then our reply goes unacknowledged, is resent, and is acked."""

from __future__ import annotations

import copy
import json
import threading
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson

from integration.adapters.consumer import ConsumerService
from integration.adapters.rabbitmq import BrokerSettings
from integration.adapters.sql.stores import open_audit_store
from integration.bootstrap import build
from integration.config import Settings
from integration.conformance.checks import conformance_findings
from integration.flows.dispatch import Pipeline
from integration.messages.acknowledgement import acknowledgement, addressing
from integration.service.outbound import ResendPolicy, resend_unacknowledged
from integration.service.processor import RetryPolicy
from integration.topology import FLOWS_BY_NAME
from tests.runtime.broker_helpers import collector, connect, inbound_exchange, queue_depth, take_all, wait_for
from tests.runtime.conftest import broker_url
from tests.test_acknowledgements import _configured
from tests.test_care_communication import SATURDAY, _municipal_nursing_to_gp

SENDER_SOR = "328081000016004"  # the shared example's municipal home nursing


def _send(vhost: str, flow: str, message: dict[str, Any]) -> None:
    connection = connect(vhost)
    try:
        connection.publish(inbound_exchange(flow), flow, orjson.dumps(message), message["id"])
    finally:
        connection.close()


def _bodies(vhost: str, queue: str) -> list[tuple[str, dict[str, Any]]]:
    return [(m.routing_key, orjson.loads(m.body)) for m in take_all(vhost, queue)]


def _code(ack: dict[str, Any]) -> str:
    return str(ack["entry"][0]["resource"]["response"]["code"])


def test_acks_duplicates_and_resends_on_the_broker(
    vhost: str, tmp_path: Path, shared: Path, pipeline: Pipeline
) -> None:
    bundle = json.loads(_municipal_nursing_to_gp(shared).read_bytes())
    configured = _configured(pipeline, bundle)
    dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    store = open_audit_store(dsn)  # the consumer's
    ours = open_audit_store(dsn)  # this thread's: a connection is never shared between threads
    service = ConsumerService(
        BrokerSettings(broker_url(vhost)),
        [FLOWS_BY_NAME["hotline"], FLOWS_BY_NAME["acknowledgement"]],
        build(
            Settings.from_env({}),
            store=store,
            clock=lambda: SATURDAY,
            pipeline=configured,
            retry=RetryPolicy(attempts=2, seconds=1),
        ).processor_on,
    )
    acks, hotline = collector(vhost, "rehab.ack"), collector(vhost, "rehab.hotline")
    invalid = copy.deepcopy(bundle)
    invalid["id"], invalid["entry"][0]["resource"]["id"] = str(uuid.uuid4()), str(uuid.uuid4())
    for entry in invalid["entry"]:
        if entry["resource"]["resourceType"] == "Provenance":
            entry["resource"]["target"] = [{"reference": f"MessageHeader/{invalid['entry'][0]['resource']['id']}"}]
        if entry["resource"]["resourceType"] == "Patient":
            entry["resource"]["birthDate"] = "1948-13-45"
    duplicate = {**copy.deepcopy(bundle), "id": str(uuid.uuid4())}
    worker = threading.Thread(target=service.run, daemon=True)
    worker.start()
    try:
        _send(vhost, "hotline", bundle)
        wait_for(lambda: queue_depth(vhost, acks) == 1 and queue_depth(vhost, hotline) == 2, 30, "ack, forward, reply")
        _send(vhost, "hotline", invalid)
        wait_for(lambda: queue_depth(vhost, acks) == 2, 30, "the fatal-error ack")
        _send(vhost, "hotline", duplicate)
        wait_for(lambda: queue_depth(vhost, acks) == 3, 30, "the duplicate's ack")
        (dead,) = take_all(vhost, "rehab.hotline-requests.dlq")
        assert orjson.loads(dead.body)["id"] == invalid["id"]
        ((_, forward), (reply_key, reply)) = sorted(
            _bodies(vhost, hotline), key=lambda kv: kv[0] != "hotline.unmatched"
        )
        assert forward == bundle and reply_key == f"hotline.reply.{SENDER_SOR}"
        (_, ok), (_, fatal), (_, again) = _bodies(vhost, acks)
        assert _code(ok) == "ok" and _code(fatal) == "fatal-error" and _code(again) == "ok"
        outcome = next(e["resource"] for e in fatal["entry"] if e["resource"]["resourceType"] == "OperationOutcome")
        assert outcome["issue"][0]["expression"] == ["Patient.birthDate"]
        assert {k: v for k, v in ok.items() if k not in ("id", "timestamp")} == {
            k: v for k, v in again.items() if k not in ("id", "timestamp")
        }
        assert ok["id"] != again["id"]
        assert all(conformance_findings(a) == [] for a in (ok, fatal, again))
        assert queue_depth(vhost, hotline) == 0, "the duplicate was not processed again"

        # our reply gets no ack: resent after 30 minutes with a new Bundle id, then acked
        connection = connect(vhost)
        try:
            report = resend_unacknowledged(ours, connection, SATURDAY + timedelta(minutes=31), ResendPolicy())
        finally:
            connection.close()
        assert report.resent == (reply["entry"][0]["resource"]["id"],)
        ((_, resent),) = _bodies(vhost, hotline)
        assert resent["entry"] == reply["entry"] and resent["id"] != reply["id"]
        their_ack = acknowledgement(addressing(resent), "ok", [], SATURDAY, configured.referral.terminology)
        _send(vhost, "acknowledgement", their_ack)
        header = reply["entry"][0]["resource"]["id"]
        wait_for(lambda: getattr(ours.outbound(header), "state", None) == "acknowledged", 30, "the ack matched")
        assert queue_depth(vhost, acks) == 0, "an ack is never acknowledged"
    finally:
        service.stop()
        worker.join(timeout=30)
        store.close()
        ours.close()


def test_the_consumer_runs_the_resend_job_periodically_and_survives_its_failures(vhost: str, tmp_path: Path) -> None:
    from integration.errors import Transient

    calls: list[object] = []

    def job(bus: object) -> None:
        calls.append(bus)
        if len(calls) == 1:
            raise Transient("the audit store is away")

    store = open_audit_store(f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    service = ConsumerService(
        BrokerSettings(broker_url(vhost)),
        [FLOWS_BY_NAME["acknowledgement"]],
        build(Settings.from_env({}), store=store, clock=lambda: SATURDAY, handlers={}).processor_on,
        periodic=job,
        period=0.1,
    )
    worker = threading.Thread(target=service.run, daemon=True)
    worker.start()
    try:
        wait_for(lambda: len(calls) >= 3, 30, "three runs of the job")
        assert worker.is_alive()
    finally:
        service.stop()
        worker.join(timeout=30)
        store.close()


MORSO_SOR, MORSO_EAN = "435201000016003", "5790007734750"  # Morsø Kommune: our referral went to Aalborg


def _forged(referral: dict[str, Any], code: str, pipeline: Pipeline) -> dict[str, Any]:
    """Aalborg's ack of our referral, passed off as Morsø's: its sender's SOR and EAN and its source endpoint."""
    from integration.messages.acknowledgement import Issue

    issues = [] if code == "ok" else [Issue("invalid", "MSG_BAD_FORMAT", "forged", "Patient")]
    ack = acknowledgement(addressing(copy.deepcopy(referral)), code, issues, SATURDAY, pipeline.referral.terminology)
    header = ack["entry"][0]["resource"]
    sender = next(
        e["resource"] for e in ack["entry"] if f"Organization/{e['resource']['id']}" == header["sender"]["reference"]
    )
    values = {"urn:oid:1.2.208.176.1.1": MORSO_SOR, "https://www.gs1.org/gln": MORSO_EAN}
    sender["identifier"] = [{**i, "value": values.get(i["system"], i["value"])} for i in sender["identifier"]]
    header["source"]["endpoint"] = f"https://sor2.sum.dsdn.dk/#id={MORSO_SOR}"
    return ack


def test_an_ack_from_another_organisation_settles_nothing_on_the_broker(
    vhost: str, tmp_path: Path, pipeline: Pipeline
) -> None:
    """The hostile tester's case: an ack of our referral to Aalborg, sent as Morsø through the GP's exchange, ok
    and fatal-error; both are dead-lettered naming MessageHeader.sender, the referral stays awaiting its ack
    (resends go on), and Aalborg's own ack then settles it."""
    from tests.conftest import GOLDEN
    from tests.runtime.broker_helpers import publish_events

    dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    store, ours = open_audit_store(dsn), open_audit_store(dsn)
    service = ConsumerService(
        BrokerSettings(broker_url(vhost)),
        [FLOWS_BY_NAME["discharge"], FLOWS_BY_NAME["acknowledgement"]],
        build(Settings.from_env({}), store=store, clock=lambda: SATURDAY, pipeline=pipeline).processor_on,
    )
    referrals = collector(vhost, "rehab.referral")
    dlq = FLOWS_BY_NAME["acknowledgement"].dead_letter_queue
    worker = threading.Thread(target=service.run, daemon=True)
    worker.start()
    try:
        event = GOLDEN / "discharge" / "01-municipal-gop-general-sternotomy.event.json"
        publish_events(vhost, [("forged-ack-event", event.read_bytes())])
        wait_for(lambda: queue_depth(vhost, referrals) == 1, 30, "the referral")
        ((_, referral),) = _bodies(vhost, referrals)
        header = referral["entry"][0]["resource"]["id"]
        for code in ("ok", "fatal-error"):
            forged = _forged(referral, code, pipeline)
            connection = connect(vhost)
            try:
                connection.publish(
                    inbound_exchange("acknowledgement", "gp"), "acknowledgement", orjson.dumps(forged), forged["id"]
                )
            finally:
                connection.close()
        wait_for(lambda: queue_depth(vhost, dlq) == 2, 30, "both forged acks dead-lettered")
        dead = take_all(vhost, dlq)
        assert {d.raw_headers["x-rehab-reason-code"] for d in dead} == {"ack-not-from-receiver"}
        assert all(d.raw_headers["x-rehab-reason"].startswith("MessageHeader.sender: ") for d in dead)
        assert ours.outbound(header).state == "awaiting"  # type: ignore[union-attr]
        assert not [r for r in ours.records() if r.step in ("fact:ack-received", "fact:ack-duplicate")]

        genuine = acknowledgement(addressing(referral), "ok", [], SATURDAY, pipeline.referral.terminology)
        _send(vhost, "acknowledgement", genuine)
        wait_for(lambda: getattr(ours.outbound(header), "state", None) == "acknowledged", 30, "Aalborg's ack")
    finally:
        service.stop()
        worker.join(timeout=30)
        store.close()
        ours.close()


def test_a_carecommunication_with_a_script_in_its_narrative_is_refused_not_forwarded_on_the_broker(
    vhost: str, tmp_path: Path, shared: Path, pipeline: Pipeline
) -> None:
    """The hotline forwards a received CareCommunication as it is: one whose narrative holds a <script> reaches
    no department; its sender gets fatal-error naming Communication.text.div and txt-1/txt-2."""
    bundle = json.loads(_municipal_nursing_to_gp(shared).read_bytes())
    communication = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Communication")
    communication["text"]["div"] = '<div xmlns="http://www.w3.org/1999/xhtml"><script>alert(1)</script><p>x</p></div>'
    store = open_audit_store(f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    service = ConsumerService(
        BrokerSettings(broker_url(vhost)),
        [FLOWS_BY_NAME["hotline"]],
        build(
            Settings.from_env({}), store=store, clock=lambda: SATURDAY, pipeline=_configured(pipeline, bundle)
        ).processor_on,
    )
    acks, hotline = collector(vhost, "rehab.ack"), collector(vhost, "rehab.hotline")
    dlq = FLOWS_BY_NAME["hotline"].dead_letter_queue
    worker = threading.Thread(target=service.run, daemon=True)
    worker.start()
    try:
        _send(vhost, "hotline", bundle)
        wait_for(lambda: queue_depth(vhost, acks) == 1 and queue_depth(vhost, dlq) == 1, 30, "the ack, the dead letter")
    finally:
        service.stop()
        worker.join(timeout=30)
        store.close()
    assert queue_depth(vhost, hotline) == 0, "nothing forwarded"
    ((_, ack),) = _bodies(vhost, acks)
    assert _code(ack) == "fatal-error"
    outcome = next(e["resource"] for e in ack["entry"] if e["resource"]["resourceType"] == "OperationOutcome")
    (issue,) = [i for i in outcome["issue"] if i["expression"] == ["Communication.text.div"]]
    assert "(txt-1, txt-2)" in issue["details"]["text"]
    (dead,) = take_all(vhost, dlq)
    assert dead.raw_headers["x-rehab-reason"].startswith("Communication.text.div: ")
