"""A patient's rehabilitation course: who holds medical responsibility, and which department to ask."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Course:
    """Opened when a referral is sent; closed when the municipality's closing status reaches the GP."""

    patient: str  # CPR
    referring_department: str  # SOR
    municipality_code: str
    open: bool
    responsible: str  # hospital | gp


CourseLookup = Callable[[str], "Course | None"]


def no_courses(_patient: str) -> Course | None:
    return None
