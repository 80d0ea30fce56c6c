"""The audit store: the hash-chained audit log and the state the flows keep, over SQL.

One implementation for both databases. The facade (`SqlAuditStore`) composes a unit of work (the
connection, its transactions and the dialect: `sqlite.py`, `postgres.py`; see `unit_of_work`) and one
repository per concern: the audit chain (`audit_log`), processed messages and failures (`processed`),
courses (`courses`), hotline requests (`hotline`), MedCom messages received (`received`) and our
messages awaiting acks (`outbound`). `record` writes what one delivery or batch changed through them,
in one transaction with the audit records that report it. The schema and its migrations: `schema`.

The tables that drive behaviour are covered by the chain (`audit_state`): each transaction's last
record carries the digests of the rows it left. With a signing key, every record gets an HMAC.

`SqlAuditStore` implements the service's Store port (integration.service.ports), whose records it
re-exports here for the modules that import them from the store.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Any, Protocol

from integration.adapters.sql import audit_state, schema
from integration.adapters.sql.audit_log import AuditLog, Signer
from integration.adapters.sql.audit_state import StateDigests
from integration.adapters.sql.courses import Courses
from integration.adapters.sql.evidence import ScratchReplay, StoreEvidence
from integration.adapters.sql.hl7_received import Hl7Receipts
from integration.adapters.sql.hotline import HotlineRequests, PendingRequest
from integration.adapters.sql.outbound import OutboundTracking, utc
from integration.adapters.sql.processed import ProcessedMessages
from integration.adapters.sql.received import ReceivedMessages
from integration.adapters.sql.schema import MIGRATIONS, SCHEMA_VERSION, StoreMissing
from integration.adapters.sql.unit_of_work import UnitOfWork
from integration.adapters.sql.watched import WatchedEpisodes
from integration.domain.course import Course, EarlierMessage, OutboundState, OutboundStatus, Stage, StateChanges
from integration.domain.missed_referral import WatchedEpisode
from integration.service import metrics
from integration.service.audit_chain import AuditEntry, AuditRecord
from integration.service.hl7_intake import Hl7Receipt
from integration.service.ports import (
    NO_CHANGES,
    EarlierDelivery,
    Failure,
    OutboundMessage,
    Processed,
    Resend,
    Store,
    StoredOutput,
)

__all__ = [
    "MIGRATIONS",
    "NO_CHANGES",
    "SCHEMA_VERSION",
    "AuditStore",
    "EarlierDelivery",
    "Failure",
    "OutboundMessage",
    "PendingRequest",
    "Processed",
    "Resend",
    "Signer",
    "SqlAuditStore",
    "StoreEvidence",
    "StoreMissing",
    "StoredOutput",
]


class AuditStore(Store, Protocol):
    """The Store port and what the operator's commands use besides: hotline requests pending, counts,
    the records for `audit verify` and a patient's trail."""

    def outbound_count(self, state: OutboundState) -> int: ...

    def open_requests(self) -> list[PendingRequest]: ...

    def watched_episodes(self) -> list[WatchedEpisode]: ...

    def note_overdue(self, request_ids: Sequence[str], at: datetime, entries: Sequence[AuditEntry] = ()) -> None: ...

    def records(self) -> Iterator[AuditRecord]: ...

    def evidence(self) -> AbstractContextManager[StoreEvidence]: ...

    def trail(self, patient: str) -> list[AuditRecord]: ...

    def records_after(self, seq: int) -> list[AuditRecord]: ...

    def close(self) -> None: ...


