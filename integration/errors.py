"""The exception tree: what can go wrong with a message, and what happens to it then.

    IntegrationError
    ├── Rejected              permanent: this message can never succeed as it is → dead-letter queue
    │   ├── InvalidInput      the message breaks its contract (names the field and the problem)
    │   │   └── Unsendable    (integration.conformance.validation) what we would build from it fails our own
    │   │                     fast checks (FHIR R4, MedCom rules, TouchStone, narrative): nothing is
    │   │                     sent, the input is refused naming the output's element
    │   ├── UnknownMessageKind the message is not one of the kinds the service accepts
    │   ├── ConfigurationError our mappings lack something the message needs (e.g. a
    │   │                     municipality without a receiving endpoint); replay after the fix
    │   └── GivenUp           our flow failed on every attempt we allow it; replay after the fix
    ├── Transient             a dependency (the audit store, the broker) is down or refuses for now:
    │                         the consumer holds its messages unacked, waits with backoff and
    │                         retries; no delivery attempt is spent
    │   └── StoreDamaged      the audit store's file or schema is damaged (a page SQLite cannot read,
    │                         a schema that is not what its version says): a running consumer
    │                         holds its messages as for an outage; `run` at start and every
    │                         command stop with one line, since waiting will not mend it
    ├── StoreRefused          the database refused a write for this content (a constraint, a value
    │                         it cannot hold): a defect of ours, counted against the message
    ├── Conflict              another consumer process changed a course this batch read before the
    │                         batch could record its own change (optimistic concurrency): nothing of
    │                         the batch is kept; it is planned again from what is stored now, and no
    │                         delivery attempt is spent (decision 31)
    └── ConnectionLost        the broker connection is gone: unacked messages come back on
                              their own; the consumer reconnects with backoff

    BuildError                a JSON advice reply we built breaks its schema: a bug in the service,
                              never the sender's fault; it fails loudly and nothing is sent

Messages of these exceptions never contain a CPR number or a name: they go to logs and to
dead-letter headers.
"""

from __future__ import annotations


class IntegrationError(Exception):
    """Base of every error the service expects and handles."""

    reason: str = "error"

    def __str__(self) -> str:
        return self.args[0] if self.args else self.reason


class Rejected(IntegrationError):
    """A permanent failure: retrying the same message cannot help.

    Raised where it is found; a flow that still answers the sender (a MedCom message's fatal-error
    acknowledgement) returns it instead, inside a `flows.results.Refusal` with the answer.
    """

    reason = "rejected"
    # Whether an earlier message still in flight (in another consumer process) may make it acceptable: the
    # consumer then holds it and tries again for a few seconds before it is refused (decision 31).
    awaits_earlier_message: bool = False


class InvalidInput(Rejected):
    """The inbound message breaks its contract.

    `field` is where, as data: a FHIRPath into a FHIR message (`Patient.identifier[0].value`), else the
    field of our JSON or XML contract (`admission.dischargedAt`, `ClosingReport.Course`); "" when the
    whole message is at fault (malformed, too large). An acknowledgement's issue reports it as is."""

    reason = "invalid-input"

    def __init__(self, field: str, problem: str, details: tuple[str, ...] = ()) -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field = field
        self.problem = problem
        self.details = details  # every problem found, when the message names only the first


class UnknownMessageKind(Rejected):
    reason = "unknown-message-kind"


class ConfigurationError(Rejected):
    """The mappings lack something this message needs; fix the mapping, then replay."""

    reason = "configuration-error"


class GivenUp(Rejected):
    """Our side failed on every delivery attempt (a bug): dead-lettered so that it can be replayed after the fix."""

    reason = "internal-error"


class Transient(IntegrationError):
    """A dependency is unavailable for now; the same message will succeed once it is back.

    `dependency` names it for the operator's log line and the readiness check: "audit-store", "broker", or
    "topology" (the broker is up but returned an output as unroutable: no queue is bound for its routing key).
    """

    reason = "transient"

    def __init__(self, message: str, dependency: str = "audit-store") -> None:
        super().__init__(message)
        self.dependency = dependency


TOPOLOGY = "topology"  # the dependency named when the broker returns a publish as unroutable


class Unconfirmed(Transient):
    """Some of a window of publishes were not confirmed: the broker refused (nacked) or returned them, or their
    confirms did not come in time. `confirmed` holds the positions (0-based, in publishing order) the broker did
    confirm, so that a retry publishes only the others (integration.service.ports.Bus.publish_all)."""

    def __init__(self, message: str, confirmed: frozenset[int], dependency: str = "broker") -> None:
        super().__init__(message, dependency)
        self.confirmed = confirmed


class StoreDamaged(Transient):
    """The audit store is there but damaged: its file (SQLite: a malformed page, not a database) or its
    schema (tables or columns other than its recorded version says; a version that is no version).

    A Transient, so that a consumer that meets it while running holds its messages unacked as for any
    outage (nothing is dead-lettered while an operator restores the store). Waiting will not mend it:
    `integration run` at start and every command that opens the store stop with one line instead.
    """

    reason = "store-damaged"


class StoreRefused(IntegrationError):
    """The database refused this write for what it holds (a constraint or a value it cannot store).

    Not an outage: waiting would not help. The processor retries the deliveries of the batch one
    at a time, and the one that still fails counts as a failure of ours.
    """

    reason = "store-refused"


class Conflict(IntegrationError):
    """A course this batch read was changed (or created) by another consumer before the batch recorded its
    own change: recording it would overwrite that change unseen (a lost update). The transaction is rolled
    back; nothing of it is kept.

    Neither a refusal of the content (StoreRefused) nor an outage (Transient): planning the batch again at
    once, from the course as it now stands, succeeds. `table` names where; `count` how many rows differed
    (the keys are CPR numbers: never in the message). Decision 31."""

    reason = "conflict"

    def __init__(self, table: str, count: int) -> None:
        super().__init__(f"{count} row(s) of {table} changed by another consumer since this batch read them")
        self.table = table
        self.count = count


class ConnectionLost(IntegrationError):
    """The broker connection or channel is gone; retrying on it is pointless, reconnecting is not."""

    reason = "connection-lost"


class BuildError(Exception):
    """A message built by the service fails validation: a bug, never the sender's fault."""
