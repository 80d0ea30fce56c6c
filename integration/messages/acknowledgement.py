"""MedCom Acknowledgement 2.0: the answer to every MedCom message we receive.

An ack goes from the message's receiver back to its sender: a new Bundle and MessageHeader, event
`acknowledgement-message`, `response.identifier` = the received MessageHeader.id and a code (`ok`,
`fatal-error`, `transient-error`; an OperationOutcome saying what and where when not ok), and
exactly two Provenances: the received message's latest one, copied, and ours (`acknowledgement`,
entity revision → the received MessageHeader).

Its MessageHeader id derives from the received MessageHeader id, so a duplicate is answered with
the same body; only the Bundle id and timestamp differ per transmission (`retransmission`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from integration.conformance.layers import REPORTED_FINDINGS
from integration.conformance.messaging_rules import as_dict, as_list, message_header
from integration.domain.course import Addressee
from integration.fhir.ids import derived_id
from integration.fhir.narrative import narrative
from integration.fhir.terminology import Terminology
from integration.messages.envelope import (
    Message,
    MessageIds,
    Party,
    Profiles,
    Resource,
    Rows,
    fhir_instant,
    message_bundle,
    reference,
)

ACK = "http://medcomfhir.dk/ig/acknowledgement/StructureDefinition/"
PROVENANCE_PROFILE = "http://medcomfhir.dk/ig/messaging/StructureDefinition/medcom-messaging-provenance"
EVENT = {
    "system": "http://medcomfhir.dk/ig/terminology/CodeSystem/medcom-messaging-eventCodes",
    "code": "acknowledgement-message",
}
# Acknowledgement 2.0.3 pins MedCom terminology 1.4.0, whose issue-details value set files HL7's codes under
# this URL (2.0.1 moved them to http://terminology.hl7.org/CodeSystem/operation-outcome); a receiver validating
# an ack against its package needs this one.
HL7_ISSUE_DETAILS = "http://hl7.org/fhir/ValueSet/operation-outcome"
MEDCOM_ISSUE_DETAILS = "http://medcomfhir.dk/ig/terminology/CodeSystem/medcom-acknowledgement-error-codes"
# The issue-details codes we use, by the code system the MedCom value set takes them from.
DETAILS_SYSTEM = {
    "MSG_BAD_FORMAT": HL7_ISSUE_DETAILS,
    "MSG_BAD_SYNTAX": HL7_ISSUE_DETAILS,
    "MSG_DUPLICATE_ID": HL7_ISSUE_DETAILS,
    "MSG_RESOURCE_REQUIRED": HL7_ISSUE_DETAILS,
    "MSG_UNKNOWN_TYPE": HL7_ISSUE_DETAILS,
    "MSG_Mailbox_Out_Of_Operation": MEDCOM_ISSUE_DETAILS,
    "MSG_Receiver_Identifier_UNKNOWN": MEDCOM_ISSUE_DETAILS,
    "MSG_RECEIVER_UNABLE_TO_RECEIVE_MSG_TYPE": MEDCOM_ISSUE_DETAILS,
    "MSG_VALUESET_VALUE_UNKNOWN": MEDCOM_ISSUE_DETAILS,
}
RESPONSE_CODES = ("ok", "transient-error", "fatal-error")
SOR_SYSTEM = "urn:oid:1.2.208.176.1.1"
# The GLN (EAN location number) under dk-core ≤ 3.4.0's system, which MedCom's IGs pin, and dk-core 3.5.0's.
GLN_SYSTEMS = frozenset({"https://www.gs1.org/gln", "http://www.gs1.org/gln"})
PROFILES = Profiles(
    bundle=ACK + "medcom-messaging-acknowledgement",
    header=ACK + "medcom-messaging-acknowledgementHeader",
    provenance=PROVENANCE_PROFILE,
)


@dataclass(frozen=True, slots=True)
class Issue:
    """One OperationOutcome issue: FHIR issue type, MedCom issue detail, our words, and where (FHIRPath)."""

    code: str  # FHIR issue-type: structure | required | value | invalid | duplicate | not-supported | exception
    details: str  # a code of DETAILS_SYSTEM
    text: str
    expression: str | None = None
    severity: str = "error"

    def as_fhir(self) -> dict[str, Any]:
        issue: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "details": {"coding": [{"system": DETAILS_SYSTEM[self.details], "code": self.details}], "text": self.text},
        }
        if self.expression:
            issue["expression"] = [self.expression]
        return issue

    def as_json(self) -> dict[str, Any]:
        return {"code": self.code, "details": self.details, "text": self.text, "expression": self.expression}


MAX_ISSUES = REPORTED_FINDINGS  # the most issues one acknowledgement lists (`layers` says why 100)


def listed(issues: Sequence[Issue], most: int = MAX_ISSUES) -> list[Issue]:
    """The issues an acknowledgement lists: all of them when they are at most `most`, else the first `most`
    and one issue saying how many more there were (an error: each of them is one)."""
    if len(issues) <= most:
        return list(issues)
    more = len(issues) - most
    text = f"{more} more problem(s) found in the message, not listed here: an acknowledgement lists the first {most}"
    return [*issues[:most], Issue("invalid", "MSG_BAD_FORMAT", text)]


class NotAcknowledgeable(ValueError):
    """The message lacks what an ack needs (its MessageHeader id, sender, receiver, endpoints, Provenance)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def _entry_resource(bundle: Resource, ref: Any) -> Resource | None:
    """The resource `ref` names, when it has a string id (an ack repeats it, so it must be one)."""
    for entry in as_list(bundle.get("entry")):
        resource = as_dict(as_dict(entry).get("resource"))
        rid = resource.get("id")
        if isinstance(ref, str) and isinstance(rid, str) and f"{resource.get('resourceType')}/{rid}" == ref:
            return resource
    return None


