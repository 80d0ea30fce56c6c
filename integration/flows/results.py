"""What a flow hands back to the runtime: messages to publish and facts to audit."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from integration.domain.course import Course, StateChanges
from integration.errors import Rejected


@dataclass(frozen=True, slots=True)
class Route:
    exchange: str
    routing_key: str


FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True, slots=True)
class Outgoing:
    route: Route
    message: dict[str, Any]
    message_id: str | None = None  # default: the FHIR message's MessageHeader id
    content_type: str = FHIR_JSON
    expects_ack: bool = False  # a MedCom message of ours: tracked until its ack, resent without one

    @property
    def id(self) -> str:
        return self.message_id or str(self.message["entry"][0]["resource"]["id"])

    def as_json(self) -> dict[str, Any]:
        return {
            "route": {"exchange": self.route.exchange, "routingKey": self.route.routing_key},
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class AuditFact:
    """One step worth auditing. Details never hold a CPR number: the audit store keys records by patient itself."""

    kind: str
    detail: Mapping[str, Any] = field(default_factory=dict)


def course_stage(course: Course, **subject: str) -> AuditFact:
    """The `course-stage` fact: where the course stands after the message (`subject` names the message, e.g.
    `eventId=` or `reportId=`), and who is medically responsible."""
    return AuditFact(
        "course-stage", {**subject, "stage": course.current.value, "responsible": course.responsible.value}
    )


@dataclass(frozen=True, slots=True)
class FlowResult:
    outgoing: tuple[Outgoing, ...]
    facts: tuple[AuditFact, ...]
    patient: str | None = None  # the CPR number the message is about, for the audit log only
    state: StateChanges = StateChanges()  # what to remember, recorded with the message

    def plus(self, outgoing: tuple[Outgoing, ...], facts: tuple[AuditFact, ...], state: StateChanges) -> FlowResult:
        return FlowResult(self.outgoing + outgoing, self.facts + facts, self.patient, self.state + state)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A message refused (dead-lettered, never marked processed) that its sender is answered for nonetheless.

    `rejection` says why and where (its `reason` code, text and, for InvalidInput, `field`); `answer` is
    what to send and record all the same: a MedCom message's fatal-error acknowledgement (or transient-error,
    when our configuration lacks something), or only the audit fact that no acknowledgement could be made.
    A refusal without an answer is simply raised as the Rejected it is."""

    rejection: Rejected
    answer: FlowResult

    @property
    def reason(self) -> str:
        """The dead letter's reason code (`Rejected.reason`)."""
        return self.rejection.reason


Handled: TypeAlias = FlowResult | Refusal  # what the dispatch returns for one inbound message
