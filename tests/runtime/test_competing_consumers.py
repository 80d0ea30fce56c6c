"""Competing consumers (decision 31): `integration run --processes 3` on a vhost and a PostgreSQL schema of the
test's own, fed at once 600 distinct discharge events and, for some of their patients, one or two visitation
talks published right behind the discharge on the same queue (each visitation changes the referral in force, so
each is an update that replaces the referral before it).

What must hold with any number of processes: every discharge yields its referral exactly once; the referrals of
one patient form one line, each update replacing the one before it — two updates replacing the same referral
would be a lost update (two processes deciding from the same course); the stored course names the last of that
line; the audit chain verifies. What the lead's bounded wait-and-retry will add: no visitation refused as
out of order because its discharge was still in another process's hands (xfail until then).

COMPETING_PROCESSES in the environment runs the same scenario with another N (the decision note's figures), and
COMPETING_STORE=sqlite on a SQLite file instead of PostgreSQL."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from integration.adapters.rabbitmq import BrokerSettings, connected
from integration.adapters.sql.stores import open_audit_store
from integration.cli.audit import audit
from integration.domain.course import Stage
from tests.runtime.broker_helpers import DLQ, INBOUND, consumer_env, output_queue, publish_events, take_all, unsettled
from tests.runtime.conftest import broker_url, postgres_schema, rabbitmqctl
from tests.support.events import distinct_referral_events

PROCESSES = int(os.environ.get("COMPETING_PROCESSES", "3"))
DISCHARGES = 600
ONE_VISITATION, TWO_VISITATIONS = 150, 50  # the first 150 patients get a visitation, the first 50 a second one
WAIT_AND_RETRY = True  # the consumer holds an out-of-order delivery and tries again (decision 31)


@dataclass
class Run:
    """What one run of the scenario left: the events by patient, the outputs, the dead letters, the log, the store."""

    patients: list[list[str]]  # per patient: the event ids published, discharge first
    referrals: list[dict[str, Any]]  # each ServiceRequest sent: identifier, replaces, MessageHeader id
    dead_letters: list[Any]
    log: str
    dsn: str
    exit_code: int
    seconds: float


def _visitation(discharge: dict[str, Any], after: timedelta, change: str) -> dict[str, Any]:
    """A visitation talk of the discharged patient that changes the referral in force (same receiver: an update)."""
    event = copy.deepcopy(discharge)
    event["eventId"] = str(uuid.uuid4())
    event["eventType"] = "visitation"
    event["occurredAt"] = (datetime.fromisoformat(discharge["occurredAt"]) + after).isoformat()
    referral = event["referral"]
    if change == "ambulatory":
        referral["ambulatoryControl"] = not referral.get("ambulatoryControl", False)
        referral["ambulatoryControlAtEndOfRehab"] = False  # only with an ambulatory control
    else:
        elements = referral["rehabElements"]
        referral["rehabElements"] = [e for e in elements if e != "diet"] if "diet" in elements else [*elements, "diet"]
    return event


def _events() -> tuple[list[tuple[str, bytes]], list[list[str]]]:
    """The messages in publishing order (each discharge, then its visitations) and the event ids by patient."""
    messages, patients = [], []
    for i, (event_id, body) in enumerate(distinct_referral_events(DISCHARGES)):
        discharge = orjson.loads(body)
        follow_ups = []
        if i < ONE_VISITATION:
            follow_ups.append(_visitation(discharge, timedelta(hours=1), "ambulatory"))
        if i < TWO_VISITATIONS:
            follow_ups.append(_visitation(discharge, timedelta(hours=2), "elements"))
        messages += [(event_id, body), *((e["eventId"], orjson.dumps(e)) for e in follow_ups)]
        patients.append([event_id, *(e["eventId"] for e in follow_ups)])
    return messages, patients


def _referral(body: bytes) -> dict[str, Any]:
    bundle = orjson.loads(body)
    request = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest")
    replaces = request.get("replaces", [{}])[0].get("identifier", {}).get("value")
    header = bundle["entry"][0]["resource"]["id"]
    return {"id": request["identifier"][0]["value"], "replaces": replaces, "header": header}


@pytest.fixture(scope="module")
def own_vhost() -> Iterator[str]:
    name = f"ordering-{uuid.uuid4().hex[:10]}"
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        with connected(BrokerSettings(broker_url(name))) as connection:
            connection.apply_topology()
        yield name
    finally:
        rabbitmqctl("delete_vhost", name)


@pytest.fixture(scope="module")
def own_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The store: a PostgreSQL schema of the test's own, or (COMPETING_STORE=sqlite) a SQLite file."""
    if os.environ.get("COMPETING_STORE") == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('store') / 'audit.sqlite3'}"
        return
    with postgres_schema("ordering") as dsn:
        yield dsn


