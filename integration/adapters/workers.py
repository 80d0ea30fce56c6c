"""Competing consumers on one host: `integration run --processes N` supervises N worker processes, each the
whole consumer (`integration run --worker i/N`) on the same queues and the same audit store (decision 31).

The supervisor starts the workers as processes of the same command, so that each configures itself, logs and
ends exactly as a lone `run` does (its exit codes, its one-line errors). Each worker serves its health
endpoints on the base port plus its number (`INTEGRATION_HEALTH_LISTEN` 127.0.0.1:9464 → workers on 9464,
9465, …; port 0: each an ephemeral port; empty: none). Only worker 0 runs the periodic jobs (the resend of
unacknowledged messages, the chain's anchor), so that a message is not resent once per worker.

- SIGTERM, SIGINT or SIGHUP is forwarded (as SIGTERM) to every worker, which finishes the batch in hand; the
  supervisor waits for all of them (`STOP_GRACE` seconds, then SIGKILL: unacked messages go back to their
  queues) and exits 0. A worker that ended otherwise meanwhile (a signal of its own) is one warning line. (A
  worker stops as for SIGTERM on SIGHUP too: a hang-up of the process group reaches every worker at once.)
- A worker that ends while nobody asked it to is started again after a backoff (1 s doubling to 30 s; back
  to 1 s once a worker has run for a minute), with one log line naming it, its exit code and the wait —
  unless its exit code says that starting it again cannot help (`FATAL`: usage, configuration, the store
  damaged or missing): then every worker is stopped and the supervisor exits with that code.

The audit store must be one that every worker shares: PostgreSQL, or a SQLite file (its write lock serialises
the chain's appends and the courses' version checks, as it does for any processes sharing the file); a SQLite
`:memory:` store would be one store per process and is refused (ConfigurationError, exit 3).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType

import structlog

from integration.adapters.health import HEALTH_LISTEN, MAX_PORT, health_address
from integration.errors import ConfigurationError

log = structlog.get_logger("integration.workers")

MAX_PROCESSES = 32
STOP_GRACE = 90.0  # seconds a worker has to finish its batch after SIGTERM before it is killed
FIRST_BACKOFF, MAX_BACKOFF = 1.0, 30.0  # seconds before a worker that ended is started again
STEADY = 60.0  # seconds a worker must have run for its next restart to wait FIRST_BACKOFF again
POLL = 0.2  # seconds between looks at the workers
# Exit codes of a worker (cli/errors.py) that starting it again cannot mend: usage, configuration, the store
# damaged, no store. Any other end (69 unavailable, 70 a bug, a signal such as the OOM killer's) is restarted.
FATAL = {2: "usage", 3: "configuration", 65: "audit store damaged", 66: "no audit store"}


def _die_with_the_supervisor() -> None:
    """In a worker, before it runs: the kernel sends it SIGTERM when the supervisor dies, however it dies (SIGKILL,
    the OOM killer), so that no worker consumes on without a supervisor (Linux `PR_SET_PDEATHSIG`; elsewhere
    nothing). Runs between fork and exec: no logging, no locks."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return


PR_SET_PDEATHSIG = 1  # prctl(2)


def shared_store(dsn: str) -> None:
    """Raise ConfigurationError unless every worker process would open the same audit store."""
    if dsn.startswith("sqlite:///") and dsn.removeprefix("sqlite:///") in ("", ":memory:"):
        raise ConfigurationError(
            "--processes needs an audit store the processes share (PostgreSQL, or a SQLite file): "
            "a SQLite :memory: store would be one store per process, each with a chain of its own"
        )


def health_addresses(listen: str, count: int) -> list[str]:
    """Each worker's health address: the base port plus the worker's number ("" stays off, port 0 stays 0).
    ConfigurationError naming INTEGRATION_HEALTH_LISTEN, as a lone `run` does (`health.health_address`), when
    the base is not host:port or the last port would pass 65535."""
    if not listen:
        return [""] * count
    _, port = health_address(listen)
    host = listen.rpartition(":")[0]  # as given: an IPv6 address keeps its brackets
    if port == 0:
        return [listen] * count
    if port + count - 1 > MAX_PORT:
        raise ConfigurationError(
            f"{HEALTH_LISTEN}={listen}: {count} workers need ports up to {port + count - 1}, past {MAX_PORT}"
        )
    return [f"{host}:{port + i}" for i in range(count)]


@dataclass
class _Worker:
    number: int
    command: list[str]
    env: dict[str, str]
    backoff: float  # seconds before it is started again if it ends now
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restarts: int = 0
    due: float = 0.0  # monotonic time at which an ended worker is started again

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, env=self.env, preexec_fn=_die_with_the_supervisor)  # noqa: PLW1509
        self.started = time.monotonic()

    def ended(self) -> int | None:
        return None if self.process is None else self.process.poll()


