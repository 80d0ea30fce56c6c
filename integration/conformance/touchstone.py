"""MedCom's TouchStone test scripts' assertions, ported to FHIRPath and evaluated with fhirpathpy.

Which assertions apply is chosen by the message's event (`MessageHeader.eventCoding.code`): the
CareCommunication, acknowledgement and our referral scripts (new, update and cancel referral). A failed
assertion is a finding at the element the acknowledgement's issue names (`Assertion.field`); it names the
assertion, never a value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from integration.conformance.messaging_rules import Finding, as_dict, as_list
from integration.conformance.profile_check import compiled_fhirpath

UUID4 = "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
HEADER = "Bundle.entry[0].resource"
CATEGORY_CODES = "http://medcomfhir.dk/ig/terminology/CodeSystem/medcom-careCommunication-categoryCodes"


@dataclass(frozen=True, slots=True)
class Assertion:
    name: str
    expression: str  # FHIRPath over the Bundle; must evaluate to [true]
    field: str = "Bundle"  # where a failure is reported (the acknowledgement's issue expression)


CARE_COMMUNICATION = (
    Assertion(
        "event is care-communication-message",
        f"{HEADER}.event.as(Coding).code = 'care-communication-message'",
        "MessageHeader.eventCoding",
    ),
    Assertion(
        "a Provenance targets this MessageHeader (TouchStone assertProvenanceTarget)",
        "Bundle.entry.resource.ofType(Provenance).where(target.reference.contains(%resource.entry[0].resource.id)).exists()",
        "Provenance.target",
    ),
    Assertion(
        "the latest Provenance's activity is new-, reply- or forward-message",
        "Bundle.entry.resource.ofType(Provenance).where(target.reference.contains(%resource.entry[0].resource.id))"
        ".activity.coding.code.all($this in ('new-message' | 'reply-message' | 'forward-message'))",
        "Provenance.activity",
    ),
    Assertion(
        "Communication.identifier is a urn:uuid v4 (the thread id)",
        f"Bundle.entry.resource.ofType(Communication).identifier.value.all(matches('^urn:uuid:{UUID4}$'))",
        "Communication.identifier",
    ),
    Assertion(
        "MessageHeader.definition names CareCommunication 5.x",
        f"{HEADER}.definition.matches('^http://medcomfhir.dk/ig/messagedefinitions/MessageDefinition/"
        "MedComCareCommunicationMessageDefinition[|]5[.][0-9]{1,2}$')",
        "MessageHeader.definition",
    ),
    Assertion(
        "exactly one Patient (medcom-careCommunication-2)",
        "Bundle.entry.resource.ofType(Patient).count() = 1",
        "Patient",
    ),
    Assertion(
        "the category is one coding with MedCom's category system and a code (required binding)",
        "Bundle.entry.resource.ofType(Communication).all(category.count() = 1 and category.coding.count() = 1 and "
        f"category.coding.system = '{CATEGORY_CODES}' and category.coding.code.exists())",
        "Communication.category",
    ),
    Assertion(
        "a topic when the category is other (medcom-careCommunication-6)",
        "Bundle.entry.resource.ofType(Communication).all(category.coding.code = 'other' implies topic.text.exists())",
        "Communication.topic",
    ),
    Assertion(
        "priority only with regarding-referral (medcom-careCommunication-5)",
        "Bundle.entry.resource.ofType(Communication).all(priority.exists() implies "
        "category.coding.code = 'regarding-referral')",
        "Communication.priority",
    ),
    Assertion(
        "the MessageHeader's profile is the CareCommunication header (medcom-careCommunication-1)",
        f"{HEADER}.meta.profile.exists($this.startsWith("
        "'http://medcomfhir.dk/ig/carecommunication/StructureDefinition/medcom-careCommunication-messageHeader'))",
        "MessageHeader.meta.profile",
    ),
)
ACKNOWLEDGEMENT = (
    Assertion("event is acknowledgement-message", f"{HEADER}.event.as(Coding).code = 'acknowledgement-message'"),
    Assertion(
        "exactly two Provenances (TouchStone assertProvenanceEntityCount)",
        "Bundle.entry.resource.ofType(Provenance).count() = 2",
    ),
    Assertion(
        "exactly one Provenance with activity acknowledgement",
        "Bundle.entry.resource.ofType(Provenance).where(activity.coding.code = 'acknowledgement').count() = 1",
    ),
    Assertion(
        "one Provenance's entity is the acknowledged MessageHeader (TouchStone assertMessageHeaderid, by id)",
        "Bundle.entry.resource.ofType(Provenance).where(entity.what.reference = 'MessageHeader/' + "
        "%resource.entry[0].resource.response.identifier).count() = 1",
    ),
    Assertion(
        "a Provenance targets this MessageHeader (TouchStone assertProvenanceTarget, by id)",
        "Bundle.entry.resource.ofType(Provenance).where(target.reference.contains(%resource.entry[0].resource.id))"
        ".exists()",
    ),
    Assertion(
        "an OperationOutcome when the response is not ok (medcom-acknowledgement-1)",
        f"{HEADER}.response.code = 'ok' or Bundle.entry.resource.ofType(OperationOutcome).exists()",
    ),
)
REFERRAL = (
    Assertion("focus is a ServiceRequest", f"{HEADER}.focus.reference.all(startsWith('ServiceRequest/'))"),
    Assertion(
        "the ServiceRequest has one category from our referral categories",
        "Bundle.entry.resource.ofType(ServiceRequest).category.coding.code.all($this in "
        "('gop-specialised' | 'gop-general' | 'municipal-rehabilitation'))",
    ),
    Assertion(
        "a RiskAssessment supports the referral",
        "Bundle.entry.resource.ofType(ServiceRequest).supportingInfo.reference.where(startsWith('RiskAssessment/'))"
        ".exists()",
    ),
)
# An update replaces a referral sent before; a cancellation carries the referral as it was, revoked.
REFERRAL_UPDATE = (
    *REFERRAL,
    Assertion(
        "the ServiceRequest names what it replaces",
        "Bundle.entry.resource.ofType(ServiceRequest).replaces.exists()",
        "ServiceRequest.replaces",
    ),
)
REFERRAL_CANCELLATION = (
    *REFERRAL,
    Assertion(
        "the ServiceRequest is revoked",
        "Bundle.entry.resource.ofType(ServiceRequest).status = 'revoked'",
        "ServiceRequest.status",
    ),
)
BY_EVENT = {
    "care-communication-message": CARE_COMMUNICATION,
    "acknowledgement-message": ACKNOWLEDGEMENT,
    "new-referral": REFERRAL,
    "update-referral": REFERRAL_UPDATE,
    "cancel-referral": REFERRAL_CANCELLATION,
}


def assertion_findings(bundle: dict[str, Any]) -> list[Finding]:
    """The TouchStone assertions of the message's event that are not met, each where it is reported; the
    problem names the assertion, never a value."""
    header = as_dict(as_dict((as_list(bundle.get("entry")) or [{}])[0]).get("resource"))
    event = as_dict(header.get("eventCoding")).get("code")
    findings = []
    for assertion in BY_EVENT.get(event if isinstance(event, str) else "", ()):
        try:
            result = compiled_fhirpath(assertion.expression)(bundle, {"resource": bundle})
        except Exception as exc:  # noqa: BLE001 - a message the engine cannot read fails the assertion, with why
            problem = f"{assertion.name}: could not be evaluated ({type(exc).__name__})"
        else:
            if result == [True]:
                continue
            problem = f"{assertion.name}: not met"
        findings.append(Finding(assertion.field, problem, problem))
    return findings


def fhirpath_findings(bundle: dict[str, Any]) -> list[str]:
    """The assertions not met, as text (`assertion_findings`)."""
    return [finding.text for finding in assertion_findings(bundle)]
