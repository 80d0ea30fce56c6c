"""Anchoring the audit chain outside the database: the consumer publishes the chain's head.

At start, every `every` while it runs (only when the head moved), and once more when it stops,
the head (seq, hash) goes to the structured log as one `audit anchor` line, and, when an anchor
file is configured, as a JSON line appended to it (opened for appending, fsynced). The log is
shipped off the host; the file belongs on storage the database's owner cannot rewrite (a file
made append-only with `chattr +a`, a mount of the log host). `integration audit verify --anchor`
then finds every anchored record still in the chain, or says which is gone or rewritten.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

from integration.config import Settings
from integration.errors import Transient
from integration.log import one_line
from integration.service.audit_evidence import ANCHOR_EVENT, anchor_line
from integration.service.ports import Store

log = structlog.get_logger("integration.audit_anchor")


class AnchorJob:
    """Publish the chain head when due and moved; call it from the consumer's periodic hook."""

    def __init__(
        self,
        store: Store,
        file: Path | None,
        every: timedelta,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._file = file
        self._every = every.total_seconds()
        self._clock = clock
        self._due = 0.0
        self._published: tuple[int, str] | None = None
        self._unwritten = False  # the file missed the last head: write it as soon as it can be

    def __call__(self, _bus: object = None) -> tuple[int, str] | None:
        """The head published now, if it was due and moved; else None. Transient when the store is down."""
        if self._clock() < self._due:
            return None
        published = self.publish()
        self._due = self._clock() + self._every
        return published

    def publish(self) -> tuple[int, str] | None:
        """Publish the head now, if it moved since the last time (an empty log has nothing to anchor)."""
        head = self._store.head()
        if head[0] == 0 or (head == self._published and not self._unwritten):
            return None
        if head != self._published:
            log.info(ANCHOR_EVENT, seq=head[0], hash=head[1])
        self._published = head
        self._unwritten = not self._append(head)
        return head

    def last(self) -> None:
        """The head as the consumer stops; a store already gone is logged, not raised."""
        try:
            self.publish()
        except Transient as exc:
            log.warning("audit head not anchored at stop", reason=one_line(exc))

    def _append(self, head: tuple[int, str]) -> bool:
        if self._file is None:
            return True
        line = anchor_line(head[0], head[1], datetime.now(UTC).isoformat(timespec="seconds"))
        try:
            descriptor = os.open(self._file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(descriptor, line)
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        except OSError as exc:
            log.error("anchor file not written; retried at the next anchor", file=str(self._file), reason=str(exc))
            return False
        return True


def anchor_job(settings: Settings, store: Store) -> AnchorJob:
    return AnchorJob(store, settings.audit_anchor_file, timedelta(minutes=settings.audit_anchor_minutes))
