"""A MedCom HospitalNotification → what it means for the patient's rehabilitation course.

The notice itself is only recorded (the `hospital-notification` fact); the pathway rules that act on it
(a death, a readmission during a course, a discharge home that no discharge event follows) are applied
here, on the course the patient has. The ack (`ok` when this returns) is the acknowledger's.
"""

from __future__ import annotations

from datetime import datetime

from integration.domain.course import Course
from integration.flows.results import AuditFact, FlowResult
from integration.formats.hospital_notification import HospitalNotification


def notice_fact(notice: HospitalNotification) -> AuditFact:
    """The `hospital-notification` fact: what the hospital said, without the patient (the audit keys by it)."""
    return AuditFact(
        "hospital-notification",
        {
            "header": notice.header_id,
            "activity": notice.activity.code,
            "letters": notice.letters,
            "encounterStatus": notice.encounter_status,
            "encounterClass": notice.encounter_class,
            "unit": notice.unit,
            "sender": notice.sender,
            "episode": notice.episode,
        },
    )


def handle_hospital_notification(notice: HospitalNotification, course: Course | None, now: datetime) -> FlowResult:
    """The facts and state changes of one notice for the patient's course (None: the patient has none)."""
    return FlowResult((), (notice_fact(notice),), notice.patient.key)
