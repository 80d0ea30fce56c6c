"""The rehabilitation courses' repository (`rehab_course`): one row per patient, keyed by CPR number.

A course is opened when a referral is sent and closed when the municipality's closing status reaches the
GP; each change overwrites the patient's row (`changed_at`: when). The key is a CPR number: it goes into
the chain only as a digest (audit_state).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from integration.adapters.sql.audit_state import StateDigests
from integration.adapters.sql.unit_of_work import UnitOfWork
from integration.domain.course import Course, Responsible

UPSERT_COURSE = (
    "INSERT INTO rehab_course (patient, referring_department, municipality_code, is_open, "
    "responsible, changed_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (patient) DO UPDATE SET "
    "referring_department = excluded.referring_department, municipality_code = "
    "excluded.municipality_code, is_open = excluded.is_open, responsible = excluded.responsible, "
    "changed_at = excluded.changed_at"
)


class Courses:
    def __init__(self, unit: UnitOfWork) -> None:
        self._unit = unit

    def course(self, patient: str) -> Course | None:
        """The patient's course (by CPR number), or None."""
        with self._unit.transaction(write=False) as cursor:
            cursor.execute(
                self._unit.sql(
                    "SELECT referring_department, municipality_code, is_open, responsible FROM rehab_course "
                    "WHERE patient = ?"
                ),
                (patient,),
            )
            row = cursor.fetchone()
        return None if row is None else Course(patient, row[0], row[1], bool(row[2]), Responsible(row[3]))

    def save(self, cursor: Any, courses: Sequence[Course], stamp: str) -> StateDigests:
        """Insert or overwrite each patient's course; the digests of the rows as they now stand."""
        if not courses:
            return {}
        cursor.executemany(
            self._unit.sql(UPSERT_COURSE),
            [
                (c.patient, c.referring_department, c.municipality_code, int(c.open), c.responsible, stamp)
                for c in courses
            ],
        )
        return {"rehab_course": self._unit.read_back(cursor, "rehab_course", {(c.patient,) for c in courses})}
