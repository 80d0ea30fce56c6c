"""Unanswered hotline requests past their limit: found (the domain's rule, `overdue_hours`) and noted once.

`integration hotline pending` prints what `overdue_requests` returns; the deciding is here, not in the CLI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import structlog

from integration.domain.course import OpenRequest
from integration.domain.hotline import Hotline, overdue_hours
from integration.service.audit_chain import AuditEntry

log = structlog.get_logger("integration.hotline")


class Pending(Protocol):
    """An unanswered request as the store holds it."""

    request: OpenRequest
    received_at: datetime
    overdue_noted: bool


class OverdueStore(Protocol):
    def open_requests(self) -> Sequence[Any]: ...

    def note_overdue(self, request_ids: list[str], at: datetime, entries: list[AuditEntry]) -> None: ...


@dataclass(frozen=True, slots=True)
class Overdue:
    """`requests`: (request, opening hours waited) for each overdue one; `forecast`: overdue ones not yet
    noted were left unnoted because `moment` is after now (a forecast is not an event)."""

    requests: list[tuple[Pending, float]]
    forecast: bool


def overdue_requests(
    store: OverdueStore, hotlines: Mapping[str, Hotline], moment: datetime, limit: int, now: datetime
) -> Overdue:
    """The requests overdue at `moment` after `limit` opening hours. Each one is logged and audited
    (`hotline-overdue`) the first time it is found overdue, at `now` — unless `moment` is after `now`.
    Raises what the store raises (Transient, StoreDamaged)."""
    overdue = []
    for pending in store.open_requests():
        age = overdue_hours(hotlines, pending.request.department, pending.received_at, moment, limit)
        if age is not None:
            overdue.append((pending, age))
    fresh = [p for p, _ in overdue if not p.overdue_noted]
    if fresh and moment <= now:  # overdue then is overdue now
        _note(store, fresh, now)
    return Overdue(overdue, forecast=bool(fresh) and moment > now)


def _note(store: OverdueStore, fresh: list[Pending], now: datetime) -> None:
    entries = [
        AuditEntry(
            "hotline-overdue",
            "hotline",
            p.request.request_id,
            {"department": p.request.department, "requester": p.request.requester},
            patient=p.request.patient,
        )
        for p in fresh
    ]
    store.note_overdue([p.request.request_id for p in fresh], now, entries)
    for p in fresh:
        log.warning(
            "hotline request overdue",
            request_id=p.request.request_id,
            department=p.request.department,
            requester=p.request.requester,
        )
