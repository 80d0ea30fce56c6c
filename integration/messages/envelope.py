"""The MedCom messaging envelope, one for every message we send, and the Organizations and Patient it names.

A `Message` describes what is not clinical content (event, sender and receiver with their endpoints,
focus, our Provenance's activity and entities, ids, time, profiles, narrative rows); `message_bundle`
builds MessageHeader + Provenance + Bundle from it (MedCom Messaging: a `message` Bundle whose first entry
is the MessageHeader; each message of a thread adds its Provenance). Used by the referral
(`messages.referral`), the CareCommunication, new and reply (`messages.care_communication`, which also
carries the GP status), and the acknowledgement (`messages.acknowledgement`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from integration.domain.cpr import Cpr
from integration.domain.identifiers import PatientNumber
from integration.domain.records import Organisation, Patient
from integration.fhir.ids import organisation_id
from integration.fhir.narrative import narrative
from integration.fhir.terminology import Terminology

Resource = dict[str, Any]


def fhir_instant(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def reference(resource: Resource) -> dict[str, str]:
    return {"reference": f"{resource['resourceType']}/{resource['id']}"}


def messaging_organization(org: Organisation, terms: Terminology) -> Resource:
    """A MedComMessagingOrganization: SOR and EAN identifiers (sender or receiver of a message)."""
    rid = organisation_id(org.sor)
    identifiers = [{"use": "official", "system": terms.identifiers["sor"], "value": org.sor}]
    if org.ean:
        identifiers.append({"system": terms.identifiers["ean"], "value": org.ean})
    return {
        "resourceType": "Organization",
        "id": rid,
        "meta": {"profile": [terms.profile("organization" if org.ean else "coreOrganization")]},
        "text": narrative("Organization", rid, [("Navn", org.name), ("SOR", org.sor), ("EAN", org.ean)]),
        "identifier": identifiers,
        "name": org.name,
    }


def gp_organization(sor: str, ydernummer: str, terms: Terminology) -> Resource:
    rid = organisation_id(sor)
    return {
        "resourceType": "Organization",
        "id": rid,
        "meta": {"profile": [terms.profile("coreOrganization")]},
        "text": narrative("Organization", rid, [("Egen læge, SOR", sor), ("Ydernummer", ydernummer)]),
        "identifier": [
            {"use": "official", "system": terms.identifiers["sor"], "value": sor},
            {"system": terms.identifiers["ydernummer"], "value": ydernummer},
        ],
    }


def _patient_identifier(number: PatientNumber, terms: Terminology) -> dict[str, str]:
    """dk-core's slices: a CPR number is `official`; a replacement number (X-eCPR, D-eCPR) is `temp`, in the
    system that issued it."""
    if isinstance(number, Cpr):
        return {"use": "official", "system": terms.identifiers["cpr"], "value": number.value}
    return {"use": "temp", "system": number.system, "value": number.value}


def patient_resource(patient: Patient, rid: str, gp: Resource | None, terms: Terminology) -> Resource:
    number, born = patient.cpr, patient.cpr.birth_date
    name: dict[str, Any] = {"use": "official", "family": patient.family_name}
    if patient.given_names:
        name["given"] = list(patient.given_names)
    municipality = "0" + patient.municipality_code
    resource: Resource = {
        "resourceType": "Patient",
        "id": rid,
        "meta": {"profile": [terms.profile("patient")]},
        "text": narrative(
            "Patient",
            rid,
            [
                ("Navn", " ".join((*patient.given_names, patient.family_name))),
                ("CPR" if isinstance(number, Cpr) else "Erstatnings-CPR", number.value),
                ("Født", born and born.isoformat()),
                ("Kommunekode", municipality),
                ("Egen læge", gp and f"Organization/{gp['id']}"),
            ],
        ),
        "identifier": [_patient_identifier(number, terms)],
        "name": [name],
        **({"birthDate": born.isoformat()} if born else {}),  # a replacement number gives no birth date
        "address": [
            {
                "extension": [
                    {
                        "url": terms.municipality_codes["extension"],
                        "valueCodeableConcept": {
                            "coding": [{"system": terms.municipality_codes["system"], "code": municipality}]
                        },
                    }
                ]
            }
        ],
    }
    if gp is not None:
        resource["generalPractitioner"] = [reference(gp)]
    return resource


Rows = tuple[tuple[str, object], ...]  # a narrative's rows: (label, value); a None or empty value leaves its row out


@dataclass(frozen=True, slots=True)
class Party:
    """A message's sender or receiver: its MedComMessagingOrganization and its endpoint (a URL naming its SOR entry)."""

    organization: Resource
    endpoint: str


@dataclass(frozen=True, slots=True)
class Profiles:
    """The profiles the Bundle, the MessageHeader and our Provenance claim; None claims none (the referral's,
    whose event no MedCom profile allows: decision 1)."""

    bundle: str | None = None
    header: str | None = None
    provenance: str | None = None


