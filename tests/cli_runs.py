"""The suite's runs of the `integration` command, as an operator's terminal would show them: every run's
stdout and stderr are appended to `cli-output.log` under pytest's base temp dir, which the session's end
scans for CPR numbers along with every other log (tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from integration.log import one_line

CLI_OUTPUT = "cli-output.log"
# Commands whose stdout is the outgoing message itself, which names the patient by design (as a message body
# does): only their stderr is logged.
PRINTS_MESSAGES = frozenset({"transform"})
_session_log: list[Path] = []  # set once per session by tests/conftest.py


def log_cli_output_to(path: Path) -> None:
    _session_log[:] = [path]


def run_logged(
    command: Sequence[str], log: Path | None = None, stdout_is_data: bool = False, **kwargs: Any
) -> subprocess.CompletedProcess[Any]:
    """`subprocess.run(command, capture_output=True, **kwargs)`, its output appended to `log` (default: the
    session's cli-output.log); stdout left out when it is data, not output. The command line itself is
    masked: a test may pass a CPR number as input."""
    if log is None:
        if not _session_log:
            raise RuntimeError("no cli-output.log: run_logged is for the test session (tests/conftest.py sets it)")
        log = _session_log[0]
    kwargs.setdefault("timeout", 120)
    done = subprocess.run(list(command), capture_output=True, **kwargs)
    with log.open("a", encoding="utf-8") as out:
        out.write(f"--- {one_line(' '.join(command[1:]), 200)} (exit {done.returncode})\n")
        for stream in (done.stderr,) if stdout_is_data else (done.stdout, done.stderr):
            text = stream.decode("utf-8", "replace") if isinstance(stream, bytes) else stream or ""
            out.write(text if text.endswith("\n") or not text else text + "\n")
    return done


def run_integration(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """`python -m integration ARGS`, captured and logged (keyword arguments as for subprocess.run)."""
    printed = bool(args) and args[0] in PRINTS_MESSAGES
    return run_logged([sys.executable, "-m", "integration", *args], stdout_is_data=printed, **kwargs)


def store_env(dsn: str) -> dict[str, str]:
    """The environment for a command that needs only the audit store at `dsn`: no INTEGRATION_* of the caller's,
    a broker nobody listens at, no health endpoint."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
    return clean | {
        "INTEGRATION_AUDIT_DSN": dsn,
        "INTEGRATION_BROKER_URL": "amqp://guest:guest@127.0.0.1:1/nowhere",
        "INTEGRATION_HEALTH_LISTEN": "",
    }
