"""`integration demo` stopped by SIGTERM (`kill`, `timeout`, `docker stop`) or SIGHUP (the terminal closed)
cleans up as Ctrl-C does (attack on #14, item 10): its vhost leaves the shared broker and its temporary store
(sample patients, the board's users) leaves the disk. With the board held the exit is 0 after "stopping the
board", as after Ctrl-C; during the scripted run it is 1, "error: aborted", as after Ctrl-C."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.runtime.broker_helpers import consumer_env
from tests.runtime.conftest import rabbitmqctl


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Demo:
    """`integration demo ARGS` as a child process, its output read line by line as it comes."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "integration", "demo", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, start: str, seconds: float = 120) -> str:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if line.startswith(start):
                return line
        raise AssertionError(f"no line starting {start!r} in {self.lines}")

    def stop(self, signum: int) -> tuple[int, str]:
        """Send `signum`, wait for the end: (exit code, the rest of stdout + stderr)."""
        self.process.send_signal(signum)
        try:
            rest, err = self.process.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        time.sleep(0.2)  # the reader thread has the rest of stdout: collect it
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return self.process.returncode, "\n".join(self.lines) + "\n" + (rest or "") + (err or "")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def _own_vhost(broker_line: str) -> str:
    assert "/hjerterehab-demo-" in broker_line, broker_line
    return broker_line.split("vhost ")[1].split()[0]


def _vhosts() -> list[str]:
    return rabbitmqctl("list_vhosts", "--silent").split()


def _left_behind(own: str) -> bool:
    """Whether the demo's vhost is still there; removed here if so (a failing test leaves nothing on the
    shared broker)."""
    if own not in _vhosts():
        return False
    rabbitmqctl("delete_vhost", own)
    return True


@pytest.fixture
def demo_env(vhost: str, audit_dsn: str, tmp_path: Path) -> tuple[dict[str, str], Path]:
    """The demo's environment, its temporary folder under a TMPDIR of the test's own (to see it go)."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    return consumer_env(vhost, audit_dsn) | {"TMPDIR": str(scratch)}, scratch


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_to_the_demo_holding_its_board_removes_its_vhost_and_store(
    demo_env: tuple[dict[str, str], Path], signum: int
) -> None:
    env, scratch = demo_env
    port = _free_port()
    demo = Demo(["--board", "--board-listen", f"127.0.0.1:{port}"], env)
    own = ""
    try:
        own = _own_vhost(demo.wait_for("broker: "))
        demo.wait_for("board: ")
        assert own in _vhosts()
        assert [p.name for p in scratch.iterdir() if p.name.startswith("hjerterehab-demo-")], "no temporary store"
        code, output = demo.stop(signum)
    finally:
        demo.kill()
        left = bool(own) and _left_behind(own)
    assert not left, f"vhost {own} left on the broker: {demo.lines}"
    assert code == 0, output  # as after Ctrl-C: the board was the demo's end
    assert "stopping the board" in output and f"vhost {own} removed" in output, output
    assert list(scratch.iterdir()) == [], "the demo's temporary store is left behind"
    assert "Traceback" not in output


def test_sigterm_during_the_scripted_demo_removes_its_vhost_and_store(demo_env: tuple[dict[str, str], Path]) -> None:
    env, scratch = demo_env
    demo = Demo(["--no-board"], env)
    own = ""
    try:
        own = _own_vhost(demo.wait_for("broker: "))
        code, output = demo.stop(signal.SIGTERM)
    finally:
        demo.kill()
        left = bool(own) and _left_behind(own)
    assert not left, f"vhost {own} left on the broker: {demo.lines}"
    assert code == 1 and "error: aborted" in output, output  # as after Ctrl-C in the same place
    assert list(scratch.iterdir()) == [], "the demo's temporary store is left behind"
    assert "Traceback" not in output


def test_the_signals_are_given_back_after_the_demo() -> None:
    from integration.cli.demo import STOPPING_SIGNALS, _stopped_like_ctrl_c

    before = [signal.getsignal(number) for number in STOPPING_SIGNALS]
    with _stopped_like_ctrl_c(), pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)  # the handler raises here
    assert [signal.getsignal(number) for number in STOPPING_SIGNALS] == before


def test_a_demo_whose_board_port_is_taken_says_so_before_it_runs(demo_env: tuple[dict[str, str], Path]) -> None:
    """The attack's second demo on a taken 8080 ran the whole demo, then said the board could not listen."""
    env, scratch = demo_env
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "integration", "demo", "--board", "--board-listen", f"127.0.0.1:{port}"],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 3, done.stderr
    assert done.stdout == ""  # no vhost made, no sample sent
    assert done.stderr.startswith(f"error: configuration: --board-listen 127.0.0.1:{port} cannot be bound (")
    assert done.stderr.count("\n") == 1
    assert list(scratch.iterdir()) == []
