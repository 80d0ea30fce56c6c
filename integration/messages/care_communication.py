"""Automatic replies to a MedCom CareCommunication: a `reply-message` in the same thread.

The reply repeats every earlier text payload (attachments without their data), adds ours, carries
every earlier Provenance plus a `reply-message` one pointing at the message it answers, and goes
from the department that received the request back to its sender.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from integration.fhir.ids import derived_id, derived_uuid4
from integration.fhir.narrative import narrative
from integration.fhir.terminology import Terminology
from integration.messages.envelope import Resource, fhir_instant, reference

CC = "http://medcomfhir.dk/ig/carecommunication/StructureDefinition/"
CORE = "http://medcomfhir.dk/ig/core/StructureDefinition/"
CATEGORY_SYSTEM = "http://medcomfhir.dk/ig/terminology/CodeSystem/medcom-careCommunication-categoryCodes"
DEFINITION = "http://medcomfhir.dk/ig/messagedefinitions/MessageDefinition/MedComCareCommunicationMessageDefinition|5.0"
EVENT = {
    "system": "http://medcomfhir.dk/ig/terminology/CodeSystem/medcom-messaging-eventCodes",
    "code": "care-communication-message",
}


def _by_reference(bundle: Resource, ref: str) -> Resource:
    return next(
        e["resource"] for e in bundle["entry"] if f"{e['resource']['resourceType']}/{e['resource']['id']}" == ref
    )


def _earlier_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """An earlier payload as a reply repeats it: text as it was, an attachment without its content."""
    if "contentAttachment" not in payload:
        return payload
    attachment = {k: v for k, v in payload["contentAttachment"].items() if k not in ("data", "url")}
    return {**payload, "contentAttachment": attachment}


def _resource(rtype: str, rid: str, profile: str, rows: list[tuple[str, object]], **content: Any) -> Resource:
    """A resource with its MedCom profile and its narrative."""
    return {
        "resourceType": rtype,
        "id": rid,
        "meta": {"profile": [profile]},
        "text": narrative(rtype, rid, rows),
        **content,
    }


def _automatic_author(ids: Callable[[str], str]) -> tuple[Resource, Resource]:
    """The author of an automatic reply: the profile requires a named Practitioner in a PractitionerRole."""
    practitioner = _resource(
        "Practitioner",
        ids("Practitioner"),
        CORE + "medcom-core-practitioner",
        [("Navn", "Hotline, automatisk svar")],
        name=[{"family": "Automatisk svar", "given": ["Hotline"]}],
    )
    role = _resource(
        "PractitionerRole",
        ids("PractitionerRole"),
        CORE + "medcom-core-practitionerrole",
        [("Practitioner", f"Practitioner/{practitioner['id']}"), ("Rolle", "Automatisk svar")],
        practitioner=reference(practitioner),
        code=[{"text": "Automatisk svar"}],
    )
    return practitioner, role


def _text_payload(payload_id: str, text: str, sent: str, author: Resource, sender: Resource, phone: str) -> Resource:
    return {
        "extension": [
            {"url": CORE + "medcom-core-datetime-extension", "valueDateTime": sent},
            {
                "url": CORE + "medcom-core-identifier-extension",
                "valueIdentifier": {"value": payload_id, "assigner": reference(sender)},
            },
            {"url": CORE + "medcom-core-practitioner-extension", "valueReference": reference(author)},
            {"url": CORE + "medcom-core-contact-extension", "valueContactPoint": {"system": "phone", "value": phone}},
        ],
        "contentString": text,
    }


def _header(
    rid: str,
    sender: Resource,
    receiver: Resource,
    destination: dict[str, Any],
    source_endpoint: str,
    communication: Resource,
) -> Resource:
    """A CareCommunication MessageHeader; `destination` carries its use extension and endpoint."""
    return _resource(
        "MessageHeader",
        rid,
        CC + "medcom-careCommunication-messageHeader",
        [
            ("Hændelse", "care-communication-message"),
            ("Til", f"Organization/{receiver['id']}"),
            ("Fra", f"Organization/{sender['id']}"),
            ("Fokus", f"Communication/{communication['id']}"),
        ],
        eventCoding=EVENT,
        destination=[{**destination, "receiver": reference(receiver)}],
        sender=reference(sender),
        source={"endpoint": source_endpoint},
        focus=[reference(communication)],
        definition=DEFINITION,
    )


def _provenance(
    rid: str,
    header: Resource,
    activity: str,
    agent: Resource,
    entity: list[dict[str, Any]],
    sent: str,
    terms: Terminology,
) -> Resource:
    answers = [e["what"]["reference"] for e in entity if e["role"] == "revision"]
    return _resource(
        "Provenance",
        rid,
        CC + "medcom-careCommunication-provenance",
        [("Mål", f"MessageHeader/{header['id']}"), ("Aktivitet", activity), *(("Svar på", a) for a in answers)],
        target=[reference(header)],
        occurredDateTime=sent,
        recorded=sent,
        activity={"coding": [{"system": terms.medcom["activityCodes"], "code": activity}]},
        agent=[{"who": reference(agent)}],
        entity=entity,
    )


def _message(rid: str, resources: Sequence[Resource], sent: str, terms: Terminology) -> Resource:
    """The Bundle, one entry per resource id (the first one wins)."""
    unique = [r for i, r in enumerate(resources) if r["id"] not in {earlier["id"] for earlier in resources[:i]}]
    return {
        "resourceType": "Bundle",
        "id": rid,
        "meta": {"profile": [CC + "medcom-careCommunication-message"]},
        "type": "message",
        "timestamp": sent,
        "entry": [{"fullUrl": terms.full_url(r["resourceType"], r["id"]), "resource": r} for r in unique],
    }


def reply_message(inbound: Resource, text: str, phone: str, now: datetime, terms: Terminology) -> Resource:
    header_in = inbound["entry"][0]["resource"]
    ids = partial(derived_id, f"{header_in['id']}/auto-reply")
    v4 = partial(derived_uuid4, f"{header_in['id']}/auto-reply")
    requester = _by_reference(inbound, header_in["sender"]["reference"])
    department = _by_reference(inbound, header_in["destination"][0]["receiver"]["reference"])
    communication_in = _by_reference(inbound, header_in["focus"][0]["reference"])
    sent = fhir_instant(now)
    practitioner, role = _automatic_author(ids)
    payload_id = f"urn:uuid:{v4('payload')}"
    earlier = [_earlier_payload(p) for p in communication_in.get("payload", [])]
    communication = _resource(
        "Communication",
        ids("Communication"),
        CC + "medcom-careCommunication-communication",
        [
            ("Tråd", communication_in["identifier"][0]["value"]),
            ("Svar", text),
            ("Patient", communication_in["subject"]["reference"]),
        ],
        **{
            k: communication_in[k]
            for k in ("identifier", "category", "priority", "subject", "topic", "encounter")
            if k in communication_in
        },
        status="unknown",
        payload=[*earlier, _text_payload(payload_id, text, sent, role, department, phone)],
    )
    destination = {**header_in["destination"][0], "endpoint": header_in["source"]["endpoint"]}
    header = _header(
        ids("MessageHeader"), department, requester, destination, header_in["destination"][0]["endpoint"], communication
    )
    entity = [
        {"role": "revision", "what": {"reference": f"MessageHeader/{header_in['id']}"}},
        {"role": "source", "what": {"identifier": {"value": payload_id}}},
    ]
    provenance = _provenance(ids("Provenance"), header, "reply-message", department, entity, sent, terms)
    kept = [e["resource"] for e in inbound["entry"][1:] if e["resource"]["id"] != communication_in["id"]]
    return _message(ids("Bundle"), [header, communication, *kept, role, practitioner, provenance], sent, terms)


@dataclass(frozen=True, slots=True)
class Author:
    name: str
    role: str
    phone: str


def new_message(
    *,
    seed: str,
    sender: Resource,
    receiver: Resource,
    patient: Resource,
    category: str,
    topic: str,
    text: str,
    author: Author,
    now: datetime,
    terms: Terminology,
    also: Sequence[Resource] = (),
) -> Resource:
    """A CareCommunication new-message from `sender` to `receiver` (MedComMessagingOrganizations) about `patient`.

    `also`: resources the patient references (e.g. the GP's Organization); one entry per resource id.
    """
    ids = partial(derived_id, seed)
    v4 = partial(derived_uuid4, seed)
    sent = fhir_instant(now)
    # The last word is the family name; split on any white space, so neither part is empty or only spaces.
    *given_words, family = author.name.split() or [author.name]
    given = " ".join(given_words)
    practitioner = _resource(
        "Practitioner",
        ids("Practitioner"),
        CORE + "medcom-core-practitioner",
        [("Navn", author.name)],
        name=[{"family": family, **({"given": [given]} if given else {})}],
    )
    role = _resource(
        "PractitionerRole",
        ids("PractitionerRole"),
        CORE + "medcom-core-practitionerrole",
        [("Practitioner", f"Practitioner/{practitioner['id']}"), ("Rolle", author.role)],
        practitioner=reference(practitioner),
        code=[{"text": author.role}],
    )
    payload_id = f"urn:uuid:{v4('payload')}"
    communication = _resource(
        "Communication",
        ids("Communication"),
        CC + "medcom-careCommunication-communication",
        [("Emne", topic), ("Tekst", text), ("Patient", f"Patient/{patient['id']}")],
        identifier=[{"value": f"urn:uuid:{v4('thread')}"}],
        status="unknown",
        category=[{"coding": [{"system": CATEGORY_SYSTEM, "code": category}]}],
        subject=reference(patient),
        topic={"text": topic},
        payload=[_text_payload(payload_id, text, sent, role, sender, author.phone)],
    )
    destination = {
        "extension": [
            {
                "url": terms.medcom["destinationUseExtension"],
                "valueCoding": {"system": terms.medcom["destinationUse"], "code": "primary"},
            }
        ],
        "endpoint": terms.endpoint(receiver["identifier"][0]["value"]),
    }
    header = _header(
        ids("MessageHeader"),
        sender,
        receiver,
        destination,
        terms.endpoint(sender["identifier"][0]["value"]),
        communication,
    )
    entity = [{"role": "source", "what": {"identifier": {"value": payload_id}}}]
    provenance = _provenance(ids("Provenance"), header, "new-message", sender, entity, sent, terms)
    resources = [header, communication, patient, sender, receiver, role, practitioner, provenance, *also]
    return _message(ids("Bundle"), resources, sent, terms)
