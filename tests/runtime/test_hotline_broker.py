"""The hotline flow end to end on the real broker: a referral opens the course, advice requests are routed."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import orjson

from integration.adapters.consumer import ConsumerService
from integration.adapters.rabbitmq import BrokerSettings
from integration.adapters.sql.stores import open_audit_store
from integration.bootstrap import build
from integration.config import Settings
from integration.service.processor import RetryPolicy
from integration.topology import FLOWS_BY_NAME
from tests.conftest import FIXED_NOW, GOLDEN
from tests.runtime.broker_helpers import collector, connect, inbound_exchange, queue_depth, take_all, wait_for
from tests.runtime.conftest import broker_url

AALBORG = "715541000016001"


def _publish(vhost: str, key: str, body: bytes, message_id: str) -> None:
    connection = connect(vhost)
    try:
        connection.publish(inbound_exchange(key), key, body, message_id, content_type="application/json")
    finally:
        connection.close()


def test_referral_opens_the_course_and_an_acute_request_reaches_on_call(vhost: str, tmp_path: Path) -> None:
    store = open_audit_store(f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    wiring = build(
        Settings.from_env({}), store=store, clock=lambda: FIXED_NOW, retry=RetryPolicy(attempts=2, seconds=1)
    )
    service = ConsumerService(
        BrokerSettings(broker_url(vhost)),
        [FLOWS_BY_NAME["discharge"], FLOWS_BY_NAME["hotline"]],
        wiring.processor_on,
    )
    referrals, hotline = collector(vhost, "rehab.referral"), collector(vhost, "rehab.hotline")
    worker = threading.Thread(target=service.run, daemon=True)
    worker.start()
    try:
        event = (GOLDEN / "discharge" / "01-municipal-gop-general-sternotomy.event.json").read_bytes()
        _publish(vhost, "discharge", event, json.loads(event)["eventId"])
        wait_for(lambda: queue_depth(vhost, referrals) == 1, 30, "the referral")
        request = (GOLDEN / "hotline" / "municipality-acute.request.json").read_bytes()
        _publish(vhost, "hotline", request, "6b1c9a52-3f0e-4d2b-9a1f-0c2d4e6f8a11")
        wait_for(lambda: queue_depth(vhost, hotline) == 2, 30, "the routed request and the reply")
        _publish(vhost, "hotline", request, "6b1c9a52-3f0e-4d2b-9a1f-0c2d4e6f8a11")  # redelivered
        wait_for(lambda: queue_depth(vhost, hotline) == 4, 30, "the republished outputs")
    finally:
        service.stop()
        worker.join(timeout=30)
    messages = take_all(vhost, hotline)
    routed = {m.routing_key: m.body for m in messages[:2]}
    assert set(routed) == {f"hotline.oncall.{AALBORG}", "hotline.reply.434751000016002"}
    assert orjson.loads(routed["hotline.reply.434751000016002"])["kind"] == "on-call"
    assert [m.body for m in messages[2:]] == [m.body for m in messages[:2]]  # byte-identical on redelivery
    course = store.course("2512489996")
    assert course is not None and course.open and course.referring_department == AALBORG
    facts = [r for r in store.records() if r.step == "fact:hotline-routed"]
    assert len(facts) == 1 and facts[0].detail["outcome"] == "acute-to-on-call" and facts[0].patient == "2512489996"
    take_all(vhost, referrals)
    store.close()


def test_closing_report_hands_over_to_the_gp_and_the_hotline_follows(vhost: str, tmp_path: Path) -> None:
    store = open_audit_store(f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    wiring = build(
        Settings.from_env({}), store=store, clock=lambda: FIXED_NOW, retry=RetryPolicy(attempts=2, seconds=1)
    )
    flows = [FLOWS_BY_NAME[name] for name in ("discharge", "hotline", "closing")]
    service = ConsumerService(
        BrokerSettings(broker_url(vhost)),
        flows,
        wiring.processor_on,
    )
    referrals, hotline, status = (collector(vhost, e) for e in ("rehab.referral", "rehab.hotline", "rehab.status"))
    worker = threading.Thread(target=service.run, daemon=True)
    worker.start()
    report = (GOLDEN / "closing" / "01-full-items.report.xml").read_bytes()
    try:
        event = (GOLDEN / "discharge" / "01-municipal-gop-general-sternotomy.event.json").read_bytes()
        _publish(vhost, "discharge", event, json.loads(event)["eventId"])
        wait_for(lambda: queue_depth(vhost, referrals) >= 1, 30, "the referral")
        _publish(vhost, "closing", report, "closing-1")
        wait_for(lambda: queue_depth(vhost, status) == 3, 30, "GP document, GP message and DHRD notice")
        _publish(vhost, "closing", report, "closing-1")  # redelivered
        wait_for(lambda: queue_depth(vhost, status) == 6, 30, "the republished outputs")
        request = (GOLDEN / "hotline" / "municipality-routine.request.json").read_bytes()
        _publish(vhost, "hotline", request, "after-handover")
        wait_for(lambda: queue_depth(vhost, hotline) == 2, 30, "triage and the reply")
    finally:
        service.stop()
        worker.join(timeout=30)
    messages = take_all(vhost, status)
    assert [m.routing_key for m in messages[:3]] == ["gp.status.012345", "gp.status.012345", f"hospital.dhrd.{AALBORG}"]
    assert [m.body for m in messages[3:]] == [m.body for m in messages[:3]]
    course = store.course("2512489996")
    assert course is not None and not course.open and course.responsible == "gp"
    routed = {m.routing_key: m.body for m in take_all(vhost, hotline)}
    assert set(routed) == {"hotline.unmatched", "hotline.reply.434751000016002"}
    assert orjson.loads(routed["hotline.reply.434751000016002"])["kind"] == "responsibility-with-gp"
    take_all(vhost, referrals)
    store.close()
