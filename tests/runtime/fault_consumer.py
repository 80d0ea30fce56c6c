"""A consumer exactly like `integration run`, which kills itself (SIGKILL) the Nth time its processor reaches a
named point: "handled", "dead-lettered", "committed" or "published" (`integration.service.processor`).

    python -m tests.runtime.fault_consumer POINT N
"""

from __future__ import annotations

import os
import signal
import sys

from integration.bootstrap import run_consumers
from integration.config import Settings
from integration.log import configure_logging


def kill_at(point: str, nth: int):  # type: ignore[no-untyped-def]
    reached = 0

    def fault(where: str) -> None:
        nonlocal reached
        if where == point:
            reached += 1
            if reached >= nth:
                print(f"fault injection: SIGKILL at {point} #{reached}", file=sys.stderr, flush=True)
                os.kill(os.getpid(), signal.SIGKILL)

    return fault


if __name__ == "__main__":
    configure_logging("INFO")
    run_consumers(Settings.from_env(), None, fault=kill_at(sys.argv[1], int(sys.argv[2])))
