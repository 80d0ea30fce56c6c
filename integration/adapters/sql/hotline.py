"""The hotline requests' repository (`hotline_request`): advice requests waiting for the department's answer.

A request is opened when it is forwarded, answered when the department's answer comes back in its
thread, and noted once when it is reported overdue (`integration hotline pending`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from integration.adapters.sql.audit_state import StateDigests
from integration.adapters.sql.unit_of_work import UnitOfWork
from integration.domain.course import OpenRequest


@dataclass(frozen=True, slots=True)
class PendingRequest:
    request: OpenRequest
    received_at: datetime
    overdue_noted: bool


class HotlineRequests:
    def __init__(self, unit: UnitOfWork) -> None:
        self._unit = unit

    def requester(self, thread_id: str) -> str | None:
        """Who sent the first request of the thread (SOR or ydernummer), or None."""
        with self._unit.transaction(write=False) as cursor:
            cursor.execute(
                self._unit.sql(
                    "SELECT requester FROM hotline_request WHERE thread_id = ? ORDER BY received_at LIMIT 1"
                ),
                (thread_id,),
            )
            row = cursor.fetchone()
        return None if row is None else str(row[0])

    def open_requests(self) -> list[PendingRequest]:
        """The requests not answered yet, the oldest first."""
        with self._unit.transaction(write=False) as cursor:
            cursor.execute(
                self._unit.sql(
                    "SELECT request_id, thread_id, requester, department, patient, received_at, overdue_noted_at "
                    "FROM hotline_request WHERE answered_at IS NULL ORDER BY received_at"
                )
            )
            rows = cursor.fetchall()
        return [
            PendingRequest(OpenRequest(r[0], r[1], r[2], r[3], r[4]), datetime.fromisoformat(r[5]), r[6] is not None)
            for r in rows
        ]

    def open(self, cursor: Any, requests: Sequence[OpenRequest], stamp: str) -> StateDigests:
        """Insert the requests whose id is new; the digests of those inserted."""
        rows = [(r.request_id, r.thread_id, r.requester, r.department, r.patient, stamp, None, None) for r in requests]
        return {"hotline_request": self._unit.insert_new(cursor, "hotline_request", rows)} if requests else {}

    def answer(self, cursor: Any, threads: Sequence[str], stamp: str) -> StateDigests:
        """Mark the requests of these threads answered (those not answered yet); the threads' rows' digests."""
        if not threads:
            return {}
        cursor.executemany(
            self._unit.sql("UPDATE hotline_request SET answered_at = ? WHERE thread_id = ? AND answered_at IS NULL"),
            [(stamp, thread) for thread in threads],
        )
        return {"hotline_request": self._unit.rows_where(cursor, "hotline_request", "thread_id", set(threads))}

    def note_overdue(self, cursor: Any, request_ids: Sequence[str], stamp: str) -> dict[str, str]:
        """Note the requests as reported overdue; the digests of their rows as they now stand."""
        cursor.executemany(
            self._unit.sql("UPDATE hotline_request SET overdue_noted_at = ? WHERE request_id = ?"),
            [(stamp, r) for r in request_ids],
        )
        return self._unit.read_back(cursor, "hotline_request", {(r,) for r in request_ids})