class SqlAuditStore:
    """The store over a unit of work; `sqlite.SqliteAuditStore` and `postgres.PostgresAuditStore` open one.

    `create` creates or migrates the schema (the service); without it the store must exist at this
    release's version (StoreMissing, ConfigurationError). Without `sign`, a log whose last record is
    signed is refused (ConfigurationError)."""

    def __init__(self, unit: UnitOfWork, create: bool = True, sign: Signer | None = None) -> None:
        self._unit = unit
        self._log = AuditLog(unit, sign)
        self._processed = ProcessedMessages(unit)
        self._courses = Courses(unit)
        self._hotline = HotlineRequests(unit)
        self._received = ReceivedMessages(unit)
        self._outbound = OutboundTracking(unit)
        self._hl7 = Hl7Receipts(unit)
        self._watched = WatchedEpisodes(unit)
        if create:
            schema.set_up(unit, self._log)
        else:
            schema.check_existing(unit)
        self._log.check_signing()

    def _transaction(self, write: bool = True) -> AbstractContextManager[Any]:
        return self._unit.transaction(write)

    # -- writing -------------------------------------------------------------------------------
    def record(
        self,
        entries: Sequence[AuditEntry],
        at: datetime,
        processed: Processed = (),
        changes: StateChanges = NO_CHANGES,
        resends: Sequence[Resend] = (),
        failures: Sequence[Failure] = (),
    ) -> None:
        """Append entries to the chain, mark messages processed, count failures and record state, in one
        transaction, under the chain lock; the last record carries the digests of the rows it left. Raises
        Conflict, keeping nothing, when a course this handle read has been changed since by another
        (`courses`: optimistic concurrency, decision 31)."""
        if not (entries or processed or changes != NO_CHANGES or resends or failures):
            return
        stamp = at.isoformat()
        with self._unit.transaction() as cursor:
            self._unit.lock_chain(cursor)
            state = self._record_state(cursor, changes, stamp)
            if processed:
                audit_state.merge(state, self._processed.mark(cursor, processed, stamp))
                audit_state.merge(state, self._outbound.track(cursor, processed, utc(at)))
            audit_state.merge(state, self._processed.count_failures(cursor, failures, stamp))
            audit_state.merge(state, self._received.save(cursor, changes.received, stamp))
            audit_state.merge(state, self._outbound.settle(cursor, changes.acks, resends, stamp, utc(at)))
            audit_state.merge(state, self._outbound.stop(cursor, changes.stopped, stamp))
            self._log.append(cursor, entries, stamp, state)
        # Committed (the transaction ended without an error); state alone is one "state-changed" record.
        self._courses.recorded({c.patient for c in changes.courses})
        metrics.AUDIT_RECORDS.inc(len(entries) or int(bool(state)))

    def _record_state(self, cursor: Any, changes: StateChanges, stamp: str) -> StateDigests:
        """The courses and hotline requests a flow changed; the digests of their rows."""
        state = self._courses.save(cursor, changes.courses, stamp)
        audit_state.merge(state, self._hotline.open(cursor, changes.opened, stamp))
        audit_state.merge(state, self._hotline.answer(cursor, changes.answered, stamp))
        audit_state.merge(state, self._watched.save(cursor, changes.watched, stamp))
        audit_state.merge(state, self._watched.unwatch(cursor, changes.unwatched, stamp))
        audit_state.merge(state, self._watched.withdraw_patients(cursor, changes.stopped, stamp))
        audit_state.merge(state, self._watched.settle(cursor, changes.discharges, stamp))
        return state

    def note_overdue(self, request_ids: Sequence[str], at: datetime, entries: Sequence[AuditEntry] = ()) -> None:
        """Note requests as reported overdue, with the audit entries that report them, in one transaction."""
        stamp = at.isoformat()
        with self._unit.transaction() as cursor:
            self._unit.lock_chain(cursor)
            digests = self._hotline.note_overdue(cursor, request_ids, stamp)
            self._log.append(cursor, entries, stamp, {"hotline_request": digests} if digests else {})
        metrics.AUDIT_RECORDS.inc(len(entries) or int(bool(digests)))

    def record_hl7_receipt(self, receipt: Hl7Receipt | None, entries: Sequence[AuditEntry], at: datetime) -> None:
        """The MLLP listener's audit records, with the receipt of a message it published (None for a message
        it refused or answered again), in one transaction."""
        stamp = at.isoformat()
        with self._unit.transaction() as cursor:
            self._unit.lock_chain(cursor)
            state = self._hl7.save(cursor, receipt, stamp) if receipt is not None else {}
            self._log.append(cursor, entries, stamp, state)
        metrics.AUDIT_RECORDS.inc(len(entries) or int(bool(state)))

    # -- reading -------------------------------------------------------------------------------
    def hl7_receipt(self, sending_application: str, sending_facility: str, control_id: str) -> Hl7Receipt | None:
        return self._hl7.receipt(sending_application, sending_facility, control_id)

    def processed(self, flow: str, message_id: str) -> list[StoredOutput] | None:
        earlier = self.deliveries([(flow, message_id)]).get((flow, message_id))
        return list(earlier.outputs) if earlier and earlier.processed else None

    def deliveries(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], EarlierDelivery]:
        return self._processed.deliveries(keys)

    def received(self, header_id: str) -> EarlierMessage | None:
        return self._received.received(header_id)

    def bundle_header(self, bundle_id: str) -> str | None:
        return self._received.bundle_header(bundle_id)

    def outbound(self, header_id: str) -> OutboundStatus | None:
        return self._outbound.outbound(header_id)

    def outbound_messages(
        self,
        states: Sequence[OutboundState],
        sent_before: datetime | None = None,
        limit: int | None = None,
        bodies: bool = True,
    ) -> list[OutboundMessage]:
        return self._outbound.outbound_messages(states, sent_before, limit, bodies)

    def outbound_sent(self, header_ids: Sequence[str], bodies: bool = True) -> dict[str, OutboundMessage]:
        return self._outbound.outbound_sent(header_ids, bodies)

    def outbound_count(self, state: OutboundState) -> int:
        return self._outbound.outbound_count(state)

    def course(self, patient: str) -> Course | None:
        return self._courses.course(patient)

    def courses_at(self, stages: Sequence[Stage]) -> list[Course]:
        return self._courses.courses_at(stages)

    def requester(self, thread_id: str) -> str | None:
        return self._hotline.requester(thread_id)

    def open_requests(self) -> list[PendingRequest]:
        return self._hotline.open_requests()

    def watched_episodes(self) -> list[WatchedEpisode]:
        """The discharges home still waiting for their discharge event (neither matched nor cancelled)."""
        return self._watched.open_episodes()

    def watched_episode(self, patient: str, episode: str) -> WatchedEpisode | None:
        return self._watched.episode(patient, episode)

    def records(self) -> Iterator[AuditRecord]:
        """Every record in chain order, read a chunk at a time (`AuditLog.records`)."""
        return self._log.records()

    @contextmanager
    def evidence(self) -> Iterator[StoreEvidence]:
        """What `audit verify` examines, from one snapshot (the service may be writing), streamed while the
        block lasts; the chain's replayed state meanwhile in a scratch file (`evidence.py`)."""
        with self._unit.transaction(write=False) as cursor:
            self._unit.snapshot(cursor)
            replay = ScratchReplay()
            try:
                yield StoreEvidence(self._unit, cursor, replay)
            finally:
                replay.close()

    def head(self) -> tuple[int, str]:
        return self._log.head()

    def trail(self, patient: str) -> list[AuditRecord]:
        return self._log.rows("WHERE patient = ?", (patient,))

    def records_after(self, seq: int) -> list[AuditRecord]:
        """The records appended after record `seq`, in chain order."""
        return self._log.rows("WHERE seq > ?", (seq,))

    def close(self) -> None:
        self._unit.close()
