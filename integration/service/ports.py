"""The ports: the Bus (publishing with a broker confirm) and the Store (what the service layer — processor,
resend job, anchor job — asks of the audit store), and the records that cross them.

The SQL store (`integration.adapters.sql.store.SqlAuditStore`, on SQLite or PostgreSQL) implements it;
the service names only this port, never the adapter. Everything a call writes (audit entries, messages
processed, failures counted, state changed, resends) goes in one transaction: all of it or none.
Errors any call may raise (integration.errors): `Transient` for an outage (the consumer waits for the
database), `StoreRefused` for a write the database refuses for what it holds, `StoreDamaged` for a
store that is not what it should be.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from integration.domain.course import Course, EarlierMessage, OutboundState, OutboundStatus, Stage, StateChanges
from integration.flows.results import FHIR_JSON
from integration.service.audit_chain import AuditEntry

NO_CHANGES = StateChanges()


@dataclass(frozen=True, slots=True)
class Publication:
    """One message to publish, persistent and mandatory, with our broker user as its AMQP user-id."""

    exchange: str
    routing_key: str
    body: bytes
    message_id: str
    headers: Mapping[str, Any] | None = None
    content_type: str = FHIR_JSON


class Bus(Protocol):
    """Publishing with a broker confirm: returns when the broker has the message, else raises Transient.

    `publish_all` publishes a window of messages without waiting for each confirm, then waits for all of them
    (decision 29): it returns when every one is confirmed, and raises `Unconfirmed` (a Transient) naming the
    positions that were confirmed when any was refused, returned unroutable or not confirmed in time;
    ConnectionLost when the connection went (nothing is then known to be confirmed)."""

    def publish_all(self, publications: Sequence[Publication]) -> None: ...

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        message_id: str,
        headers: Mapping[str, Any] | None = None,
        content_type: str = FHIR_JSON,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class StoredOutput:
    """One outgoing message exactly as first published, for byte-identical republishing."""

    exchange: str
    routing_key: str
    message_id: str
    body: bytes
    content_type: str = FHIR_JSON
    awaits_ack: str | None = None  # a MedCom message of ours: its MessageHeader id, tracked until acked
    patient: str | None = None  # whom a tracked message is about, for the audit records of its acks and resends

    def as_json(self) -> dict[str, Any]:
        return {
            "exchange": self.exchange,
            "routingKey": self.routing_key,
            "messageId": self.message_id,
            "contentType": self.content_type,
            "body": self.body.decode("utf-8"),
            "awaitsAck": self.awaits_ack,
            "patient": self.patient,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> StoredOutput:
        return cls(
            doc["exchange"],
            doc["routingKey"],
            doc["messageId"],
            doc["body"].encode("utf-8"),
            doc.get("contentType", FHIR_JSON),
            doc.get("awaitsAck"),
            doc.get("patient"),
        )


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """One of our MedCom messages waiting for its ack, as last sent."""

    header_id: str
    flow: str
    output: StoredOutput
    first_sent_at: datetime
    last_sent_at: datetime
    resends: int
    state: OutboundState
    settled_at: datetime | None = None  # when its ack came (acknowledged, failed) or it was given up on

    @property
    def patient(self) -> str | None:
        return self.output.patient


@dataclass(frozen=True, slots=True)
class Resend:
    """A resend of one of our messages (`body` set) or the decision to stop resending (`body` None)."""

    header_id: str
    body: bytes | None


Processed = Sequence[tuple[str, str, str, Sequence[StoredOutput]]]  # (flow, key, body SHA-256, outputs)


@dataclass(frozen=True, slots=True)
class Failure:
    """Our side failed on a delivery (flow, key): counted, so attempts never depend on a header."""

    flow: str
    key: str
    error: str


@dataclass(frozen=True, slots=True)
class EarlierDelivery:
    """What the store knows of a key (flow, message-id or body hash) before a delivery is processed."""

    processed: bool
    digest: str | None = None  # the processed message's body SHA-256 (None: processed before hashes were kept)
    at: str | None = None  # when it was processed
    outputs: tuple[StoredOutput, ...] = ()
    failures: int = 0  # how often our side failed on it


class Store(Protocol):
    """What the service layer uses of the audit store."""

    def deliveries(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], EarlierDelivery]:
        """What is known of each key (flow, message-id or body hash); keys never seen are left out."""
        ...

    def record(
        self,
        entries: Sequence[AuditEntry],
        at: datetime,
        processed: Processed = (),
        changes: StateChanges = NO_CHANGES,
        resends: Sequence[Resend] = (),
        failures: Sequence[Failure] = (),
    ) -> None:
        """Append `entries` to the audit chain, mark messages processed (with their outputs, tracking
        those that await an ack), count failures, apply state changes and resends: one transaction."""
        ...

    def received(self, header_id: str) -> EarlierMessage | None:
        """The MedCom message received earlier under this MessageHeader id (its bundles, contents, our ack)."""
        ...

    def bundle_header(self, bundle_id: str) -> str | None:
        """The MessageHeader id of the MedCom Bundle received earlier under this id, if any."""
        ...

    def outbound(self, header_id: str) -> OutboundStatus | None:
        """Where one of our MedCom messages stands (awaiting its ack, acknowledged, failed, gave up)."""
        ...

    def outbound_messages(
        self,
        states: Sequence[OutboundState],
        sent_before: datetime | None = None,
        limit: int | None = None,
        bodies: bool = True,
    ) -> list[OutboundMessage]:
        """Our MedCom messages in these states (last sent before `sent_before`), the longest waiting first;
        without `bodies`, each output's body is b"" (for counts and deadlines: memory that does not grow with
        the messages' size)."""
        ...

    def outbound_sent(self, header_ids: Sequence[str], bodies: bool = True) -> dict[str, OutboundMessage]:
        """Our MedCom messages with these MessageHeader ids, whatever their state, by id; ids not tracked are
        left out; `bodies` as above."""
        ...

    def course(self, patient: str) -> Course | None:
        """The patient's rehabilitation course, by CPR number."""
        ...

    def courses_at(self, stages: Sequence[Stage]) -> list[Course]:
        """The courses at one of these stages (`Course.current`: a course stored before stages existed is
        municipal while open, closed otherwise), ordered by patient; [] for no stages."""
        ...

    def requester(self, thread_id: str) -> str | None:
        """Who asked the hotline request first in this thread."""
        ...

    def head(self) -> tuple[int, str]:
        """The chain's head: (sequence number of its last record, that record's hash)."""
        ...
