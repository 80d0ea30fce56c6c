"""A MedCom CareCommunication 5.0 message (FHIR R4 message Bundle, JSON or XML) → an advice request.

XML is parsed with a hardened lxml parser first (no DTD, no entities, no network, size-capped; a
DOCTYPE is refused), then read into FHIR JSON by fhir.resources. The message is validated as FHIR
content and against the MedCom envelope rules that matter for routing before anything is read.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

import orjson
from fhir.resources.R4B.bundle import Bundle
from lxml import etree
from pydantic import ValidationError

from integration.domain.cpr import parse_cpr
from integration.domain.hotline import AdviceRequest, SenderKind
from integration.errors import InvalidInput
from integration.fhir.resource_validation import fhir_problems
from integration.formats.safe_xml import parse_xml

CARE_COMMUNICATION_EVENT = "care-communication-message"
SOR = "urn:oid:1.2.208.176.1.1"
CPR = "urn:oid:1.2.208.176.1.2"
YDERNUMMER = "urn:oid:1.2.208.176.1.4"
FHIR_NS = "http://hl7.org/fhir"


def decode_xml_bundle(raw: bytes, max_bytes: int) -> dict[str, Any]:
    root = parse_xml(raw, max_bytes)
    if root.tag != f"{{{FHIR_NS}}}Bundle":
        raise InvalidInput("", 'not a FHIR Bundle (expected <Bundle xmlns="http://hl7.org/fhir">)')
    try:
        bundle: dict[str, Any] = orjson.loads(Bundle.model_validate_xml(etree.tostring(root)).model_dump_json())
    except (ValidationError, ValueError) as exc:
        raise InvalidInput("", f"not valid FHIR: {str(exc).splitlines()[0]}") from None
    return bundle


def is_care_communication(doc: Any) -> bool:
    if not isinstance(doc, dict) or doc.get("resourceType") != "Bundle":
        return False
    header = ((doc.get("entry") or [{}])[0] or {}).get("resource") or {}
    return (
        header.get("resourceType") == "MessageHeader"
        and (header.get("eventCoding") or {}).get("code") == CARE_COMMUNICATION_EVENT
    )


def _resolve(bundle: dict[str, Any], reference: str | None, field: str) -> dict[str, Any]:
    for entry in bundle.get("entry", []):
        resource = entry.get("resource") or {}
        if reference and f"{resource.get('resourceType')}/{resource.get('id')}" == reference:
            return resource
    raise InvalidInput(field, f"reference {reference!r} does not resolve inside the Bundle")


def _identifier(resource: dict[str, Any], system: str) -> str | None:
    return next((i.get("value") for i in resource.get("identifier", []) if i.get("system") == system), None)


def parse_care_communication(bundle: dict[str, Any], municipality_sors: Collection[str]) -> AdviceRequest:
    if not is_care_communication(bundle):
        event = (((bundle.get("entry") or [{}])[0].get("resource") or {}).get("eventCoding") or {}).get("code")
        raise InvalidInput("MessageHeader.eventCoding", f"not a {CARE_COMMUNICATION_EVENT} (got {event!r})")
    problems = fhir_problems(bundle, remember=False)
    if problems:
        raise InvalidInput(
            "Bundle",
            f"not valid FHIR R4: {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
            tuple(problems),
        )
    header = bundle["entry"][0]["resource"]
    destinations = header.get("destination") or []
    if len(destinations) != 1:
        raise InvalidInput("MessageHeader.destination", "a CareCommunication has exactly one (primary) destination")
    sender = _resolve(bundle, (header.get("sender") or {}).get("reference"), "MessageHeader.sender")
    receiver = _resolve(bundle, (destinations[0].get("receiver") or {}).get("reference"), "MessageHeader.destination")
    communication = _resolve(bundle, (header.get("focus") or [{}])[0].get("reference"), "MessageHeader.focus")
    patient = _resolve(bundle, (communication.get("subject") or {}).get("reference"), "Communication.subject")
    sender_sor = _identifier(sender, SOR)
    if not sender_sor:
        raise InvalidInput("MessageHeader.sender", "the sender Organization has no SOR identifier")
    cpr = _identifier(patient, CPR)
    if not cpr:
        raise InvalidInput("Patient.identifier", "the patient has no CPR number (a replacement CPR cannot be routed)")
    try:
        parse_cpr(cpr)
    except ValueError as exc:
        raise InvalidInput("Patient.identifier", str(exc)) from None
    thread = ((communication.get("identifier") or [{}])[0]).get("value")
    if not thread:
        raise InvalidInput("Communication.identifier", "the thread id is missing")
    texts = [p["contentString"] for p in communication.get("payload", []) if p.get("contentString")]
    kind = SenderKind.MUNICIPALITY if sender_sor in municipality_sors else SenderKind.GP
    return AdviceRequest(
        request_id=str(header["id"]),
        sender_kind=kind,
        sender_id=sender_sor,
        patient=cpr,
        text=texts[-1] if texts else "",
        acute=False,  # MedCom: a CareCommunication is never used for acute matters
        sent_at=datetime.fromisoformat(bundle["timestamp"]),
        addressed_department=_identifier(receiver, SOR),
        thread_id=thread,
    )