@dataclass(frozen=True, slots=True)
class MessageIds:
    """The ids the message mints: its Bundle, its MessageHeader and our Provenance (deterministic, `fhir.ids`)."""

    bundle: str
    header: str
    provenance: str


@dataclass(frozen=True, slots=True)
class Message:
    """A MedCom message as its envelope sees it: everything but the content's clinical meaning.

    The Bundle holds, in order: the MessageHeader, the `focus` resources, `content`, our Provenance (activity
    `activity`, target the MessageHeader, agent the sender) and `after_provenance`; one entry per resource
    (type and id), the first one kept. `destination` is a received destination a reply repeats (its extension
    and whatever else it holds); None gives a `primary` destination. `response` makes the MessageHeader an
    answer (an acknowledgement's); `definition` is the MessageDefinition it follows.
    """

    ids: MessageIds
    event: dict[str, str]  # MessageHeader.eventCoding
    sender: Party
    receiver: Party
    sent_at: datetime  # Bundle.timestamp and our Provenance's times, to the second
    activity: str  # MedCom activity code: new-message | reply-message | acknowledgement
    header_rows: Rows
    provenance_rows: Rows
    profiles: Profiles = Profiles()
    focus: tuple[Resource, ...] = ()
    content: tuple[Resource, ...] = ()
    after_provenance: tuple[Resource, ...] = ()
    entity: tuple[dict[str, Any], ...] = ()  # our Provenance's entities (source payload, revised message)
    destination: Mapping[str, Any] | None = None
    response: dict[str, Any] | None = None
    definition: str | None = None


def _meta(profile: str | None) -> dict[str, Any]:
    return {"meta": {"profile": [profile]}} if profile else {}


def _destination(message: Message, terms: Terminology) -> dict[str, Any]:
    """MessageHeader.destination: the received one repeated, or `primary`; endpoint and receiver are ours."""
    received = message.destination
    if received is None:
        use = {"system": terms.medcom["destinationUse"], "code": "primary"}
        received = {"extension": [{"url": terms.medcom["destinationUseExtension"], "valueCoding": use}]}
    return {
        **received,
        "endpoint": message.receiver.endpoint,
        "receiver": reference(message.receiver.organization),
    }


def message_header(message: Message, terms: Terminology) -> Resource:
    """The MessageHeader: event, destination, sender and source, then focus, response and definition where given."""
    rid = message.ids.header
    header: Resource = {
        "resourceType": "MessageHeader",
        "id": rid,
        **_meta(message.profiles.header),
        "text": narrative("MessageHeader", rid, message.header_rows),
        "eventCoding": message.event,
        "destination": [_destination(message, terms)],
        "sender": reference(message.sender.organization),
        "source": {"endpoint": message.sender.endpoint},
    }
    if message.focus:
        header["focus"] = [reference(r) for r in message.focus]
    if message.response is not None:
        header["response"] = message.response
    if message.definition is not None:
        header["definition"] = message.definition
    return header


def provenance(message: Message, terms: Terminology) -> Resource:
    """Our Provenance of the message: it targets the MessageHeader, its agent is the sender."""
    rid, sent = message.ids.provenance, fhir_instant(message.sent_at)
    resource: Resource = {
        "resourceType": "Provenance",
        "id": rid,
        **_meta(message.profiles.provenance),
        "text": narrative("Provenance", rid, message.provenance_rows),
        "target": [{"reference": f"MessageHeader/{message.ids.header}"}],
        "occurredDateTime": sent,
        "recorded": sent,
        "activity": {"coding": [{"system": terms.medcom["activityCodes"], "code": message.activity}]},
        "agent": [{"who": reference(message.sender.organization)}],
    }
    if message.entity:
        resource["entity"] = list(message.entity)
    return resource


def message_bundle(message: Message, terms: Terminology) -> Resource:
    """The MedCom message: a `message` Bundle of MessageHeader, focus, content, our Provenance and the rest."""
    resources = [
        message_header(message, terms),
        *message.focus,
        *message.content,
        provenance(message, terms),
        *message.after_provenance,
    ]
    return {
        "resourceType": "Bundle",
        "id": message.ids.bundle,
        **_meta(message.profiles.bundle),
        "type": "message",
        "timestamp": fhir_instant(message.sent_at),
        "entry": entries(resources, terms),
    }


def entries(resources: Iterable[Resource], terms: Terminology) -> list[dict[str, Any]]:
    """Bundle entries, one per resource (e.g. a department that is both sender and receiver appears once)."""
    found, seen = [], set()
    for resource in resources:
        key = (resource["resourceType"], resource["id"])
        if key not in seen:
            seen.add(key)
            found.append({"fullUrl": terms.full_url(*key), "resource": resource})
    return found
