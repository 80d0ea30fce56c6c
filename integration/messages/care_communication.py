"""Automatic replies to a MedCom CareCommunication: a `reply-message` in the same thread.

The reply repeats every earlier text payload (attachments without their data), adds ours, carries
every earlier Provenance plus a `reply-message` one pointing at the message it answers, and goes
from the department that received the request back to its sender.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from integration.errors import InvalidInput
from integration.fhir.ids import derived_id, derived_uuid4
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

CC = "http://medcomfhir.dk/ig/carecommunication/StructureDefinition/"
CORE = "http://medcomfhir.dk/ig/core/StructureDefinition/"
CATEGORY_SYSTEM = "http://medcomfhir.dk/ig/terminology/CodeSystem/medcom-careCommunication-categoryCodes"
DEFINITION = "http://medcomfhir.dk/ig/messagedefinitions/MessageDefinition/MedComCareCommunicationMessageDefinition|5.0"
EVENT = {
    "system": "http://medcomfhir.dk/ig/terminology/CodeSystem/medcom-messaging-eventCodes",
    "code": "care-communication-message",
}
PROFILES = Profiles(
    bundle=CC + "medcom-careCommunication-message",
    header=CC + "medcom-careCommunication-messageHeader",
    provenance=CC + "medcom-careCommunication-provenance",
)


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


def _one_per_id(resources: Iterable[Resource], taken: set[str], ours: frozenset[str]) -> tuple[Resource, ...]:
    """The CareCommunication's rule: one entry per resource id, the first one kept (`taken`: ids already in).

    Raises InvalidInput when a repeated resource has the id of one of ours (`ours`: the MessageHeader, the
    CareCommunication, our Provenance): keeping either would silently drop the other."""
    kept = []
    for resource in resources:
        if resource["id"] in ours:
            raise InvalidInput(
                f"{resource['resourceType']}.id", "is the id of a resource of our reply; ids must be unique"
            )
        if resource["id"] not in taken:
            taken.add(resource["id"])
            kept.append(resource)
    return tuple(kept)


def _header_rows(sender: Party, receiver: Party, communication: Resource) -> Rows:
    return (
        ("Hændelse", "care-communication-message"),
        ("Til", f"Organization/{receiver.organization['id']}"),
        ("Fra", f"Organization/{sender.organization['id']}"),
        ("Fokus", f"Communication/{communication['id']}"),
    )


def _provenance_rows(header_id: str, activity: str, entity: Sequence[dict[str, Any]]) -> Rows:
    answers = [e["what"]["reference"] for e in entity if e["role"] == "revision"]
    return (("Mål", f"MessageHeader/{header_id}"), ("Aktivitet", activity), *(("Svar på", a) for a in answers))


@dataclass(frozen=True, slots=True)
class _Thread:
    """What a CareCommunication message carries besides its Communication: who writes to whom, what the
    Bundle holds after it (before and after our Provenance), our Provenance's activity and entities, and
    the received destination a reply repeats."""

    sender: Party
    receiver: Party
    content: Sequence[Resource]
    activity: str
    entity: tuple[dict[str, Any], ...]
    after_provenance: Sequence[Resource] = ()
    destination: Mapping[str, Any] | None = None


def _message(
    ids: Callable[[str], str], communication: Resource, thread: _Thread, now: datetime, terms: Terminology
) -> Resource:
    """The CareCommunication message in MedCom's envelope, one entry per resource id (the first one wins)."""
    message_ids = MessageIds(bundle=ids("Bundle"), header=ids("MessageHeader"), provenance=ids("Provenance"))
    ours = frozenset({message_ids.header, communication["id"], message_ids.provenance})
    taken = set(ours)
    message = Message(
        ids=message_ids,
        event=EVENT,
        sender=thread.sender,
        receiver=thread.receiver,
        sent_at=now,
        activity=thread.activity,
        header_rows=_header_rows(thread.sender, thread.receiver, communication),
        provenance_rows=_provenance_rows(message_ids.header, thread.activity, thread.entity),
        profiles=PROFILES,
        focus=(communication,),
        content=_one_per_id(thread.content, taken, ours),
        after_provenance=_one_per_id(thread.after_provenance, taken, ours),
        entity=thread.entity,
        destination=thread.destination,
        definition=DEFINITION,
    )
    return message_bundle(message, terms)


def _reply_communication(
    ids: Callable[[str], str], communication_in: Resource, text: str, payload: dict[str, Any]
) -> Resource:
    """The reply's Communication: the thread, patient and category of the one it answers, its payloads
    (attachments without their data), then ours."""
    earlier = [_earlier_payload(p) for p in communication_in.get("payload", [])]
    return _resource(
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
        payload=[*earlier, payload],
    )


