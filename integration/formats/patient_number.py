"""How our JSON contracts (discharge event, advice request) name a patient: `patient.cpr`, or for a patient
without a CPR number `patient.replacementCpr` {system, value} (an X-eCPR or a region's D-eCPR)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from integration.domain.cpr import born_by, parse_cpr
from integration.domain.identifiers import PatientNumber, parse_replacement_cpr
from integration.errors import InvalidInput


def patient_number_of(doc: dict[str, Any], *moments: datetime) -> PatientNumber:
    """`patient.cpr` (its birth date not after any of `moments`), else `patient.replacementCpr`; the schema
    requires exactly one. Errors name the field and never repeat the number."""
    if "cpr" in doc:
        try:
            cpr = parse_cpr(doc["cpr"])
            born_by(cpr, *moments)
        except ValueError as exc:
            raise InvalidInput("patient.cpr", str(exc)) from None
        return cpr
    replacement = doc["replacementCpr"]
    try:
        return parse_replacement_cpr(replacement["system"], replacement["value"])
    except ValueError as exc:
        raise InvalidInput("patient.replacementCpr.value", str(exc)) from None