@dataclass(frozen=True, slots=True)
class Addressing:
    """Who sent the received message and to whom: the ack goes the other way."""

    header_id: str
    bundle_id: str | None
    sender: Resource
    receiver: Resource
    sender_endpoint: str
    receiver_endpoint: str
    latest_provenance: Resource


def _latest_provenance(bundle: Resource, header_id: str) -> Resource | None:
    target = f"MessageHeader/{header_id}"
    for entry in as_list(bundle.get("entry")):
        resource = as_dict(as_dict(entry).get("resource"))
        targets = [as_dict(t).get("reference") for t in as_list(resource.get("target"))]
        if resource.get("resourceType") == "Provenance" and target in targets:
            return resource
    return None


def addressing(bundle: Any) -> Addressing:
    """What an ack to `bundle` needs, or NotAcknowledgeable saying what is missing; any JSON value is read."""
    if not isinstance(bundle, dict):
        raise NotAcknowledgeable("Bundle", "not a Bundle")
    header = message_header(bundle)
    header_id = header.get("id")
    if header.get("resourceType") != "MessageHeader" or not isinstance(header_id, str) or not header_id:
        raise NotAcknowledgeable("Bundle.entry[0]", "no MessageHeader with an id")
    destination = as_dict((as_list(header.get("destination")) or [None])[0])
    sender = _entry_resource(bundle, as_dict(header.get("sender")).get("reference"))
    receiver = _entry_resource(bundle, as_dict(destination.get("receiver")).get("reference"))
    if sender is None:
        raise NotAcknowledgeable("MessageHeader.sender", "the sender Organization is not in the Bundle")
    if receiver is None:
        raise NotAcknowledgeable("MessageHeader.destination.receiver", "the receiver Organization is not in the Bundle")
    sender_endpoint = as_dict(header.get("source")).get("endpoint")
    receiver_endpoint = destination.get("endpoint")
    if not isinstance(sender_endpoint, str) or not sender_endpoint:
        raise NotAcknowledgeable("MessageHeader.source.endpoint", "missing: it says where the ack goes")
    if not isinstance(receiver_endpoint, str) or not receiver_endpoint:
        raise NotAcknowledgeable("MessageHeader.destination.endpoint", "missing")
    latest = _latest_provenance(bundle, header_id)
    if latest is None:
        raise NotAcknowledgeable("Provenance.target", "no Provenance targets the MessageHeader")
    if not isinstance(latest.get("id"), str) or not latest["id"]:
        raise NotAcknowledgeable("Provenance.id", "missing: the ack repeats the Provenance, which needs its id")
    bundle_id = bundle.get("id")
    return Addressing(
        header_id=header_id,
        bundle_id=bundle_id if isinstance(bundle_id, str) and bundle_id else None,
        sender=sender,
        receiver=receiver,
        sender_endpoint=sender_endpoint,
        receiver_endpoint=receiver_endpoint,
        latest_provenance=latest,
    )


def _identifier(organization: Resource, systems: frozenset[str]) -> str | None:
    """The Organization's identifier value in one of `systems`; None when it has none, or several different ones:
    one Organization is one party, and an ack's sender naming the receiver's SOR id beside another must not pass
    for the receiver by its first."""
    values = {
        v
        for i in as_list(organization.get("identifier"))
        if as_dict(i).get("system") in systems and isinstance(v := as_dict(i).get("value"), str) and v
    }
    return next(iter(values)) if len(values) == 1 else None


def _addressee(message: Resource, organization: Any, endpoint: Any) -> Addressee:
    """The Organization the reference `organization` names in `message` (its SOR and GLN ids) and `endpoint`."""
    named = as_dict(_entry_resource(message, organization))
    return Addressee(
        _identifier(named, frozenset({SOR_SYSTEM})),
        _identifier(named, GLN_SYSTEMS),
        endpoint if isinstance(endpoint, str) and endpoint else None,
    )


def receiver_of(message: Any) -> Addressee:
    """Whom a message is addressed to: its first `destination`'s receiver Organization (ids) and endpoint (ours
    have one destination, the primary). Any JSON value is read; what it does not name is None."""
    bundle = as_dict(message)
    destination = as_dict((as_list(message_header(bundle).get("destination")) or [None])[0])
    return _addressee(bundle, as_dict(destination.get("receiver")).get("reference"), destination.get("endpoint"))


