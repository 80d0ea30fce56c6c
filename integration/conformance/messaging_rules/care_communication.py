"""MedCom CareCommunication's own rules: the resource types its Bundle holds, one Communication (status
`unknown`, one thread id, a category from MedCom's category codes) and one MessageHeader.focus."""

from __future__ import annotations

from integration.conformance.messaging_rules.base import Finding, Resource, as_dict, as_list, resource_type

CARE_COMMUNICATION_EVENT = "care-communication-message"
# MedCom's CareCommunication category codes: Communication.category is bound (required) to the ValueSet
# medcom-careCommunication-categories, which includes the whole CodeSystem medcom-careCommunication-categoryCodes;
# these are its codes in medcom.fhir.dk.terminology#2.0.1 (CodeSystem version 1.9.0), the terminology
# CareCommunication 5.0.4 pins (../shared/medcom/definitions/medcom.fhir.dk.terminology#2.0.1/
# CodeSystem-medcom-careCommunication-categoryCodes.json; copied here, never read at run time).
CARE_COMMUNICATION_CATEGORY_SYSTEM = (
    "http://medcomfhir.dk/ig/terminology/CodeSystem/medcom-careCommunication-categoryCodes"
)
CARE_COMMUNICATION_CATEGORIES = frozenset(
    {
        "alcohol-and-drug-treatment",
        "assistive-devices",
        "carecoordination",
        "decease",
        "discharge",
        "examination-results",
        "healthcare",
        "home-care-assessment",
        "medicine",
        "nursing",
        "outpatient",
        "psychiatry-social-disability",
        "regarding-referral",
        "telemedicine",
        "training",
        "acute-ambulant",
        "extended-care-responsibility",
        "other",
    }
)
# What a CareCommunication Bundle holds: medcom-careCommunication-message, `entry` (CareCommunication 5.0.4,
# ../shared/medcom/dk-medcom-carecommunication/profiles/MedComCareCommunicationMessage.fsh). The slicing is
# open, but a type outside these is one our flow would forward unread, so it is refused.
CARE_COMMUNICATION_TYPES = frozenset(
    {
        "MessageHeader",
        "Organization",
        "Provenance",
        "Communication",
        "Patient",
        "Encounter",
        "Practitioner",
        "PractitionerRole",
        "CareTeam",
    }
)


def care_communication_findings(header: Resource, resources: list[Resource]) -> list[Finding]:
    """CareCommunication's own rules: the resource types its Bundle may hold, exactly one Communication with
    status `unknown` (fixed by medcom-careCommunication-communication; entered-in-error is refused) and one
    thread identifier, and one MessageHeader.focus."""
    findings = []
    for i, resource in enumerate(resources):
        rtype = resource_type(resource)
        if rtype is not None and rtype not in CARE_COMMUNICATION_TYPES:
            problem = "a resource type a CareCommunication does not hold (medcom-careCommunication-message)"
            findings.append(Finding(f"Bundle.entry[{i}].resource", problem, f"{rtype}/{resource.get('id')}: {problem}"))
    communications = [r for r in resources if r.get("resourceType") == "Communication"]
    if len(communications) != 1:
        problem = "a CareCommunication holds exactly one Communication"
        findings.append(Finding("Communication", problem, f"{len(communications)} Communications: {problem}"))
    for communication in communications:
        rid = communication.get("id")
        if communication.get("status") != "unknown":
            problem = "must be 'unknown' (fixed by MedCom's CareCommunication)"
            findings.append(Finding("Communication.status", problem, f"Communication/{rid}: status {problem}"))
        if len(as_list(communication.get("identifier"))) > 1:
            problem = "holds more than one thread identifier (1..1 in MedCom's CareCommunication)"
            findings.append(Finding("Communication.identifier", problem, f"Communication/{rid}: identifier {problem}"))
    if len(as_list(header.get("focus"))) != 1:
        problem = "a CareCommunication's MessageHeader has exactly one focus"
        findings.append(Finding("MessageHeader.focus", problem, f"MessageHeader: {problem}"))
    return findings


def category_findings(communication: Resource) -> list[Finding]:
    """A category coded in MedCom's category system must be one of its codes (a required binding); a category
    in another system, or without a code, the TouchStone assertion reports (`touchstone`)."""
    rid, findings = communication.get("id"), []
    for i, category in enumerate(as_list(communication.get("category"))):
        for coding in map(as_dict, as_list(as_dict(category).get("coding"))):
            code = coding.get("code")
            if coding.get("system") != CARE_COMMUNICATION_CATEGORY_SYSTEM or code is None:
                continue
            if not isinstance(code, str) or code not in CARE_COMMUNICATION_CATEGORIES:
                problem = "is not a code of MedCom's CareCommunication categories (a required binding)"
                findings.append(
                    Finding("Communication.category", problem, f"Communication/{rid}: category[{i}] {problem}")
                )
    return findings
