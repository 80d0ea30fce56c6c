"""The Bundle and its MessageHeader: a message's type and id, one primary destination, sender and receivers
that are Organizations in the Bundle with SOR and EAN ids, a Provenance for the header, entries each once
(bdl-7), entry parts only where the Bundle's type allows them (bdl-1 to bdl-4), one SOR id per
Organization, no modifier extension on an entry."""

from __future__ import annotations

from typing import Any

from integration.conformance.messaging_rules.base import (
    EAN,
    SOR,
    UNKNOWN_MODIFIER,
    UUID,
    Finding,
    Resource,
    as_dict,
    as_list,
)

DESTINATION_USE = "http://medcomfhir.dk/ig/messaging/StructureDefinition/medcom-messaging-destinationUseExtension"


def message_shell_findings(bundle: Resource) -> list[Finding]:
    """A message Bundle's type and id (a UUID)."""
    findings = []
    if bundle.get("type") != "message":
        findings.append(Finding("Bundle.type", "must be 'message'", "Bundle.type must be 'message'"))
    if not UUID.fullmatch(str(bundle.get("id", ""))):
        findings.append(Finding("Bundle.id", "must be a UUID", "Bundle.id must be a UUID"))
    return findings


def _identifier_systems(resource: Resource) -> set[str]:
    systems = (as_dict(i).get("system") for i in as_list(resource.get("identifier")))
    return {s for s in systems if isinstance(s, str)}


def header_findings(header: Resource, by_ref: dict[str, Resource], allow_cc: bool) -> list[Finding]:
    """The MessageHeader (MedCom messaging): one primary destination, each marked primary or cc (`cc` only
    when `allow_cc`); sender and receivers Organizations in the Bundle (`by_ref`, `Type/id`) with an SOR and
    an EAN id; a source endpoint."""
    findings = []
    destinations = [as_dict(d) for d in as_list(header.get("destination"))]
    uses = [
        as_dict(as_dict(ext).get("valueCoding")).get("code")
        for dest in destinations
        for ext in as_list(dest.get("extension"))
        if as_dict(ext).get("url") == DESTINATION_USE
    ]
    if uses.count("primary") != 1 or len(uses) != len(destinations):
        problem = "needs exactly one primary destination, each destination marked primary or cc"
        findings.append(Finding("MessageHeader.destination", problem, f"MessageHeader: {problem}"))
    if not allow_cc and "cc" in uses:
        problem = "cc destinations are not allowed for this message"
        findings.append(Finding("MessageHeader.destination", problem, f"MessageHeader: {problem}"))
    parties = [("MessageHeader.sender", as_dict(header.get("sender")).get("reference"))] + [
        ("MessageHeader.destination.receiver", as_dict(d.get("receiver")).get("reference")) for d in destinations
    ]
    for where, ref in parties:
        org = by_ref.get(ref) if isinstance(ref, str) else None
        if org is None or org.get("resourceType") != "Organization":
            findings.append(
                Finding(
                    where,
                    "is not an Organization in the Bundle",
                    f"MessageHeader: sender/receiver {ref!r} is not an Organization in the bundle",
                )
            )
        elif not {SOR, EAN} <= _identifier_systems(org):
            problem = "a sender or receiver needs both an SOR and an EAN identifier"
            findings.append(Finding(f"{where}.identifier", problem, f"{ref}: {problem}"))
    if not as_dict(header.get("source")).get("endpoint"):
        findings.append(
            Finding("MessageHeader.source.endpoint", "missing", "MessageHeader: source.endpoint is missing")
        )
    return findings


def _first_target(provenance: Resource) -> Any:
    targets = as_list(provenance.get("target"))
    return as_dict(targets[0]).get("reference") if targets else None


def provenance_findings(header: Resource, resources: list[Resource]) -> list[Finding]:
    """A Provenance whose first target is this message's MessageHeader."""
    if any(
        _first_target(p) == f"MessageHeader/{header.get('id')}"
        for p in resources
        if p.get("resourceType") == "Provenance"
    ):
        return []
    problem = "no Provenance targets this message's MessageHeader"
    return [Finding("Provenance.target", problem, problem)]


