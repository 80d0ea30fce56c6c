"""A MedCom CareCommunication 5.0 message (FHIR R4 message Bundle, JSON or XML) → an advice request.

XML is parsed with a hardened lxml parser first (no DTD, no entities, no network, size-capped; a
DOCTYPE is refused), then read into FHIR JSON along the R4 schema (`fhir_xml`), judging nothing, and proven
carried exactly (`fhir_xml_fidelity`). Before anything is read for routing,
the message passes the fast layers of `integration validate` (`fhir.receipt`): FHIR content, MedCom's
messaging rules and Bundle invariants, and the TouchStone assertions; a finding refuses it. The patient
is named by a CPR number, or for a patient without one by a replacement number (X-eCPR, D-eCPR); a CPR
number whose birth date is after the message's time or its receipt is refused.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import datetime
from typing import Any

from lxml import etree

from integration.conformance.messaging_rules import as_dict, as_list, message_header
from integration.conformance.receipt import check_on_receipt
from integration.domain.cpr import Cpr, born_by
from integration.domain.hotline import AdviceRequest, SenderKind
from integration.domain.identifiers import PatientNumber, patient_number
from integration.domain.moment import read_moment
from integration.errors import InvalidInput
from integration.formats.fhir_xml import fhir_json
from integration.formats.fhir_xml_fidelity import carry_exactly
from integration.formats.json_contract import check_limits
from integration.formats.safe_xml import parse_xml

CARE_COMMUNICATION_EVENT = "care-communication-message"
SOR = "urn:oid:1.2.208.176.1.1"
CPR = "urn:oid:1.2.208.176.1.2"
YDERNUMMER = "urn:oid:1.2.208.176.1.4"
FHIR_NS = "http://hl7.org/fhir"
_CODE_LIKE = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
SOR_CODE = re.compile(r"[0-9]{11,18}")  # it becomes part of routing keys: `hotline.reply.<SOR>`, `ack.<SOR>`


def decode_xml_bundle(raw: bytes, max_bytes: int) -> dict[str, Any]:
    """FHIR XML bytes → the Bundle as FHIR JSON, carrying exactly what the XML holds (InvalidInput: not
    readable XML, not a FHIR Bundle; NotCarried naming the element: anything the FHIR JSON would not
    carry as sent, `fhir_xml_fidelity`)."""
    return read_xml_bundle(parse_xml(raw, max_bytes))


def read_xml_bundle(root: etree._Element) -> dict[str, Any]:
    """A parsed FHIR XML Bundle → FHIR JSON (as `decode_xml_bundle`, for a root already parsed). Its content is
    not judged here: the same checks judge it as the same message in JSON (`fhir_xml`)."""
    if root.tag != f"{{{FHIR_NS}}}Bundle":
        raise NotFhirBundle("", 'not a FHIR Bundle (expected <Bundle xmlns="http://hl7.org/fhir">)')
    bundle = fhir_json(root)
    check_limits(bundle)
    return carry_exactly(root, bundle)


class NotFhirBundle(InvalidInput):
    """Well-formed XML whose root is not a FHIR Bundle."""


def is_care_communication(doc: Any) -> bool:
    if not isinstance(doc, dict) or doc.get("resourceType") != "Bundle":
        return False
    header = message_header(doc)
    return (
        header.get("resourceType") == "MessageHeader"
        and as_dict(header.get("eventCoding")).get("code") == CARE_COMMUNICATION_EVENT
    )


def _resolve(bundle: dict[str, Any], reference: Any, field: str) -> dict[str, Any]:
    for entry in as_list(bundle.get("entry")):
        resource = as_dict(as_dict(entry).get("resource"))
        if isinstance(reference, str) and f"{resource.get('resourceType')}/{resource.get('id')}" == reference:
            return resource
    raise InvalidInput(field, "the reference does not resolve inside the Bundle")


def _identifier(resource: dict[str, Any], system: str) -> str | None:
    values = (
        as_dict(i).get("value") for i in as_list(resource.get("identifier")) if as_dict(i).get("system") == system
    )
    return next((v for v in values if isinstance(v, str)), None)


def _sent_at(bundle: dict[str, Any]) -> datetime:
    value = bundle.get("timestamp")
    if not isinstance(value, str):
        raise InvalidInput("Bundle.timestamp", "missing: MedCom stamps every message")
    return read_moment(value, "Bundle.timestamp")  # a zone, years 1900-2199; a leap second is named


def _patient(patient: dict[str, Any], *moments: datetime) -> PatientNumber:
    """The CPR number, else the replacement number, naming the patient (never repeating it in an error)."""
    identifiers = [as_dict(i) for i in as_list(patient.get("identifier"))]
    try:
        number = patient_number((i.get("system"), i.get("value")) for i in identifiers)
        if isinstance(number, Cpr):
            born_by(number, *moments)
    except ValueError as exc:
        raise InvalidInput("Patient.identifier", str(exc)) from None
    if number is None:
        raise InvalidInput("Patient.identifier", "the patient has no CPR number and no replacement CPR number")
    return number


def parse_care_communication(
    bundle: dict[str, Any], municipality_sors: Collection[str], *, received_at: datetime | None = None
) -> AdviceRequest:
    """The advice request a CareCommunication makes (InvalidInput, or NotConformant with every finding of
    the fast checks, when it cannot be routed); `received_at` is when it came, if known."""
    if not is_care_communication(bundle):
        event = as_dict(message_header(bundle).get("eventCoding")).get("code")
        got = f" (got {event!r})" if isinstance(event, str) and _CODE_LIKE.fullmatch(event) else ""
        raise InvalidInput("MessageHeader.eventCoding", f"not a {CARE_COMMUNICATION_EVENT}{got}")
    check_on_receipt(bundle)
    sent_at = _sent_at(bundle)
    header = message_header(bundle)
    destinations = as_list(header.get("destination"))
    if len(destinations) != 1:
        raise InvalidInput("MessageHeader.destination", "a CareCommunication has exactly one (primary) destination")
    sender = _resolve(bundle, as_dict(header.get("sender")).get("reference"), "MessageHeader.sender")
    receiver = _resolve(
        bundle, as_dict(as_dict(destinations[0]).get("receiver")).get("reference"), "MessageHeader.destination"
    )
    focus = as_list(header.get("focus"))
    communication = _resolve(bundle, as_dict(focus[0] if focus else None).get("reference"), "MessageHeader.focus")
    patient = _resolve(bundle, as_dict(communication.get("subject")).get("reference"), "Communication.subject")
    sender_sor = _identifier(sender, SOR)
    if not sender_sor:
        raise InvalidInput("MessageHeader.sender", "the sender Organization has no SOR identifier")
    if not SOR_CODE.fullmatch(sender_sor):
        raise InvalidInput("MessageHeader.sender", "the sender Organization's SOR identifier is not 11 to 18 digits")
    number = _patient(patient, sent_at, *([received_at] if received_at else []))
    threads = as_list(communication.get("identifier"))
    thread = as_dict(threads[0] if threads else None).get("value")
    if not thread:
        raise InvalidInput("Communication.identifier", "the thread id is missing")
    payloads = (as_dict(p).get("contentString") for p in as_list(communication.get("payload")))
    texts = [t for t in payloads if isinstance(t, str) and t]
    kind = SenderKind.MUNICIPALITY if sender_sor in municipality_sors else SenderKind.GP
    return AdviceRequest(
        request_id=str(header["id"]),
        sender_kind=kind,
        sender_id=sender_sor,
        patient=number.key,
        text=texts[-1] if texts else "",
        acute=False,  # MedCom: a CareCommunication is never used for acute matters
        sent_at=sent_at,
        addressed_department=_identifier(receiver, SOR),
        thread_id=str(thread),
    )
