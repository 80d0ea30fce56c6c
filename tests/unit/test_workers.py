"""The supervisor of `integration run --processes N` (adapters/workers.py), with stand-in workers (small Python
processes): SIGTERM forwarded and awaited, a worker that dies restarted after a backoff with one log line, a
worker's fatal exit stopping all with its code, a worker deaf to SIGTERM killed after the grace, one ended by a
signal while stopping named; the health ports; and the command's refusals (a store the processes cannot share, a
count out of range)."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from integration.adapters import workers
from integration.adapters.workers import Supervisor, first_signal, health_addresses, shared_store, worker_commands
from integration.errors import ConfigurationError
from tests.cli_runs import run_integration

# A stand-in worker: says it started, stops on SIGTERM saying so; `behaviour` runs first.
WORKER = """
import pathlib, signal, sys, time
here = pathlib.Path(sys.argv[1]); number = sys.argv[2]
def stop(*_):
    (here / f"stopped-{number}").write_text("")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
starts = here / f"starts-{number}"
starts.write_text(starts.read_text() + "x" if starts.exists() else "x")
%s
while True:
    time.sleep(0.05)
"""


def stand_ins(tmp_path: Path, *behaviours: str) -> list[list[str]]:
    return [[sys.executable, "-c", WORKER % b, str(tmp_path), str(i)] for i, b in enumerate(behaviours)]


def starts(tmp_path: Path, number: int) -> int:
    path = tmp_path / f"starts-{number}"
    return len(path.read_text()) if path.exists() else 0


def wait_until(condition: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def in_thread(supervisor: Supervisor) -> tuple[threading.Thread, list[int]]:
    code: list[int] = []
    thread = threading.Thread(target=lambda: code.append(supervisor.run()), daemon=True)
    thread.start()
    return thread, code


def test_sigterm_is_forwarded_to_every_worker_and_awaited(tmp_path: Path) -> None:
    supervisor = Supervisor(stand_ins(tmp_path, "", "", ""), [{}] * 3)
    thread, code = in_thread(supervisor)
    wait_until(lambda: all(starts(tmp_path, i) for i in range(3)))
    supervisor.stop()
    thread.join(timeout=30)
    assert code == [0]
    assert all((tmp_path / f"stopped-{i}").exists() for i in range(3))


def test_a_worker_that_dies_is_restarted_after_a_backoff_with_one_line(tmp_path: Path) -> None:
    dies_once = "if len(starts.read_text()) == 1: sys.exit(70)"
    supervisor = Supervisor(stand_ins(tmp_path, "", dies_once), [{}] * 2)
    with capture_logs() as logs:
        thread, code = in_thread(supervisor)
        wait_until(lambda: starts(tmp_path, 1) == 2)
        supervisor.stop()
        thread.join(timeout=30)
    assert code == [0] and starts(tmp_path, 0) == 1
    restarted = [line for line in logs if line["event"] == "worker ended unexpectedly; restarting"]
    assert len(restarted) == 1
    assert restarted[0] == {
        "event": "worker ended unexpectedly; restarting",
        "log_level": "warning",
        "worker": 1,
        "exit_code": 70,
        "killed_by": None,
        "restart_in_s": workers.FIRST_BACKOFF,
        "restarts": 1,
    }


def test_the_backoff_doubles_while_a_worker_keeps_dying(tmp_path: Path) -> None:
    supervisor = Supervisor(stand_ins(tmp_path, "import os; os.kill(os.getpid(), 9)"), [{}], first_backoff=0.1)
    with capture_logs() as logs:
        thread, _ = in_thread(supervisor)
        wait_until(lambda: starts(tmp_path, 0) >= 4)
        supervisor.stop()
        thread.join(timeout=30)
    waits = [line["restart_in_s"] for line in logs if line["event"].startswith("worker ended unexpectedly")]
    assert waits[:3] == [0.1, 0.2, 0.4]
    assert {line["killed_by"] for line in logs if "killed_by" in line} == {"SIGKILL"}


@pytest.mark.parametrize("code", [2, 3, 65, 66])
def test_a_worker_ending_for_a_cause_no_restart_mends_stops_all_with_its_code(tmp_path: Path, code: int) -> None:
    supervisor = Supervisor(stand_ins(tmp_path, "", f"sys.exit({code})"), [{}] * 2)
    with capture_logs() as logs:
        assert supervisor.run() == code
    assert (tmp_path / "stopped-0").exists() and starts(tmp_path, 1) == 1
    assert any(line["event"] == "worker ended; stopping every worker" and line["exit_code"] == code for line in logs)


def test_a_worker_deaf_to_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    deaf = "signal.signal(signal.SIGTERM, signal.SIG_IGN)"
    supervisor = Supervisor(stand_ins(tmp_path, deaf), [{}], stop_grace=0.5)
    with capture_logs() as logs:
        thread, code = in_thread(supervisor)
        wait_until(lambda: starts(tmp_path, 0) == 1)
        time.sleep(0.3)  # the stand-in has set its handler
        supervisor.stop()
        thread.join(timeout=30)
    assert code == [0]
    assert any(line["event"] == "worker did not stop in time; killed" for line in logs)


def test_a_worker_that_a_signal_ended_while_stopping_is_one_warning_not_a_clean_stop(tmp_path: Path) -> None:
    """A hang-up of the process group had killed every worker, and the supervisor said it stopped them cleanly."""
    dies = "signal.signal(signal.SIGTERM, signal.SIG_DFL)"  # ends by the signal itself, not by a clean stop
    supervisor = Supervisor(stand_ins(tmp_path, "", dies), [{}] * 2)
    with capture_logs() as logs:
        thread, code = in_thread(supervisor)
        wait_until(lambda: starts(tmp_path, 0) == 1 and starts(tmp_path, 1) == 1)
        time.sleep(0.3)  # the stand-ins have set their handlers
        supervisor.stop()
        thread.join(timeout=30)
    assert code == [0] and (tmp_path / "stopped-0").exists()
    unclean = [line for line in logs if line["event"] == "worker did not stop cleanly"]
    assert unclean == [
        {
            "event": "worker did not stop cleanly",
            "log_level": "warning",
            "worker": 1,
            "exit_code": -15,
            "killed_by": "SIGTERM",
        }
    ]


def test_each_worker_serves_its_health_on_the_base_port_plus_its_number() -> None:
    assert health_addresses("127.0.0.1:9464", 3) == ["127.0.0.1:9464", "127.0.0.1:9465", "127.0.0.1:9466"]
    assert health_addresses("[::1]:9464", 2) == ["[::1]:9464", "[::1]:9465"]
    assert health_addresses("127.0.0.1:0", 2) == ["127.0.0.1:0"] * 2  # each an ephemeral port
    assert health_addresses("", 2) == ["", ""]  # off stays off
    with pytest.raises(ConfigurationError, match="INTEGRATION_HEALTH_LISTEN=127.0.0.1:65535: 2 workers .* 65536"):
        health_addresses("127.0.0.1:65535", 2)
    with pytest.raises(ConfigurationError, match="INTEGRATION_HEALTH_LISTEN='9464' is not host:port"):
        health_addresses("9464", 2)
    with pytest.raises(ConfigurationError, match=r"INTEGRATION_HEALTH_LISTEN='\[::1' is not host:port"):
        health_addresses("[::1", 2)  # it read as host '[:' and port 1, and the workers got '[::2' (second attack)


def test_the_workers_are_this_command_as_worker_i_of_n() -> None:
    commands, envs = worker_commands(2, ["--log-level=DEBUG"], ["--flows", "discharge"], "127.0.0.1:9464")
    assert commands[1][1:] == [
        *("-m", "integration", "--log-level=DEBUG", "run"),
        *("--flows", "discharge", "--worker", "1/2"),
    ]
    assert [e["INTEGRATION_HEALTH_LISTEN"] for e in envs] == ["127.0.0.1:9464", "127.0.0.1:9465"]


def test_a_store_of_one_process_cannot_be_shared() -> None:
    with pytest.raises(ConfigurationError, match=":memory: store would be one store per process"):
        shared_store("sqlite:///:memory:")
    shared_store("sqlite:////var/lib/hjerterehab/audit.sqlite3")  # a file: its lock serialises the writers
    shared_store("postgresql://hjerterehab@db/hjerterehab")


@pytest.mark.parametrize(
    ("arguments", "dsn", "code", "said"),
    [
        (["run", "--processes", "2"], "sqlite:///:memory:", 3, "one store per process"),
        (["run", "--processes", "0"], "sqlite:///:memory:", 2, "--processes"),
        (["run", "--processes", "33"], "sqlite:///:memory:", 2, "--processes"),
        (["run", "--worker", "2/2"], "sqlite:///:memory:", 2, "i/N"),
    ],
    ids=["memory-store", "zero", "too-many", "worker-past-n"],
)
def test_run_refuses_what_cannot_work(arguments: list[str], dsn: str, code: int, said: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
    env |= {"INTEGRATION_AUDIT_DSN": dsn, "INTEGRATION_HEALTH_LISTEN": ""}
    done = run_integration(*arguments, env=env, text=True)
    assert done.returncode == code, done.stderr
    assert said in done.stderr and done.stderr.count("\n") == 1


@pytest.mark.parametrize("processes", ["1", "2"], ids=["lone", "supervisor"])
@pytest.mark.parametrize(
    ("arguments", "env", "code", "said"),
    [
        (["--flows", "DISCHARGE"], {}, 2, "Invalid value for '--flows': unknown flow(s) DISCHARGE; the flows: "),
        (["--flows", " , "], {}, 2, "Invalid value for '--flows': names no flow"),
        (
            [],
            {"INTEGRATION_HEALTH_LISTEN": "x"},
            3,
            "INTEGRATION_HEALTH_LISTEN='x' is not host:port with a port 0-65535",
        ),
        ([], {"INTEGRATION_HEALTH_LISTEN": "127.0.0.1:70000"}, 3, "INTEGRATION_HEALTH_LISTEN='127.0.0.1:70000' is not"),
    ],
    ids=["unknown-flow", "no-flow", "listen-no-port", "listen-port-too-big"],
)
def test_a_lone_run_and_the_supervisor_refuse_alike_naming_what_the_operator_typed(
    tmp_path: Path, processes: str, arguments: list[str], env: dict[str, str], code: int, said: str
) -> None:
    """An unknown flow on the command line is a usage error (2) as in `dlq list --flow` (it was 3, the README said
    2); a bad health address names INTEGRATION_HEALTH_LISTEN (the supervisor said `health_listen`)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
    clean |= {"INTEGRATION_AUDIT_DSN": f"sqlite:///{tmp_path / 'audit.sqlite3'}", "INTEGRATION_HEALTH_LISTEN": ""}
    clean |= {"INTEGRATION_BROKER_URL": "amqp://guest:guest@127.0.0.1:1/nowhere"} | env
    done = run_integration("run", "--processes", processes, *arguments, env=clean, text=True, timeout=60)
    assert done.returncode == code, done.stderr
    (line,) = done.stderr.splitlines()
    assert said in line and "health_listen" not in line


