"""A consumer exactly like `integration run`, which kills itself (SIGKILL) the Nth time its processor reaches a
named point: "handled", "dead-lettered", "committed", "published" or "recorded" (`integration.service.processor`)
— or, at "mid-window", the Nth time a confirm window of two or more messages is published: after its first half
is on the broker and confirmed, before the rest is sent (`integration.adapters.rabbitmq.ConfirmWindow`).

    python -m tests.runtime.fault_consumer POINT N
"""

from __future__ import annotations

import os
import signal
import sys

from integration.adapters import rabbitmq
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


def kill_mid_window(nth: int) -> None:
    """Make the Nth confirm window of two or more messages die halfway: the real publish of its first half, then
    SIGKILL."""
    real = rabbitmq.ConfirmWindow.publish_all
    reached = 0

    def publish_all(window, publications, properties):  # type: ignore[no-untyped-def]
        nonlocal reached
        if len(publications) >= 2:
            reached += 1
            if reached >= nth:
                half = len(publications) // 2
                real(window, publications[:half], properties[:half])
                print(f"fault injection: SIGKILL at mid-window #{reached}", file=sys.stderr, flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
        real(window, publications, properties)

    rabbitmq.ConfirmWindow.publish_all = publish_all  # type: ignore[method-assign]


if __name__ == "__main__":
    configure_logging("INFO")
    point, nth = sys.argv[1], int(sys.argv[2])
    if point == "mid-window":
        kill_mid_window(nth)
    run_consumers(Settings.from_env(), None, fault=kill_at(point, nth))
