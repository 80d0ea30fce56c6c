"""A typical discharge event as a record, for unit tests of the pure core."""

from datetime import date, datetime
from zoneinfo import ZoneInfo

from integration.domain.cpr import parse_cpr
from integration.domain.records import (
    Diagnosis,
    DischargeEvent,
    GeneralPractitioner,
    Organisation,
    Patient,
    ReferralRequest,
    RiskGroup,
    Surgery,
)

CPH = ZoneInfo("Europe/Copenhagen")


def event() -> DischargeEvent:
    return DischargeEvent(
        event_id="3f0b9c1e-5d7a-4e47-9a52-0c6f4a1d2b11",
        event_type="discharge",
        occurred_at=datetime(2026, 11, 20, 14, 5, tzinfo=CPH),
        hospital=Organisation("715541000016001", "5790001382445", "Aalborg UH, Kardiologisk Afdeling"),
        patient=Patient(
            parse_cpr("2512489996"),
            ("Nancy", "Ann"),
            "Berggren",
            "851",
            GeneralPractitioner("123451000016008", "012345"),
        ),
        admitted_at=datetime(2026, 11, 14, 9, 12, tzinfo=CPH),
        discharged_at=datetime(2026, 11, 20, 13, 30, tzinfo=CPH),
        diagnoses=(Diagnosis("ICD-10", "I21.4", True),),
        surgery=Surgery(True, date(2026, 11, 15)),
        risk_criteria=("incomplete-revascularisation",),
        clinician_risk_group=RiskGroup.MODERATE,
        exercise_test=None,
        referral=ReferralRequest("municipal", True, ("physical-activity", "diet"), True, False, "free text"),
    )