SUPERVISOR = """
import sys
from integration.adapters.workers import supervise
from tests.unit.test_workers import stand_ins
from pathlib import Path
sys.exit(supervise(stand_ins(Path(sys.argv[1]), "", ""), [{}] * 2))
"""


@pytest.mark.parametrize("how", ["SIGKILL", "SIGHUP"])
def test_workers_do_not_outlive_their_supervisor(tmp_path: Path, how: str) -> None:
    """A supervisor killed outright (the OOM killer, `kill -9`) or hung up on: its workers stop too, instead of
    consuming on unsupervised and holding their health ports (attack on issue #16)."""
    import signal
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    supervisor = subprocess.Popen([sys.executable, "-c", SUPERVISOR, str(tmp_path)], env=env)
    try:
        wait_until(lambda: all(starts(tmp_path, i) for i in range(2)))
        supervisor.send_signal(getattr(signal, how))
        supervisor.wait(timeout=30)
        wait_until(lambda: all((tmp_path / f"stopped-{i}").exists() for i in range(2)), timeout=30)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()


def test_a_signal_arriving_inside_the_first_handlers_event_set_does_not_deadlock() -> None:
    """The process group's SIGHUP and the supervisor's SIGTERM reach a worker together: the second handler runs
    in the same thread while the first is inside `Event.set`, holding the event's (non-reentrant) lock. Only the
    first signal may set the event (`first_signal`), else the worker hangs for ever, unstopped."""
    signalled: list[str] = []

    class Interrupted(threading.Event):
        def set(self) -> None:  # Event.set, with the second signal's handler run at its worst moment
            with self._cond:  # type: ignore[attr-defined]
                self._flag = True  # type: ignore[attr-defined]
                handler("SIGTERM")
                self._cond.notify_all()  # type: ignore[attr-defined]

    stopping = Interrupted()

    def handler(name: str) -> None:
        if first_signal(signalled, name):
            stopping.set()

    worker = threading.Thread(target=handler, args=("SIGHUP",), daemon=True)
    worker.start()
    worker.join(2)
    assert not worker.is_alive(), "the second signal's handler waited for the lock the first one holds"
    assert stopping.is_set() and signalled == ["SIGHUP", "SIGTERM"]
