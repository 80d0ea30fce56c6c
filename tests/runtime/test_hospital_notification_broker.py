"""MedCom HospitalNotifications on the real broker, through the consumers and the SQLite audit store: a death
stops the referral awaiting its ack and nothing more is sent for the patient; an admission pauses the course
and the discharge of that stay ends the pause. Each notice is answered with an `ok` ack."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from integration.adapters.consumer import ConsumerService
from integration.adapters.rabbitmq import BrokerSettings
from integration.adapters.sql.stores import open_audit_store
from integration.bootstrap import build
from integration.cli.main import main
from integration.config import Settings
from integration.domain.course import OutboundState, Stage
from integration.log import cpr_numbers_in
from integration.service.processor import RetryPolicy
from integration.topology import FLOWS, SENDERS_BY_KIND, outbound_exchanges
from tests.conftest import GOLDEN
from tests.hospital_notifications import as_new_message, example, for_patient, with_episode
from tests.runtime.broker_helpers import collector, connect, take_all, wait_for
from tests.runtime.conftest import broker_url

PATIENT = "2512489996"
EPISODE = "82873e50-325e-4016-8a68-2934bdb2f66d"  # STIN_A's stay
T0 = datetime.fromisoformat("2026-11-20T14:10:00+01:00")


class Clock:
    now = T0

    def __call__(self) -> datetime:
        return self.now


class Run:
    """The consumers of every flow on the test's vhost, and a reader of their store."""

    def __init__(self, vhost: str, tmp_path: Path) -> None:
        dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
        self.vhost, self.clock, self.dsn = vhost, Clock(), dsn
        self.store, self.reader = open_audit_store(dsn), open_audit_store(dsn)
        self.outbound = [collector(vhost, exchange) for exchange in outbound_exchanges()]
        wiring = build(
            Settings.from_env({}), store=self.store, clock=self.clock, retry=RetryPolicy(attempts=2, seconds=1)
        )
        self.service = ConsumerService(BrokerSettings(broker_url(vhost)), list(FLOWS), wiring.processor_on)
        self.worker = threading.Thread(target=self.service.run, daemon=True)

    def send(
        self, body: bytes, message_id: str, key: str = "discharge", sender: str = "hospital"
    ) -> tuple[list[Any], list[Any]]:
        """Publish on `sender`'s exchange for the queue `key` (default: the hospital's discharge queue); (what
        was published, the audit records) once it settled."""
        before = len(list(self.reader.records()))
        connection = connect(self.vhost)
        try:
            exchange = SENDERS_BY_KIND[sender].exchange
            connection.publish(exchange, key, body, message_id, content_type="application/json")
        finally:
            connection.close()
        wait_for(
            lambda: any(
                r.message_id == message_id and r.step in ("acked", "dead-lettered") for r in self._after(before)
            ),
            30,
            "settled",
        )
        records = self._after(before)
        published = len([r for r in records if r.step == "published"])
        messages: list[Any] = []

        def collected() -> bool:
            messages.extend(m for queue in self.outbound for m in take_all(self.vhost, queue))
            return len(messages) >= published

        wait_for(collected, 5, "every output collected")
        return messages, records

    def _after(self, before: int) -> list[Any]:
        return list(self.reader.records())[before:]


@pytest.fixture
def run(vhost_of_its_own: str, tmp_path: Path) -> Iterator[Run]:
    running = Run(vhost_of_its_own, tmp_path)
    running.worker.start()
    try:
        yield running
    finally:
        running.service.stop()
        running.worker.join(timeout=30)


def _notice(shared: Path, name: str, seed: str, episode: str | None = None) -> tuple[bytes, str]:
    bundle = for_patient(example(shared, name), PATIENT)
    bundle = as_new_message(with_episode(bundle, episode) if episode else bundle, seed)
    return json.dumps(bundle).encode(), bundle["entry"][0]["resource"]["id"]


STIN_AT, READMITTED_AT = b"2023-03-01T12:00:00+01:00", b"2026-11-20T14:00:00+01:00"  # golden discharge: 13:30


def _readmission(shared: Path, seed: str) -> tuple[bytes, str]:
    """STIN_A about PATIENT dated after the golden discharge: a new stay (an older one pauses nothing)."""
    body, header = _notice(shared, "STIN_A", seed)
    return body.replace(STIN_AT, READMITTED_AT), header