def sender_of(message: Any) -> Addressee:
    """Who says they sent a message: its MessageHeader.sender Organization (ids) and `source.endpoint`. Any JSON
    value is read; what it does not name is None."""
    bundle = as_dict(message)
    header = message_header(bundle)
    return _addressee(
        bundle, as_dict(header.get("sender")).get("reference"), as_dict(header.get("source")).get("endpoint")
    )


def _with_narrative(provenance: Resource) -> Resource:
    """The received Provenance as it was; one without narrative gets ours (MedCom requires one)."""
    if as_dict(provenance.get("text")).get("div"):
        return provenance
    activity = as_dict((as_list(as_dict(provenance.get("activity")).get("coding")) or [None])[0]).get("code")
    targets = [as_dict(t).get("reference") for t in as_list(provenance.get("target"))]
    rows = [("Mål", t) for t in targets] + [("Aktivitet", activity)]
    return {**provenance, "text": narrative("Provenance", str(provenance.get("id")), rows)}


def _operation_outcome(rid: str, issues: Sequence[Issue]) -> Resource:
    return {
        "resourceType": "OperationOutcome",
        "id": rid,
        "meta": {"profile": [ACK + "medcom-acknowledgement-operationoutcome"]},
        "text": narrative(
            "OperationOutcome",
            rid,
            [
                (f"Fejl {n}", f"{i.details}: {i.text}" + (f" ({i.expression})" if i.expression else ""))
                for n, i in enumerate(issues, 1)
            ],
        ),
        "issue": [i.as_fhir() for i in issues],
    }


def _check_response(code: str, issues: Sequence[Issue]) -> None:
    if code not in RESPONSE_CODES:
        raise ValueError(f"unknown response code {code!r}")
    if code != "ok" and not issues:
        raise ValueError("an ack that is not ok needs at least one issue")


def _header_rows(to: Addressing, code: str, outcome: Resource | None) -> Rows:
    return (
        ("Hændelse", "acknowledgement-message"),
        ("Til", f"Organization/{to.sender['id']}"),
        ("Fra", f"Organization/{to.receiver['id']}"),
        ("Kvitterer for", f"MessageHeader/{to.header_id}"),
        ("Svar", code),
        ("Detaljer", outcome and f"OperationOutcome/{outcome['id']}"),
    )


def _response(to: Addressing, code: str, outcome: Resource | None) -> dict[str, Any]:
    response: dict[str, Any] = {"identifier": to.header_id, "code": code}
    if outcome is not None:
        response["details"] = reference(outcome)
    return response


def acknowledgement(to: Addressing, code: str, issues: Sequence[Issue], now: datetime, terms: Terminology) -> Resource:
    """The ack of the message `to` describes, first transmission (Bundle id derived from the received Bundle id).

    Raises ValueError for a code not in RESPONSE_CODES, or one other than `ok` without issues."""
    _check_response(code, issues)
    seed = f"{to.header_id}/ack/{code}"
    ids = MessageIds(
        bundle=derived_id(f"{to.bundle_id or to.header_id}/ack", code),
        header=derived_id(seed, "MessageHeader"),
        provenance=derived_id(seed, "Provenance"),
    )
    outcome = _operation_outcome(derived_id(seed, "OperationOutcome"), issues) if issues else None
    message = Message(
        ids=ids,
        event=EVENT,
        sender=Party(to.receiver, to.receiver_endpoint),
        receiver=Party(to.sender, to.sender_endpoint),
        sent_at=now,
        activity="acknowledgement",
        header_rows=_header_rows(to, code, outcome),
        provenance_rows=(
            ("Mål", f"MessageHeader/{ids.header}"),
            ("Aktivitet", "acknowledgement"),
            ("Kvitterer for", f"MessageHeader/{to.header_id}"),
        ),
        profiles=PROFILES,
        # the two Provenances: the received message's latest, copied, then ours
        content=(*([outcome] if outcome else []), to.receiver, to.sender, _with_narrative(to.latest_provenance)),
        entity=({"role": "revision", "what": {"reference": f"MessageHeader/{to.header_id}"}},),
        response=_response(to, code, outcome),
    )
    return message_bundle(message, terms)


def retransmission(message: Resource, transmission: str, now: datetime) -> Resource:
    """The same message sent again: a new Bundle id (derived from `transmission`) and timestamp, same content."""
    header_id = message["entry"][0]["resource"]["id"]
    return {**message, "id": derived_id(f"{header_id}/transmission", transmission), "timestamp": fhir_instant(now)}


def response_of(ack: Resource) -> tuple[str, str, list[dict[str, Any]]]:
    """(acknowledged MessageHeader id, response code, OperationOutcome issues) of an ack Bundle."""
    response = as_dict(message_header(ack).get("response"))
    details = _entry_resource(ack, as_dict(response.get("details")).get("reference"))
    issues = [as_dict(i) for i in as_list(as_dict(details).get("issue"))]
    return str(response.get("identifier")), str(response.get("code")), issues