def _cpu_seconds(pids: list[int]) -> float:
    """The CPU time (user + system) the processes have used so far, from /proc (0 where there is none)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
    return total / os.sysconf("SC_CLK_TCK")


def _worker_pids(log: str, supervisor: int) -> list[int]:
    started = [orjson.loads(line) for line in log.splitlines() if '"event": "workers started"' in line]
    return [int(pid) for pid in started[0]["pids"]] if started else [supervisor]


def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def run(own_vhost: str, own_schema: str, tmp_path_factory: pytest.TempPathFactory) -> Run:
    messages, patients = _events()
    outputs = output_queue(own_vhost)
    log_path = tmp_path_factory.mktemp("competing") / "run.log"
    env = consumer_env(own_vhost, own_schema, INTEGRATION_HEALTH_LISTEN="127.0.0.1:0")
    command = [sys.executable, "-m", "integration", "--log-level", "INFO", "run", "--processes", str(PROCESSES)]
    with log_path.open("ab") as log:
        supervisor = subprocess.Popen(command, env=env, stdout=log, stderr=log)
    try:
        _wait(lambda: log_path.read_text().count('"consuming"') >= PROCESSES, 60, "every worker to consume")
        pids = _worker_pids(log_path.read_text(), supervisor.pid)
        cpu_before, started = _cpu_seconds(pids), time.monotonic()
        publish_events(own_vhost, messages)
        published = time.monotonic() - started
        _wait(lambda: unsettled(own_vhost, INBOUND) == 0, 120, "every message to be settled")
        seconds = time.monotonic() - started
        cpu_ms = (_cpu_seconds(pids) - cpu_before) * 1000 / len(messages)
    finally:
        supervisor.send_signal(signal.SIGTERM)
        exit_code = supervisor.wait(timeout=90)
    referrals = [_referral(m.body) for m in take_all(own_vhost, outputs)]
    rate = len(messages) / seconds
    print(
        f"\n{PROCESSES} process(es): {len(messages)} events in {seconds:.1f} s = {rate:.0f}/s (published in "
        f"{published:.1f} s), consumers' CPU {cpu_ms:.1f} ms per event, load average {os.getloadavg()[0]:.1f}"
    )
    return Run(patients, referrals, take_all(own_vhost, DLQ), log_path.read_text(), own_schema, exit_code, seconds)


def test_the_supervisor_ran_every_worker_and_stopped_cleanly(run: Run) -> None:
    assert run.exit_code == 0
    if PROCESSES == 1:
        return  # no supervisor: the lone `run` of before
    starting = [orjson.loads(line) for line in run.log.splitlines() if '"event": "starting"' in line]
    assert sorted(line["worker"] for line in starting) == list(range(PROCESSES))
    assert [line["worker"] for line in starting if line["periodic_jobs"]] == [0]  # one worker resends


def test_every_discharge_yields_its_referral_exactly_once(run: Run) -> None:
    headers: dict[str, set[str]] = {}
    for referral in run.referrals:
        headers.setdefault(referral["id"], set()).add(referral["header"])
    for events in run.patients:
        assert len(headers.get(f"urn:uuid:{events[0]}", set())) == 1


def test_the_referrals_of_a_patient_form_one_line_no_update_lost(run: Run) -> None:
    """Each referral is replaced by at most one other: two updates replacing one referral would mean two processes
    decided from the same course and the later overwrote the earlier's (a lost update)."""
    sent = {r["id"]: r["replaces"] for r in run.referrals}  # a redelivery's copy has the same identifier
    replaced = Counter(replaces for replaces in sent.values() if replaces is not None)
    assert [id_ for id_, times in replaced.items() if times > 1] == []
    store = open_audit_store(run.dsn, create=False)
    try:
        courses = {c.discharge_event: c for c in store.courses_at(list(Stage))}
    finally:
        store.close()
    for events in run.patients:
        line, last = [f"urn:uuid:{events[0]}"], f"urn:uuid:{events[0]}"
        followers = {replaces: id_ for id_, replaces in sent.items() if replaces is not None}
        while last in followers:
            last = followers[last]
            line.append(last)
        course = courses[events[0]]
        assert course.referral is not None and course.referral.service_request == last
        assert len(line) == 1 + sum(1 for e in events[1:] if f"urn:uuid:{e}" in sent)


def test_the_audit_chain_is_one_valid_chain(run: Run) -> None:
    result = CliRunner().invoke(audit, ["verify"], env={"INTEGRATION_AUDIT_DSN": run.dsn, "INTEGRATION_CONFIG": ""})
    assert result.exit_code == 0, result.output


def test_no_visitation_is_dead_lettered_but_as_out_of_order(run: Run) -> None:
    reasons = Counter(str(m.raw_headers.get("x-rehab-reason-code", "?")) for m in run.dead_letters)
    conflicts = [line for line in run.log.splitlines() if "Conflict" in line]
    print(f"\nfollow-ups dead-lettered: {dict(reasons)}; conflicts: {len(conflicts)}", *conflicts[:4], sep="\n")
    discharges = {f"{events[0]}" for events in run.patients}
    assert not [m for m in run.dead_letters if m.message_id in discharges]
    assert set(reasons) <= {"out-of-order"}


@pytest.mark.xfail(
    PROCESSES > 1 and not WAIT_AND_RETRY,
    strict=True,
    reason="a visitation consumed by one process while another still holds its discharge finds no course and is "
    "refused as out of order: the processor's bounded wait-and-retry (decision 31) is the lead's part",
)
def test_no_visitation_is_refused_because_its_discharge_was_in_another_process(run: Run) -> None:
    assert run.dead_letters == []