def _ack_codes(messages: list[Any]) -> list[str]:
    codes = []
    for m in messages:
        doc = json.loads(m.body)
        for entry in doc.get("entry", []):
            if entry["resource"]["resourceType"] == "MessageHeader" and "response" in entry["resource"]:
                codes.append(entry["resource"]["response"]["code"])
    return codes


def _facts(records: list[Any]) -> list[str]:
    return [r.step.removeprefix("fact:") for r in records if r.step.startswith("fact:")]


def test_a_death_stops_the_referral_awaiting_its_ack_and_nothing_more_is_sent(
    run: Run, shared: Path, golden_discharge: bytes
) -> None:
    sent, _ = run.send(golden_discharge, "5a1e0000-0000-4000-8000-000000000024")
    assert [m.routing_key for m in sent] == ["referral.municipality.851"]
    (referral,) = run.reader.outbound_messages([OutboundState.AWAITING])
    body, header = _notice(shared, "MORS_K", "mors")
    sent, records = run.send(body, header)
    assert _ack_codes(sent) == ["ok"] and len(sent) == 1
    assert "patient-deceased" in _facts(records)
    course = run.reader.course(PATIENT)
    assert course is not None and course.deceased and course.current is Stage.CLOSED
    assert run.reader.outbound(referral.header_id).state is OutboundState.STOPPED
    assert [m.header_id for m in run.reader.outbound_messages(OutboundState.needing_a_person())] == [referral.header_id]
    # later: the same discharge again under a new event id is processed, nothing is sent, and that is audited
    later = json.loads(golden_discharge)
    later["eventId"] = "5a1e0000-0000-4000-8000-0000000000aa"
    sent, records = run.send(json.dumps(later).encode(), later["eventId"])
    assert sent == []
    assert "sending-withheld" in _facts(records) and "acked" in [r.step for r in records]
    after = run.reader.course(PATIENT)
    assert after is not None and after.deceased


def test_an_admission_pauses_the_course_until_that_stay_is_discharged(
    run: Run, shared: Path, golden_discharge: bytes
) -> None:
    run.send(golden_discharge, "5a1e0000-0000-4000-8000-000000000024")
    body, header = _readmission(shared, "stin")
    sent, records = run.send(body, header)
    assert _ack_codes(sent) == ["ok"] and "course-paused" in _facts(records)
    paused = run.reader.course(PATIENT)
    assert paused is not None and paused.paused and paused.admitted_to == "265161000016000"
    assert paused.admission_episode == EPISODE and paused.current is Stage.MUNICIPAL
    body, header = _notice(shared, "SLHJ_H", "slhj", episode=EPISODE)
    sent, records = run.send(body, header)
    assert _ack_codes(sent) == ["ok"] and "course-resumed" in _facts(records)
    resumed = run.reader.course(PATIENT)
    assert resumed is not None and not resumed.paused and resumed.admitted_to is None


STIN_UNIT, HJORRING = "265161000016000", "716141000016004"  # STIN_A's unit (not in departments.yaml); one that is


def test_a_hotline_request_while_admitted_also_goes_to_the_admitting_department(
    run: Run, shared: Path, golden_discharge: bytes
) -> None:
    run.send(golden_discharge, "5a1e0000-0000-4000-8000-000000000024")
    request = (GOLDEN / "hotline" / "municipality-routine.request.json").read_bytes()
    body, header = _readmission(shared, "stin")
    run.send(body, header)  # admitted to a unit departments.yaml does not know
    sent, records = run.send(request, "6b1c9a52-3f0e-4d2b-9a1f-0c2d4e6f8a10", key="hotline", sender="municipality")
    assert [m.routing_key for m in sent] == ["hotline.department.715541000016001"]
    assert "hotline-copy-not-sent" in _facts(records)
    body, header = _readmission(shared, "stin-hjorring")
    run.send(body.replace(STIN_UNIT.encode(), HJORRING.encode()), header)  # RE-admitted: the latest wins
    course = run.reader.course(PATIENT)
    assert course is not None and course.admitted_to == HJORRING
    sent, records = run.send(request, "6b1c9a52-3f0e-4d2b-9a1f-0c2d4e6f8a12", key="hotline", sender="municipality")
    assert sorted(m.routing_key for m in sent) == [
        "hotline.department.715541000016001",
        f"hotline.department.{HJORRING}",
    ]
    assert len({m.body for m in sent}) == 1 and "hotline-copied" in _facts(records)


