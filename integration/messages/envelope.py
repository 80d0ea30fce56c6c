"""The MedCom messaging envelope: Bundle, MessageHeader, Provenance, Organizations and Patient."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from integration.domain.cpr import Cpr
from integration.domain.identifiers import PatientNumber
from integration.domain.records import Organisation, Patient
from integration.fhir.ids import organisation_id
from integration.fhir.narrative import narrative
from integration.fhir.terminology import Coding, Terminology

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


@dataclass(frozen=True, slots=True)
class Envelope:
    """Everything about a message that is not its clinical content."""

    bundle_id: str
    header_id: str
    provenance_id: str
    event: Coding
    sender: Resource
    receiver: Resource
    sent_at: datetime


def message_header(env: Envelope, focus: Resource, terms: Terminology) -> Resource:
    """MedCom's messaging header in all but the event (no MedCom referral event exists), so it claims no profile:
    a header with our event would break the required binding of MedComMessagingMessageHeader (decision 1)."""
    receiver_sor = env.receiver["identifier"][0]["value"]
    sender_sor = env.sender["identifier"][0]["value"]
    return {
        "resourceType": "MessageHeader",
        "id": env.header_id,
        "text": narrative(
            "MessageHeader",
            env.header_id,
            [
                ("Hændelse", f"{env.event.code} ({env.event.display})" if env.event.display else env.event.code),
                ("Modtager", f"{env.receiver['name']} (Organization/{env.receiver['id']})"),
                ("Modtagers endpoint", terms.endpoint(receiver_sor)),
                ("Afsender", f"{env.sender['name']} (Organization/{env.sender['id']})"),
                ("Afsenders endpoint", terms.endpoint(sender_sor)),
                ("Fokus", f"{focus['resourceType']}/{focus['id']}"),
            ],
        ),
        "eventCoding": env.event.as_fhir(),
        "destination": [
            {
                "extension": [
                    {
                        "url": terms.medcom["destinationUseExtension"],
                        "valueCoding": {"system": terms.medcom["destinationUse"], "code": "primary"},
                    }
                ],
                "endpoint": terms.endpoint(receiver_sor),
                "receiver": reference(env.receiver),
            }
        ],
        "sender": reference(env.sender),
        "source": {"endpoint": terms.endpoint(sender_sor)},
        "focus": [reference(focus)],
    }


def provenance(env: Envelope, activity: str, terms: Terminology) -> Resource:
    """MedCom's messaging Provenance in content; it claims no profile, since that profile's target must be a
    MedCom messaging MessageHeader, which the referral's is not (decision 1)."""
    sent = fhir_instant(env.sent_at)
    return {
        "resourceType": "Provenance",
        "id": env.provenance_id,
        "text": narrative(
            "Provenance",
            env.provenance_id,
            [
                ("Mål", f"MessageHeader/{env.header_id}"),
                ("Tidspunkt", sent),
                ("Aktivitet", activity),
                ("Aktør", f"Organization/{env.sender['id']}"),
            ],
        ),
        "target": [{"reference": f"MessageHeader/{env.header_id}"}],
        "occurredDateTime": sent,
        "recorded": sent,
        "activity": {"coding": [{"system": terms.medcom["activityCodes"], "code": activity}]},
        "agent": [{"who": reference(env.sender)}],
    }


def message_bundle(env: Envelope, focus: Resource, content: Iterable[Resource], terms: Terminology) -> Resource:
    """A MedCom-style message: MessageHeader first, then the focus, the content, the Organizations and the
    Provenance. Like its header, the Bundle claims no MedCom profile (medcom-messaging-1 needs a MedCom header)."""
    resources: list[Resource] = [
        message_header(env, focus, terms),
        focus,
        *content,
        env.sender,
        env.receiver,
        provenance(env, "new-message", terms),
    ]
    return {
        "resourceType": "Bundle",
        "id": env.bundle_id,
        "type": "message",
        "timestamp": fhir_instant(env.sent_at),
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
