"""The JSON advice request (schema `schemas/advice-request.schema.json`) → AdviceRequest."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from integration.domain.cpr import parse_cpr
from integration.domain.hotline import AdviceRequest, SenderKind
from integration.errors import InvalidInput
from integration.formats.json_contract import JsonContract


def parse_advice_request(document: Any, contract: JsonContract, municipality_sors: Collection[str]) -> AdviceRequest:
    """A sender by ydernummer is a GP; by SOR, a municipality when the SOR is a municipal endpoint, else a GP clinic."""
    contract.check(document)
    try:
        cpr = parse_cpr(document["patient"]["cpr"]).value
    except ValueError as exc:
        raise InvalidInput("patient.cpr", str(exc)) from None
    try:
        sent_at = datetime.fromisoformat(document["sentAt"])
    except ValueError:
        raise InvalidInput("sentAt", "not a real date and time") from None
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
        patient=cpr,
        text=document["text"],
        acute=document["urgency"] == "acute",
        sent_at=sent_at,
        addressed_department=document.get("department"),
    )