def reply_message(inbound: Resource, text: str, phone: str, now: datetime, terms: Terminology) -> Resource:
    """Our `reply-message` to the CareCommunication `inbound`: from the department it was sent to, back to
    its sender's endpoint, repeating every earlier resource and Provenance of the thread."""
    header_in = inbound["entry"][0]["resource"]
    ids = partial(derived_id, f"{header_in['id']}/auto-reply")
    v4 = partial(derived_uuid4, f"{header_in['id']}/auto-reply")
    requester = _by_reference(inbound, header_in["sender"]["reference"])
    department = _by_reference(inbound, header_in["destination"][0]["receiver"]["reference"])
    communication_in = _by_reference(inbound, header_in["focus"][0]["reference"])
    practitioner, role = _automatic_author(ids)
    payload_id = f"urn:uuid:{v4('payload')}"
    payload = _text_payload(payload_id, text, fhir_instant(now), role, department, phone)
    communication = _reply_communication(ids, communication_in, text, payload)
    kept = [e["resource"] for e in inbound["entry"][1:] if e["resource"]["id"] != communication_in["id"]]
    thread = _Thread(
        sender=Party(department, header_in["destination"][0]["endpoint"]),
        receiver=Party(requester, header_in["source"]["endpoint"]),
        content=[*kept, role, practitioner],
        activity="reply-message",
        entity=(
            {"role": "revision", "what": {"reference": f"MessageHeader/{header_in['id']}"}},
            {"role": "source", "what": {"identifier": {"value": payload_id}}},
        ),
        destination=header_in["destination"][0],
    )
    return _message(ids, communication, thread, now, terms)


@dataclass(frozen=True, slots=True)
class Author:
    name: str
    role: str
    phone: str


def _named_author(author: Author, ids: Callable[[str], str]) -> tuple[Resource, Resource]:
    """The Practitioner and PractitionerRole of a named author."""
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
    return practitioner, role


def _new_communication(
    ids: Callable[[str], str], thread_id: str, patient: Resource, category: str, topic: str, payload: dict[str, Any]
) -> Resource:
    """The Communication that opens a thread: category, topic and one text payload about `patient`."""
    return _resource(
        "Communication",
        ids("Communication"),
        CC + "medcom-careCommunication-communication",
        [("Emne", topic), ("Tekst", payload["contentString"]), ("Patient", f"Patient/{patient['id']}")],
        identifier=[{"value": thread_id}],
        status="unknown",
        category=[{"coding": [{"system": CATEGORY_SYSTEM, "code": category}]}],
        subject=reference(patient),
        topic={"text": topic},
        payload=[payload],
    )


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
    practitioner, role = _named_author(author, ids)
    payload_id = f"urn:uuid:{v4('payload')}"
    payload = _text_payload(payload_id, text, fhir_instant(now), role, sender, author.phone)
    communication = _new_communication(ids, f"urn:uuid:{v4('thread')}", patient, category, topic, payload)
    thread = _Thread(
        sender=Party(sender, terms.endpoint(sender["identifier"][0]["value"])),
        receiver=Party(receiver, terms.endpoint(receiver["identifier"][0]["value"])),
        content=[patient, sender, receiver, role, practitioner],
        activity="new-message",
        entity=({"role": "source", "what": {"identifier": {"value": payload_id}}},),
        after_provenance=also,
    )
    return _message(ids, communication, thread, now, terms)


def forward_message(
    inbound: Resource, receiver: Resource, text: str, phone: str, now: datetime, terms: Terminology
) -> Resource:
    """Our `forward-message` of the CareCommunication `inbound` to `receiver` (a MedComMessagingOrganization):
    a message of its own, from the department the request was sent to, to the receiver's endpoint.

    MedCom forbids a cc destination on a CareCommunication (MessageHeader `destination[cc] ..0`), so a copy is
    a forward: new Bundle, MessageHeader and Provenance ids, a new thread id (Communication.identifier "SHALL
    be new when forwarding"), every earlier payload with its attachments' content ("a forward SHALL include the
    base64 content again"), our payload `text` (the activity's `source` entity) and a `revision` entity to the
    forwarded MessageHeader. Ids derive from the inbound MessageHeader id and the receiver's SOR, so a
    redelivery rebuilds the same message."""
    header_in = inbound["entry"][0]["resource"]
    seed = f"{header_in['id']}/forward/{receiver['identifier'][0]['value']}"
    ids, v4 = partial(derived_id, seed), partial(derived_uuid4, seed)
    forwarder = _by_reference(inbound, header_in["destination"][0]["receiver"]["reference"])
    communication_in = _by_reference(inbound, header_in["focus"][0]["reference"])
    practitioner, role = _automatic_author(ids)
    payload_id = f"urn:uuid:{v4('payload')}"
    payload = _text_payload(payload_id, text, fhir_instant(now), role, forwarder, phone)
    communication = _resource(
        "Communication",
        ids("Communication"),
        CC + "medcom-careCommunication-communication",
        [
            ("Videresendt", f"MessageHeader/{header_in['id']}"),
            ("Tekst", text),
            ("Patient", communication_in["subject"]["reference"]),
        ],
        **{
            k: communication_in[k]
            for k in ("category", "priority", "subject", "topic", "encounter")
            if k in communication_in
        },
        identifier=[{"value": f"urn:uuid:{v4('thread')}"}],
        status="unknown",
        payload=[*communication_in.get("payload", []), payload],
    )
    kept = [e["resource"] for e in inbound["entry"][1:] if e["resource"]["id"] != communication_in["id"]]
    thread = _Thread(
        sender=Party(forwarder, header_in["destination"][0]["endpoint"]),
        receiver=Party(receiver, terms.endpoint(receiver["identifier"][0]["value"])),
        content=[*kept, receiver, role, practitioner],
        activity="forward-message",
        entity=(
            {"role": "source", "what": {"identifier": {"value": payload_id}}},
            {"role": "revision", "what": {"reference": f"MessageHeader/{header_in['id']}"}},
        ),
    )
    return _message(ids, communication, thread, now, terms)
