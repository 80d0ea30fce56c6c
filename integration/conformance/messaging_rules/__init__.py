"""MedCom's messaging rules and the FHIR invariants and required codes the models do not check, as findings.

A finding says where (`field`, a FHIR path such as `Patient.name[0].family`), what (`problem`, never a
value from the message) and, for our own messages and `integration validate`, the full text with ids and
values (`text`). The rules read any JSON value without failing: a message from elsewhere may hold anything.
Our own messages are held to them before they leave; an inbound MedCom message is held to them where our
reply would repeat its content.

The rules live by concern: `bundle` (the Bundle and its MessageHeader), `elements` (ids, fullUrls,
references, empty values, narratives), `times`, `codes` (required bindings), `patient` (CPR and
replacement CPR, another patient's number, modifier extensions) and `care_communication`; this module
runs them in order (`messaging_findings`, `document_findings`) and is what callers import.
"""

from __future__ import annotations

from typing import Any

from integration.conformance.messaging_rules.base import (
    UUID,
    Finding,
    Place,
    Resource,
    as_dict,
    as_list,
    message_header,
    resource_type,
)
from integration.conformance.messaging_rules.bundle import (
    bundle_invariants,
    entry_modifier_findings,
    header_findings,
    message_shell_findings,
    provenance_findings,
    repeated_entries,
    routing_findings,
)
from integration.conformance.messaging_rules.care_communication import (
    CARE_COMMUNICATION_CATEGORIES,
    CARE_COMMUNICATION_CATEGORY_SYSTEM,
    CARE_COMMUNICATION_EVENT,
    care_communication_findings,
    category_findings,
)
from integration.conformance.messaging_rules.codes import REQUIRED_CODES, code_findings
from integration.conformance.messaging_rules.elements import (
    Collected,
    collect,
    collected_findings,
    full_url_finding,
    id_finding,
    narrative_finding,
    not_a_resource,
)
from integration.conformance.messaging_rules.patient import content_findings, patient_findings

__all__ = [
    "CARE_COMMUNICATION_CATEGORIES",
    "CARE_COMMUNICATION_CATEGORY_SYSTEM",
    "REQUIRED_CODES",
    "UUID",
    "Finding",
    "as_dict",
    "as_list",
    "document_findings",
    "message_header",
    "messaging_findings",
]


def messaging_findings(bundle: Any, *, allow_cc: bool = False) -> list[Finding]:
    """MedCom messaging rules, FHIR invariants and required codes that the models do not check.

    In this order: the Bundle's type and id; a MessageHeader first (else nothing more is checked), its
    destinations (`cc` ones only when `allow_cc`), sender and receivers; its Provenance; repeated entries;
    bdl-1 to bdl-4; one SOR id per Organization; modifier extensions and another patient's number anywhere;
    a CareCommunication's own rules; each entry (`_entry_findings`); references, timestamps and empty values;
    each Patient."""
    if not isinstance(bundle, dict):
        return [Finding("Bundle", "not a JSON object", "a message is a JSON object")]
    findings = message_shell_findings(bundle)
    entries = [as_dict(e) for e in as_list(bundle.get("entry"))]
    resources = [as_dict(e.get("resource")) for e in entries]
    if not resources or resources[0].get("resourceType") != "MessageHeader":
        problem = "must be the MessageHeader"
        return findings + [Finding("Bundle.entry[0]", problem, f"entry[0] {problem}")]
    by_ref = {f"{r.get('resourceType')}/{r.get('id')}": r for r in resources}
    header = resources[0]
    findings += header_findings(header, by_ref, allow_cc) + provenance_findings(header, resources)
    findings += repeated_entries(entries, resources)
    findings += bundle_invariants(bundle, entries) + routing_findings(resources)
    findings += content_findings(resources) + entry_modifier_findings(entries)
    if as_dict(header.get("eventCoding")).get("code") == CARE_COMMUNICATION_EVENT:
        findings += care_communication_findings(header, resources)
    found = Collected()
    this_message = f"MessageHeader/{header.get('id')}"
    for position, (entry, resource) in enumerate(zip(entries, resources, strict=True)):
        findings += _entry_findings(position, entry, resource, found, this_message)
    findings += collected_findings(found, by_ref, bundle)
    for patient in (r for r in resources if r.get("resourceType") == "Patient"):
        findings += patient_findings(patient, bundle)
    return findings


def _of_an_earlier_exchange(provenance: Resource, this_message: str) -> bool:
    """A Provenance of the chain that does not record this message (its target is an earlier MessageHeader)."""
    targets = [as_dict(t).get("reference") for t in as_list(provenance.get("target"))]
    return bool(targets) and this_message not in targets


def _entry_findings(
    position: int, entry: dict[str, Any], resource: Resource, found: Collected, this_message: str = ""
) -> list[Finding]:
    """One entry of a message: a resource, its id, its fullUrl, its narrative, its required codes (and a
    Communication's category); its references, timestamps and empty values go to `found`."""
    rtype = resource_type(resource)
    if rtype is None:
        return [not_a_resource(position)]
    rid = resource.get("id", "")
    findings = id_finding(resource, rtype) + full_url_finding(entry, position, rtype, rid)
    findings += narrative_finding(resource, rtype) + code_findings(resource, rtype)
    if rtype == "Communication":
        findings += category_findings(resource)
    # The narrative is checked above and is one string; a Provenance's target and entity may point
    # at earlier messages, which are not in this Bundle (the chain of a reply); so may the agent of a
    # Provenance recording an earlier exchange (its sender; MedCom's HospitalNotification examples: an SLHJ
    # carries the STIN's Provenance, whose agent is the admitting unit, not in the SLHJ's Bundle).
    skipped: tuple[str, ...] = ("text", "entity", "target") if rtype == "Provenance" else ("text",)
    if rtype == "Provenance" and _of_an_earlier_exchange(resource, this_message):
        skipped += ("agent",)
    collect({k: v for k, v in resource.items() if k not in skipped}, found, Place(f"{rtype}/{rid}", rtype))
    return findings


def document_findings(bundle: Any) -> list[Finding]:
    """FHIR document rules we rely on: a Composition first, an identifier, UUID ids, references inside."""
    if not isinstance(bundle, dict):
        return [Finding("Bundle", "not a JSON object", "a document is a JSON object")]
    findings = []
    resources = [as_dict(as_dict(e).get("resource")) for e in as_list(bundle.get("entry"))]
    if bundle.get("type") != "document" or not resources or resources[0].get("resourceType") != "Composition":
        problem = "a document Bundle starts with its Composition"
        findings.append(Finding("Bundle.entry[0]", problem, problem))
    if not as_dict(bundle.get("identifier")).get("value"):
        problem = "a document Bundle needs an identifier (bdl-9)"
        findings.append(Finding("Bundle.identifier", problem, problem))
    known = {f"{r.get('resourceType')}/{r.get('id')}" for r in resources}
    found = Collected()
    for position, resource in enumerate(resources):
        rtype = resource_type(resource)
        if rtype is None:
            findings.append(not_a_resource(position))
            continue
        rid = resource.get("id", "")
        if not isinstance(rid, str) or not UUID.fullmatch(rid):
            findings.append(Finding(f"{rtype}.id", "must be a UUID", f"{rtype}: id {rid!r} must be a UUID"))
        findings += narrative_finding(resource, rtype) + code_findings(resource, rtype)
        collect(resource, found, Place(f"{rtype}/{rid}", rtype))
    return findings + collected_findings(found, known, bundle)
