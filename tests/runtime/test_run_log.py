"""What `integration run` tells an operator, at its default log level, as a process on a vhost of the test's own:
a start line naming flows, queues, vhost and store (no password), one line per message with a dead letter's
reason, the signal line and every other line as JSON; and a broker that refuses our login or vhost at start is
exit 3 within seconds, one line naming the cause, never "waiting for the broker" forever."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from integration.adapters.consumer import ConsumerService
from integration.adapters.rabbitmq import BrokerRefused, BrokerSettings
from integration.errors import ConnectionLost
from integration.log import configure_logging
from integration.topology import FLOWS_BY_NAME
from tests.cli_runs import run_integration
from tests.runtime.broker_helpers import consumer_env, publish_events, referral_events, wait_for
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