SLHJ_EPISODE = "d3d03544-f116-4070-a823-d5c64e6a7c46"  # SLHJ_H's stay, discharged 2023-03-07T09:45:30+01:00
CARDIOLOGY = "715541000016001"  # in mappings/hospital-notifications.yaml


def _pathway_overdue(run: Run, at: str) -> Result:
    clean = {k: None for k in os.environ if k.startswith("INTEGRATION_")}
    env = clean | {"INTEGRATION_AUDIT_DSN": run.dsn, "INTEGRATION_CONFIG": ""}
    return CliRunner().invoke(main, ["pathway", "overdue", "--at", at], env=env)


def _slhj_from_cardiology(shared: Path) -> tuple[bytes, str]:
    body, header = _notice(shared, "SLHJ_H", "slhj-cardiology")
    return body.replace(STIN_UNIT.encode(), CARDIOLOGY.encode()), header


@pytest.mark.parametrize("with_discharge_event", [False, True])
def test_a_discharge_home_from_cardiology_without_a_discharge_event_is_overdue_after_the_window(
    run: Run, shared: Path, golden_discharge: bytes, with_discharge_event: bool
) -> None:
    body, header = _slhj_from_cardiology(shared)
    sent, records = run.send(body, header)
    assert _ack_codes(sent) == ["ok"] and "discharge-watched" in _facts(records)
    if with_discharge_event:
        event = json.loads(golden_discharge)
        event["episodeOfCare"] = SLHJ_EPISODE
        run.send(json.dumps(event).encode(), event["eventId"])
    within = _pathway_overdue(run, "2023-03-09T09:45:00+01:00")  # 48 h after the discharge, less 30 s
    assert within.exit_code == 0 and "missed-referral" not in within.output, within.output
    after = _pathway_overdue(run, "2023-03-09T09:46:00+01:00")
    if with_discharge_event:
        assert "missed-referral" not in after.output, after.output
        return
    assert after.exit_code == 1, after.output
    (line,) = [x for x in after.output.splitlines() if "missed-referral" in x]
    assert CARDIOLOGY in line and "2023-03-07T09:45+01:00" in line and SLHJ_EPISODE in line
    assert PATIENT not in after.output and not cpr_numbers_in(after.output)


@pytest.mark.parametrize("death_first", [False, True])
def test_a_patient_whose_death_was_notified_is_no_missed_referral_whichever_came_first(
    run: Run, shared: Path, death_first: bool
) -> None:
    slhj, mors = _slhj_from_cardiology(shared), _notice(shared, "MORS_K", "mors")
    for body, header in (mors, slhj) if death_first else (slhj, mors):
        sent, records = run.send(body, header)
        assert _ack_codes(sent) == ["ok"]
    assert ("discharge-watched" in _facts(records)) is False  # the last one sent
    after = _pathway_overdue(run, "2023-03-10T09:46:00+01:00")
    assert after.exit_code == 0 and "missed-referral" not in after.output, after.output
    assert run.reader.watched_episodes() == []


def test_an_admission_dated_before_the_discharge_neither_pauses_nor_copies(
    run: Run, shared: Path, golden_discharge: bytes
) -> None:
    # R20 of the second attack: an admission "since 2023-03-01" after a discharge in 2026 paused the course and
    # copied the next hotline request to a ward the patient had left
    run.send(golden_discharge, "5a1e0000-0000-4000-8000-000000000024")
    body, header = _notice(shared, "STIN_A", "stin-stale")
    sent, records = run.send(body.replace(STIN_UNIT.encode(), HJORRING.encode()), header)
    assert _ack_codes(sent) == ["ok"] and "admission-not-taken" in _facts(records)
    assert "course-paused" not in _facts(records)
    course = run.reader.course(PATIENT)
    assert course is not None and not course.paused
    request = (GOLDEN / "hotline" / "municipality-routine.request.json").read_bytes()
    sent, records = run.send(request, "6b1c9a52-3f0e-4d2b-9a1f-0c2d4e6f8a10", key="hotline", sender="municipality")
    assert [m.routing_key for m in sent] == ["hotline.department.715541000016001"]
