"""What the flows remember between messages: each patient's rehabilitation course, and open hotline requests."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Course:
    """Opened when a referral is sent; closed when the municipality's closing status reaches the GP."""

    patient: str  # CPR
    referring_department: str  # SOR
    municipality_code: str
    open: bool
    responsible: str  # hospital | gp


@dataclass(frozen=True, slots=True)
class OpenRequest:
    """An advice request waiting for the department's answer."""

    request_id: str
    thread_id: str | None  # a CareCommunication's thread; answers come back in it
    requester: str  # the sender's SOR or ydernummer
    department: str | None  # SOR of the department it went to, None for triage
    patient: str


@dataclass(frozen=True, slots=True)
class StateChanges:
    """What a flow asks to be recorded, in the same transaction as the message's audit records."""

    courses: tuple[Course, ...] = ()
    opened: tuple[OpenRequest, ...] = ()
    answered: tuple[str, ...] = ()  # thread ids whose request the department has answered


class State(Protocol):
    def course(self, patient: str) -> Course | None: ...

    def requester(self, thread_id: str) -> str | None: ...


@dataclass(frozen=True, slots=True)
class FixedState:
    """State given up front (tests, `integration transform --state`)."""

    courses: Mapping[str, Course] = field(default_factory=dict)
    threads: Mapping[str, str] = field(default_factory=dict)

    def course(self, patient: str) -> Course | None:
        return self.courses.get(patient)

    def requester(self, thread_id: str) -> str | None:
        return self.threads.get(thread_id)


NO_STATE = FixedState()