def first_signal(signalled: list[str], name: str) -> bool:
    """Note `name` in `signalled`; whether it is the first signal noted. Safe in a handler that another signal's
    handler interrupts: a handler that finds the list empty before it appends is the only one to act, and one
    that interrupts it after its append finds the list not empty (a signal handler may not take a lock that an
    interrupted handler of the same thread holds, such as a threading.Event's)."""
    first = not signalled
    signalled.append(name)
    return first


@dataclass
class Supervisor:
    """N worker processes, kept running until a signal; `run` returns the exit code."""

    commands: Sequence[list[str]]
    envs: Sequence[Mapping[str, str]]
    stop_grace: float = STOP_GRACE
    first_backoff: float = FIRST_BACKOFF
    _stopping: threading.Event = field(default_factory=threading.Event)
    _signalled: list[str] = field(default_factory=list)

    def stop(self, signum: int = signal.SIGTERM, _frame: FrameType | None = None) -> None:
        """Ask every worker to stop (a signal handler, or a test)."""
        if first_signal(self._signalled, signal.Signals(signum).name):  # a second one must not take the lock
            self._stopping.set()

    def run(self) -> int:
        pairs = enumerate(zip(self.commands, self.envs, strict=True))
        workers = [_Worker(i, list(command), dict(env), self.first_backoff) for i, (command, env) in pairs]
        for worker in workers:
            worker.start()
        log.info("workers started", workers=len(workers), pids=[w.process.pid for w in workers if w.process])
        code = self._watch(workers)
        self._stop_all(workers)
        log.info("workers stopped", signal=self._signalled[0] if self._signalled else None, exit_code=code)
        return code

    def _watch(self, workers: list[_Worker]) -> int:
        """Restart what ends until a signal (0) or a worker's fatal exit (its code)."""
        while not self._stopping.wait(POLL):
            now = time.monotonic()
            for worker in workers:
                ended = worker.ended()
                if worker.process is None and now >= worker.due:
                    worker.start()
                elif ended is not None:
                    if ended in FATAL:
                        cause = FATAL[ended]
                        log.error(
                            "worker ended; stopping every worker", worker=worker.number, exit_code=ended, cause=cause
                        )
                        return ended
                    self._schedule_restart(worker, ended, now)
        return 0

    def _schedule_restart(self, worker: _Worker, code: int, now: float) -> None:
        if now - worker.started >= STEADY:
            worker.backoff = self.first_backoff
        worker.process, worker.due = None, now + worker.backoff
        worker.restarts += 1
        log.warning(
            "worker ended unexpectedly; restarting",
            worker=worker.number,
            exit_code=code,
            killed_by=_killed_by(code),
            restart_in_s=worker.backoff,
            restarts=worker.restarts,
        )
        worker.backoff = min(worker.backoff * 2, MAX_BACKOFF)

    def _stop_all(self, workers: list[_Worker]) -> None:
        running = [w for w in workers if w.process is not None and w.process.poll() is None]
        for worker in running:
            assert worker.process is not None
            worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace
        killed = set()
        for worker in running:
            assert worker.process is not None
            try:
                worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker did not stop in time; killed", worker=worker.number, grace_s=self.stop_grace)
                worker.process.kill()
                worker.process.wait()
                killed.add(worker.number)
        for worker in workers:  # the fatal end and the kill above have their lines; any other is not a clean stop
            code = worker.ended()
            if code and code not in FATAL and worker.number not in killed:
                log.warning(
                    "worker did not stop cleanly", worker=worker.number, exit_code=code, killed_by=_killed_by(code)
                )


def _killed_by(code: int) -> str | None:
    """The signal that ended a process, from its return code (-N), or None."""
    return signal.Signals(-code).name if code < 0 and -code in signal.valid_signals() else None


def supervise(commands: Sequence[list[str]], envs: Sequence[Mapping[str, str]]) -> int:
    """Run the workers until SIGTERM, SIGINT or SIGHUP (forwarded to each); the exit code (module docstring)."""
    supervisor = Supervisor(commands, envs)
    signal.signal(signal.SIGTERM, supervisor.stop)
    signal.signal(signal.SIGINT, supervisor.stop)
    signal.signal(signal.SIGHUP, supervisor.stop)  # the terminal gone: stop the workers as for SIGTERM
    return supervisor.run()


def worker_commands(
    count: int, global_options: Sequence[str], run_options: Sequence[str], listen: str
) -> tuple[list[list[str]], list[dict[str, str]]]:
    """The command line and environment of each of `count` workers: this command's own, as `run --worker i/N`,
    with its health address (`health_addresses`)."""
    base = [sys.executable, "-m", "integration", *global_options, "run", *run_options]
    addresses = health_addresses(listen, count)
    commands = [[*base, "--worker", f"{i}/{count}"] for i in range(count)]
    envs = [{**os.environ, HEALTH_LISTEN: address} for address in addresses]
    return commands, envs