def repeated_entries(entries: list[dict[str, Any]], resources: list[Resource]) -> list[Finding]:
    """One MessageHeader (the first entry), each fullUrl once (bdl-7), each resource in one entry: where a
    resource repeats, which one a reference means is a guess, and our reply would repeat the guess."""
    findings, urls, seen = [], set(), set()
    headers = [r for r in resources if r.get("resourceType") == "MessageHeader"]
    if len(headers) > 1:
        problem = "a message has one MessageHeader, its first entry"
        findings.append(Finding("MessageHeader", problem, f"{len(headers)} MessageHeaders: {problem}"))
    for position, (entry, resource) in enumerate(zip(entries, resources, strict=True)):
        url, key = entry.get("fullUrl"), (resource.get("resourceType"), resource.get("id"))
        if isinstance(url, str) and url in urls:
            problem = "repeats the fullUrl of an earlier entry (bdl-7)"
            findings.append(
                Finding(f"Bundle.entry[{position}].fullUrl", problem, f"entry[{position}]: fullUrl {problem}")
            )
        elif all(isinstance(k, str) for k in key) and key in seen:
            problem = "the same resource is in an earlier entry too"
            findings.append(Finding(f"Bundle.entry[{position}].resource", problem, f"{key[0]}/{key[1]}: {problem}"))
        if isinstance(url, str):
            urls.add(url)
        if all(isinstance(k, str) for k in key):
            seen.add(key)
    return findings


# Bundle invariants of FHIR R4 on where entry parts and the total may appear (bdl-1 to bdl-4).
_BUNDLE_PLACES = (
    ("total", ("searchset", "history"), "bdl-1: a total only in a search set or history"),
    ("search", ("searchset",), "bdl-2: entry.search only in a search set"),
    ("request", ("batch", "transaction", "history"), "bdl-3: entry.request only in a batch, transaction or history"),
    ("response", ("batch-response", "transaction-response", "history"), "bdl-4: entry.response only in a response"),
)


def bundle_invariants(bundle: Resource, entries: list[dict[str, Any]]) -> list[Finding]:
    """bdl-1 to bdl-4: `total`, `entry.search`, `entry.request`, `entry.response` only where the Bundle's type
    allows them."""
    kind, findings = bundle.get("type"), []
    for key, allowed, problem in _BUNDLE_PLACES:
        if kind in allowed:
            continue
        if key == "total":
            if "total" in bundle:
                findings.append(Finding("Bundle.total", problem, f"Bundle.total: {problem}"))
            continue
        findings += [
            Finding(f"Bundle.entry[{i}].{key}", problem, f"entry[{i}].{key}: {problem}")
            for i, entry in enumerate(entries)
            if key in entry
        ]
    return findings


def _sors(organization: Resource) -> set[str]:
    values = (
        as_dict(i).get("value") for i in as_list(organization.get("identifier")) if as_dict(i).get("system") == SOR
    )
    return {v for v in values if isinstance(v, str)}


def routing_findings(resources: list[Resource]) -> list[Finding]:
    """Contradictions in who sends and who receives: an Organization with two different SOR ids.

    Endpoints are not held to their Organization's SOR id: an endpoint may belong to another SOR unit of the
    same organization, as in MedCom's own Flow3 example (source endpoint …16003, sender Organization …16000),
    and a reply goes back to the endpoint the message came from."""
    findings = []
    for org in resources:
        if org.get("resourceType") == "Organization" and len(_sors(org)) > 1:
            problem = "names two different SOR ids: which organization is meant cannot be told"
            findings.append(Finding("Organization.identifier", problem, f"Organization/{org.get('id')}: {problem}"))
    return findings


def entry_modifier_findings(entries: list[dict[str, Any]]) -> list[Finding]:
    """A modifierExtension on an entry: we understand none."""
    return [
        Finding(f"Bundle.entry[{i}].modifierExtension", UNKNOWN_MODIFIER, f"entry[{i}]: {UNKNOWN_MODIFIER}")
        for i, entry in enumerate(entries)
        if entry.get("modifierExtension") not in ([], None)
    ]
