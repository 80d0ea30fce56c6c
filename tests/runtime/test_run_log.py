"""What `integration run` tells an operator, at its default log level, as a process on a vhost of the test's own:
a start line naming flows, queues, vhost and store (no password), one line per message with a dead letter's
reason, the signal line and every other line as JSON; and a broker that refuses our login or vhost at start is
exit 3 within seconds, one line naming the cause, never "waiting for the broker" forever."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from integration.adapters.consumer import ConsumerService
from integration.adapters.rabbitmq import BrokerRefused, BrokerSettings
from integration.adapters.sql.stores import open_audit_store
from integration.errors import ConnectionLost
from integration.log import configure_logging
from integration.topology import FLOWS_BY_NAME
from tests.cli_runs import run_integration
from tests.runtime.broker_helpers import consumer_env, publish_events, referral_events, start_consumer, wait_for
from tests.runtime.conftest import broker_url

CPR = "2512489996"


def _json_lines(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]  # every line is JSON


def test_run_at_its_default_level_says_what_it_consumes_each_message_and_why_one_was_dead_lettered(
    vhost_of_its_own: str, audit_dsn: str, tmp_path: Path
) -> None:
    log = tmp_path / "run.log"
    env = consumer_env(vhost_of_its_own, audit_dsn, INTEGRATION_HEALTH_LISTEN="")
    with log.open("ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "integration", "run"], env=env, stdout=out, stderr=out)
    try:
        wait_for(lambda: '"consuming"' in log.read_text(), 60, "the consumer to start")
        good, other = referral_events(2)
        event = json.loads(other[1])
        event["patient"]["municipalityCode"] = "999"
        bad = (other[0], json.dumps(event).encode())
        publish_events(vhost_of_its_own, [good, bad])
        wait_for(lambda: log.read_text().count('"event": "message"') >= 2, 60, "a line per message")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert process.returncode == 0
    lines = _json_lines(log)
    start = next(line for line in lines if line["event"] == "starting")
    assert start["vhost"] == vhost_of_its_own and start["audit"] == audit_dsn
    assert start["flows"] == ["discharge", "gp-referral", "hotline", "closing", "acknowledgement"]
    assert "rehab.discharge-events" in start["queues"]  # type: ignore[operator]
    assert start["broker"] == f"amqp://guest:***@127.0.0.1:5672/{vhost_of_its_own}"
    messages = {line["correlation_id"]: line for line in lines if line["event"] == "message"}
    assert messages[good[0]]["outcome"] == "processed" and messages[good[0]]["reason"] is None
    dead = messages[bad[0]]
    assert dead["outcome"] == "dead-lettered" and dead["error"] == "invalid-input"
    assert "municipality" in str(dead["reason"]) and "999" in str(dead["reason"]), dead
    assert any(line["event"].startswith("stopping") and line["signal"] == "SIGTERM" for line in lines)  # type: ignore[union-attr]
    assert lines[-1]["event"] == "stopped"
    assert "guest:guest" not in log.read_text()


@pytest.mark.parametrize(
    ("url", "cause"),
    [
        ("amqp://guest:wrong-password@127.0.0.1:5672/", "ACCESS_REFUSED"),
        ("amqp://guest:guest@127.0.0.1:5672/no-such-vhost-here", "vhost no-such-vhost-here not found"),
        ("amqp://guest:guest@127.0.0.1:port/", "Port could not be cast"),
    ],
    ids=["wrong-password", "unknown-vhost", "malformed"],
)
def test_run_refused_by_the_broker_at_start_exits_3_at_once_naming_the_cause(
    url: str, cause: str, audit_dsn: str
) -> None:
    env = consumer_env("x", audit_dsn, INTEGRATION_BROKER_URL=url, INTEGRATION_HEALTH_LISTEN="")
    started = time.monotonic()
    done = run_integration("run", env=env, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    assert time.monotonic() - started < 20
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and cause in errors[0], done.stderr
    assert "Traceback" not in done.stderr and "wrong-password" not in done.stderr
    assert "waiting for the broker" not in done.stderr


def test_a_refusal_after_the_service_was_connected_is_waited_out_naming_its_cause(vhost_of_its_own: str) -> None:
    """Decision: once connected, a refused login (a password rotated on the broker first) is retried like an
    outage — the service must not stop for good on what an operator is mending — and each line names it."""
    import io

    stream = io.StringIO()
    configure_logging("INFO", stream, "json")
    wrong = broker_url(vhost_of_its_own).replace("guest:guest", "guest:rotated")
    service = ConsumerService(BrokerSettings(wrong), [FLOWS_BY_NAME["discharge"]], lambda bus: None)  # type: ignore[arg-type,return-value]
    service._connected_once = True  # noqa: SLF001 - as after a first connection
    attempts = []

    def pause(seconds: float) -> None:
        attempts.append(seconds)
        if len(attempts) >= 3:
            service.stop()

    service._pause = pause  # type: ignore[method-assign]  # noqa: SLF001 - no real waiting in the test
    with pytest.raises(ConnectionLost) as raised:
        service._connect()  # noqa: SLF001
    assert isinstance(raised.value, BrokerRefused) and len(attempts) >= 3
    waiting = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert waiting and all("ACCESS_REFUSED" in str(line["reason"]) for line in waiting)
    assert "rotated" not in stream.getvalue()


@pytest.mark.parametrize("processes", [1, 2], ids=["lone", "two-workers"])
def test_sighup_stops_run_as_sigterm_does_with_its_lines_and_a_final_anchor(
    processes: int, vhost_of_its_own: str, audit_dsn: str, tmp_path: Path
) -> None:
    """A hang-up (the terminal closed: SIGHUP to the whole process group) ended a lone `run` silently, with no
    `stopping`/`stopped` line and no anchor of the head at stop; under `--processes` it killed every worker
    while the supervisor logged a clean stop. Now each process finishes, anchors and exits 0, as for SIGTERM."""
    log, anchors = tmp_path / "run.log", tmp_path / "anchors.jsonl"
    env = consumer_env(
        vhost_of_its_own, audit_dsn, INTEGRATION_HEALTH_LISTEN="", INTEGRATION_AUDIT_ANCHOR_FILE=str(anchors)
    )
    command = [sys.executable, "-m", "integration", "run", "--processes", str(processes)]
    with log.open("ab") as out:  # a session of its own: the hang-up reaches this group only
        process = subprocess.Popen(command, env=env, stdout=out, stderr=out, start_new_session=True)
    try:
        wait_for(lambda: log.read_text().count('"consuming"') >= processes, 60, "every consumer to start")
        publish_events(vhost_of_its_own, referral_events(6))
        wait_for(lambda: log.read_text().count('"event": "message"') >= 6, 60, "the events processed")
        os.killpg(process.pid, signal.SIGHUP)
        assert process.wait(timeout=90) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    lines = _json_lines(log)
    events = [str(line["event"]) for line in lines]
    stopping = [line for line in lines if str(line["event"]).startswith("stopping")]
    # a worker stops on the group's SIGHUP or on the SIGTERM its supervisor forwards, whichever comes first
    said = {"SIGHUP"} if processes == 1 else {"SIGHUP", "SIGTERM"}
    assert len(stopping) == processes and {line["signal"] for line in stopping} <= said, events
    assert events.count("stopped") == processes, events
    if processes > 1:
        (stopped,) = [line for line in lines if line["event"] == "workers stopped"]
        assert stopped["signal"] == "SIGHUP" and stopped["exit_code"] == 0
        assert "worker did not stop cleanly" not in events
    reader = open_audit_store(audit_dsn, create=False)
    try:
        head = reader.head()
        hashes = {record.seq: record.hash for record in reader.records()}
    finally:
        reader.close()
    last = json.loads(anchors.read_text().splitlines()[-1])
    if processes == 1:
        assert (last["seq"], last["hash"]) == head, "the head at stop is anchored"
    else:  # worker 0 anchors at its stop; another worker's last acks may be recorded after it (the next start's)
        assert hashes.get(last["seq"]) == last["hash"], "the last anchor names a record of the chain"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_while_starting_is_a_clean_stop(
    signum: int, vhost_of_its_own: str, audit_dsn: str, tmp_path: Path
) -> None:
    """SIGTERM while the mappings were read and the pipeline warmed up killed `run` (exit 143, no line): the
    handlers came after. Now a stop at any moment after the health endpoint is up says so and exits 0."""
    log = tmp_path / "run.log"
    process = start_consumer(vhost_of_its_own, audit_dsn, log, INTEGRATION_HEALTH_LISTEN="127.0.0.1:0")
    try:
        wait_for(lambda: '"health endpoint"' in log.read_text(), 60, "the health endpoint")
        process.send_signal(signum)  # while the pipeline is built and warmed up (about a second)
        assert process.wait(timeout=60) == 0, log.read_text()[-2000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    events = [str(line["event"]) for line in _json_lines(log)]
    assert "stopped while starting" in events or "stopped" in events, events
    assert "Traceback" not in log.read_text()
