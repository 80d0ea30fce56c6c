"""The JSON advice request (schema `schemas/advice-request.schema.json`) → AdviceRequest."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from integration.domain.hotline import AdviceRequest, SenderKind
from integration.domain.moment import read_moment
from integration.formats.json_contract import JsonContract
from integration.formats.patient_number import patient_number_of


def parse_advice_request(
    document: Any, contract: JsonContract, municipality_sors: Collection[str], *, received_at: datetime | None = None
) -> AdviceRequest:
    """A sender by ydernummer is a GP; by SOR, a municipality when the SOR is a municipal endpoint, else a GP clinic.
    The patient is `patient.cpr` (its birth date not after `sentAt` nor `received_at`), else
    `patient.replacementCpr` (X-eCPR or D-eCPR: it matches no course)."""
    contract.check(document)
    sent_at = read_moment(document["sentAt"], "sentAt")  # a zone, years 1900-2199
    patient = patient_number_of(document["patient"], sent_at, *([received_at] if received_at else []))
    sender = document["sender"]
    if "ydernummer" in sender:
        kind, sender_id = SenderKind.GP, sender["ydernummer"]
    else:
        sender_id = sender["sor"]
        kind = SenderKind.MUNICIPALITY if sender_id in municipality_sors else SenderKind.GP
    return AdviceRequest(
        request_id=document["requestId"].lower(),
        sender_kind=kind,
        sender_id=sender_id,
        patient=patient.key,
        text=document["text"],
        acute=document["urgency"] == "acute",
        sent_at=sent_at,
        addressed_department=document.get("department"),
    )
