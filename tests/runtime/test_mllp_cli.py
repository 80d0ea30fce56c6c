"""`integration mllp` as a process: its configuration errors (exit 3, one line naming the setting), its health
endpoints and metrics, and SIGTERM with a message in flight (answered, then exit 0; nothing half-done)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from integration.adapters.sql.stores import open_audit_store
from tests.runtime.broker_helpers import readyz, take_all, wait_for
from tests.runtime.conftest import broker_url
from tests.runtime.mllp_client import Client, adt, segment, self_signed
from tests.runtime.tcp_proxy import TcpProxy

QUEUE = "rehab.discharge-events"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def env_for(vhost: str, dsn: str, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
    env.update({"INTEGRATION_BROKER_URL": broker_url(vhost), "INTEGRATION_AUDIT_DSN": dsn})
    env.update({"INTEGRATION_MLLP_ALLOWED_SENDERS": "EPJ@RHN", **settings})
    return env


def start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    return subprocess.Popen([sys.executable, "-m", "integration", "mllp"], env=env, stdout=out, stderr=out)


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_the_port_in_use_is_exit_3_naming_the_setting_in_one_line(vhost: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = env_for(
            vhost,
            f"sqlite:///{tmp_path / 'audit.sqlite3'}",
            INTEGRATION_MLLP_LISTEN=f"127.0.0.1:{port}",
            INTEGRATION_MLLP_HEALTH_LISTEN="127.0.0.1:0",
        )
        done = subprocess.run(
            [sys.executable, "-m", "integration", "mllp"], env=env, capture_output=True, timeout=60, text=True
        )
    assert done.returncode == 3
    errors = [line for line in done.stderr.splitlines() if line.startswith("error")]
    assert errors == [errors[0]] and "mllp_listen" in errors[0] and f"127.0.0.1:{port}" in errors[0]
    assert "Traceback" not in done.stderr


def test_the_health_port_in_use_is_exit_3_naming_its_setting(vhost: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = env_for(
            vhost,
            f"sqlite:///{tmp_path / 'audit.sqlite3'}",
            INTEGRATION_MLLP_LISTEN=f"127.0.0.1:{free_port()}",
            INTEGRATION_MLLP_HEALTH_LISTEN=f"127.0.0.1:{taken.getsockname()[1]}",
        )
        done = subprocess.run(
            [sys.executable, "-m", "integration", "mllp"], env=env, capture_output=True, timeout=60, text=True
        )
    assert done.returncode == 3 and "INTEGRATION_MLLP_HEALTH_LISTEN" in done.stderr and "Traceback" not in done.stderr


def test_sigterm_answers_the_message_in_flight_then_exits_0(vhost_of_its_own: str, tmp_path: Path) -> None:
    """The broker black-holed: the message waits for its confirm when SIGTERM comes; it is answered (AR 207 when
    the confirm does not come within the publish timeout: the sender resends), then the process exits 0 with
    no receipt recorded and nothing on the queue."""
    dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    port, health = free_port(), free_port()
    log = tmp_path / "mllp.log"
    with TcpProxy("127.0.0.1", 5672) as proxy:
        env = env_for(
            vhost_of_its_own,
            dsn,
            INTEGRATION_MLLP_LISTEN=f"127.0.0.1:{port}",
            INTEGRATION_MLLP_HEALTH_LISTEN=f"127.0.0.1:{health}",
            INTEGRATION_MLLP_BROKER_URL=f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost_of_its_own}?heartbeat=60",
            INTEGRATION_MLLP_PUBLISH_TIMEOUT_SECONDS="3",
        )
        process = start(env, log)
        try:
            wait_for(lambda: readyz(health)[0] == 200, 30, "/readyz 200 once the broker answers")
            client = Client(port, timeout=30)
            assert segment(client.ask(adt("BEFORE")), "MSA")[1] == "AA"
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{health}/metrics", timeout=5).read().decode()
            assert 'rehab_mllp_messages_total{ack="AA",trigger="A03"} 1.0' in metrics
            assert 'rehab_mllp_connections_total{outcome="accepted"} 1.0' in metrics
            proxy.blackhole()
            client.send(adt("IN-FLIGHT"))
            time.sleep(0.5)  # taken, waiting for the confirm
            process.send_signal(signal.SIGTERM)
            ack = client.read_frame()
            assert process.wait(timeout=20) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert segment(ack, "MSA")[1:3] == ["AR", "IN-FLIGHT"] and segment(ack, "ERR")[3].startswith("207^")
    store = open_audit_store(dsn, create=False)
    try:
        answered = [
            r.detail["controlId"]
            for r in store.records()
            if r.step == "hl7-received" and "notPublished" not in r.detail
        ]
    finally:
        store.close()
    assert answered == ["BEFORE"]  # no receipt for the message in flight: its resend is published anew
    assert [m.body for m in take_all(vhost_of_its_own, QUEUE)] == [adt("BEFORE")]
    assert not listening(port)
    text = log.read_text()
    assert "Traceback" not in text
    # the default level of `integration mllp` is info, as `run`'s: its start and each message are logged
    assert '"event": "listening"' in text and text.count('"event": "message answered"') == 2


def run_to_exit(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "integration", "mllp"], env=env, capture_output=True, timeout=60, text=True
    )


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    errors = [line for line in done.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    return errors[0]


def test_no_sender_list_is_exit_3_naming_the_setting(vhost: str, tmp_path: Path) -> None:
    env = env_for(
        vhost,
        f"sqlite:///{tmp_path / 'audit.sqlite3'}",
        INTEGRATION_MLLP_LISTEN=f"127.0.0.1:{free_port()}",
        INTEGRATION_MLLP_HEALTH_LISTEN="",
        INTEGRATION_MLLP_ALLOWED_SENDERS="",
    )
    done = run_to_exit(env)
    assert done.returncode == 3 and "INTEGRATION_MLLP_ALLOWED_SENDERS" in one_error_line(done)


@pytest.mark.parametrize(
    "url",
    [
        "amqp://guest:not-the-password@127.0.0.1:5672/{vhost}",  # ACCESS_REFUSED (login)
        "amqp://guest:guest@127.0.0.1:5672/{vhost}-not-there",  # the vhost not found
    ],
)
def test_the_broker_refusing_the_listeners_login_or_vhost_is_exit_3_naming_the_setting(
    vhost: str, tmp_path: Path, url: str
) -> None:
    env = env_for(
        vhost,
        f"sqlite:///{tmp_path / 'audit.sqlite3'}",
        INTEGRATION_MLLP_LISTEN=f"127.0.0.1:{free_port()}",
        INTEGRATION_MLLP_HEALTH_LISTEN="",
        INTEGRATION_MLLP_BROKER_URL=url.format(vhost=vhost),
    )
    done = run_to_exit(env)
    line = one_error_line(done)
    assert done.returncode == 3 and "INTEGRATION_MLLP_BROKER_URL" in line and "refused" in line
    assert "not-the-password" not in done.stderr


def test_an_unreachable_broker_is_a_retry_ar_207_with_a_warning_and_readyz_down(vhost: str, tmp_path: Path) -> None:
    port, health = free_port(), free_port()
    log = tmp_path / "mllp.log"
    env = env_for(
        vhost,
        f"sqlite:///{tmp_path / 'audit.sqlite3'}",
        INTEGRATION_MLLP_LISTEN=f"127.0.0.1:{port}",
        INTEGRATION_MLLP_HEALTH_LISTEN=f"127.0.0.1:{health}",
        INTEGRATION_MLLP_BROKER_URL=f"amqp://guest:guest@127.0.0.1:{free_port()}/{vhost}",
    )
    process = start(env, log)
    try:
        wait_for(lambda: listening(port), 30, "the listener listens though the broker is not there")
        ack = Client(port, timeout=30).ask(adt("NOBROKER"))
        assert readyz(health)[0] == 503
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    assert segment(ack, "MSA")[1] == "AR" and segment(ack, "ERR")[3].startswith("207^")
    text = log.read_text()
    assert "dependency unavailable" in text and '"level": "warning"' in text.replace('"level":"', '"level": "')


def tls_case(tmp_path: Path, case: str) -> tuple[dict[str, str], str]:
    """(settings, what the one error line must name) for a TLS configuration `integration mllp` must refuse."""
    cert, key = self_signed(tmp_path)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cases = {
        "key-alone": ({"INTEGRATION_MLLP_TLS_KEY_FILE": str(key)}, "INTEGRATION_MLLP_TLS_CERT_FILE"),
        "cert-alone": ({"INTEGRATION_MLLP_TLS_CERT_FILE": str(cert)}, "INTEGRATION_MLLP_TLS_KEY_FILE"),
        "client-ca-alone": ({"INTEGRATION_MLLP_TLS_CLIENT_CA_FILE": str(cert)}, "INTEGRATION_MLLP_TLS_CERT_FILE"),
        "missing-key-file": (
            {"INTEGRATION_MLLP_TLS_CERT_FILE": str(cert), "INTEGRATION_MLLP_TLS_KEY_FILE": str(tmp_path / "none.key")},
            "INTEGRATION_MLLP_TLS_KEY_FILE",
        ),
        "garbage-cert": (
            {"INTEGRATION_MLLP_TLS_CERT_FILE": str(garbage), "INTEGRATION_MLLP_TLS_KEY_FILE": str(key)},
            "INTEGRATION_MLLP_TLS_CERT_FILE",
        ),
        "garbage-client-ca": (
            {
                "INTEGRATION_MLLP_TLS_CERT_FILE": str(cert),
                "INTEGRATION_MLLP_TLS_KEY_FILE": str(key),
                "INTEGRATION_MLLP_TLS_CLIENT_CA_FILE": str(garbage),
            },
            "INTEGRATION_MLLP_TLS_CLIENT_CA_FILE",
        ),
    }
    return cases[case]


@pytest.mark.parametrize(
    "case", ["key-alone", "cert-alone", "client-ca-alone", "missing-key-file", "garbage-cert", "garbage-client-ca"]
)
def test_half_a_tls_configuration_or_an_unusable_file_is_exit_3_naming_the_setting(
    vhost: str, tmp_path: Path, case: str
) -> None:
    settings, named = tls_case(tmp_path, case)
    env = env_for(
        vhost,
        f"sqlite:///{tmp_path / 'audit.sqlite3'}",
        INTEGRATION_MLLP_LISTEN=f"127.0.0.1:{free_port()}",
        INTEGRATION_MLLP_HEALTH_LISTEN="",
        **settings,
    )
    done = run_to_exit(env)
    assert done.returncode == 3 and named in one_error_line(done)
