"""Validation of every message before it leaves: FHIR R4 content and MedCom's messaging rules.

FHIR content is checked by fhir.resources (`resource_validation`). It does not check required
code bindings, the 64-character id limit or invariants, so `messaging_problems` checks those,
with the MedCom envelope rules, on every message.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from integration.errors import BuildError
from integration.fhir.resource_validation import fhir_problems, forget_validated

__all__ = [
    "document_problems",
    "fhir_problems",
    "forget_validated",
    "messaging_problems",
    "validate_document",
    "validate_message",
]

Resource = dict[str, Any]

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
DATETIME_WITH_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T")
ZONE_SUFFIX = re.compile(r"(Z|[+-]\d{2}:\d{2})$")
DESTINATION_USE = "http://medcomfhir.dk/ig/messaging/StructureDefinition/medcom-messaging-destinationUseExtension"
SOR = "urn:oid:1.2.208.176.1.1"
EAN = "https://www.gs1.org/gln"
CPR = "urn:oid:1.2.208.176.1.2"

_REQUEST_STATUS = {"draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"}
_EVENT_STATUS = {
    "registered",
    "preliminary",
    "final",
    "amended",
    "corrected",
    "cancelled",
    "entered-in-error",
    "unknown",
}
# Required bindings (FHIR R4) of the coded elements we emit, which the models do not enforce.
REQUIRED_CODES: dict[tuple[str, str], frozenset[str]] = {
    ("Bundle", "type"): frozenset(
        {
            "document",
            "message",
            "transaction",
            "transaction-response",
            "batch",
            "batch-response",
            "history",
            "searchset",
            "collection",
        }
    ),
    ("ServiceRequest", "status"): frozenset(_REQUEST_STATUS),
    ("ServiceRequest", "intent"): frozenset(
        {
            "proposal",
            "plan",
            "directive",
            "order",
            "original-order",
            "reflex-order",
            "filler-order",
            "instance-order",
            "option",
        }
    ),
    ("RiskAssessment", "status"): frozenset(_EVENT_STATUS),
    ("Observation", "status"): frozenset(_EVENT_STATUS),
    ("Communication", "status"): frozenset(
        {"preparation", "in-progress", "not-done", "on-hold", "stopped", "completed", "entered-in-error", "unknown"}
    ),
    ("Provenance", "entity.role"): frozenset({"derivation", "revision", "quotation", "source", "removal"}),
    ("MessageHeader", "response.code"): frozenset({"ok", "transient-error", "fatal-error"}),
    ("OperationOutcome", "issue.severity"): frozenset({"fatal", "error", "warning", "information"}),
    ("Patient", "name.use"): frozenset({"usual", "official", "temp", "nickname", "anonymous", "old", "maiden"}),
    ("Patient", "identifier.use"): frozenset({"usual", "official", "temp", "secondary", "old"}),
    ("Organization", "identifier.use"): frozenset({"usual", "official", "temp", "secondary", "old"}),
    ("Narrative", "status"): frozenset({"generated", "extensions", "additional", "empty"}),
    ("Composition", "status"): frozenset({"preliminary", "final", "amended", "entered-in-error"}),
}


def _values(node: Any, path: str) -> Iterator[Any]:
    head, _, rest = path.partition(".")
    value = node.get(head) if isinstance(node, dict) else None
    for item in value if isinstance(value, list) else ([] if value is None else [value]):
        if rest:
            yield from _values(item, rest)
        else:
            yield item


@dataclass
class _Found:
    references: list[str] = field(default_factory=list)
    timestamps: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)


def _walk(node: Any, found: _Found, path: str) -> None:
    """Collect references and timestamps, and the empty values FHIR forbids (invariant ele-1)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        if value in ("", [], {}, None):
            found.empty.append(f"{path}.{key}")
        elif key == "reference" and isinstance(value, str):
            found.references.append(value)
        elif isinstance(value, str):
            if value[10:11] == "T" and DATETIME_WITH_TIME.match(value):
                found.timestamps.append(value)
        else:
            _walk(value, found, f"{path}.{key}")


def _identifier_systems(resource: Resource) -> set[str]:
    return {i.get("system") for i in resource.get("identifier", [])}


_CODES_BY_OWNER: dict[str, list[tuple[str, frozenset[str]]]] = {}
for (_owner, _path), _allowed in REQUIRED_CODES.items():
    _CODES_BY_OWNER.setdefault(_owner, []).append((_path, _allowed))


def _code_problems(resource: Resource) -> list[str]:
    rtype, problems = resource["resourceType"], []
    for path, allowed in _CODES_BY_OWNER.get(rtype, ()):
        problems += [
            f"{rtype}/{resource['id']}: {path} {v!r} is not a valid code"
            for v in _values(resource, path)
            if v not in allowed
        ]
    text = resource.get("text")
    if text is not None and text.get("status") not in REQUIRED_CODES[("Narrative", "status")]:
        problems.append(f"{rtype}/{resource['id']}: text.status is not a valid code")
    return problems


def _header_problems(header: Resource, by_ref: dict[str, Resource], allow_cc: bool) -> list[str]:
    problems = []
    uses = [
        ext.get("valueCoding", {}).get("code")
        for dest in header.get("destination", [])
        for ext in dest.get("extension", [])
        if ext.get("url") == DESTINATION_USE
    ]
    if uses.count("primary") != 1 or len(uses) != len(header.get("destination", [])):
        problems.append("MessageHeader: needs exactly one primary destination, each destination marked primary or cc")
    if not allow_cc and "cc" in uses:
        problems.append("MessageHeader: cc destinations are not allowed for this message")
    parties = [header.get("sender", {}).get("reference")] + [
        d.get("receiver", {}).get("reference") for d in header.get("destination", [])
    ]
    for ref in parties:
        org = by_ref.get(ref or "")
        if org is None or org["resourceType"] != "Organization":
            problems.append(f"MessageHeader: sender/receiver {ref!r} is not an Organization in the bundle")
        elif not {SOR, EAN} <= _identifier_systems(org):
            problems.append(f"{ref}: a sender or receiver needs both an SOR and an EAN identifier")
    if not header.get("source", {}).get("endpoint"):
        problems.append("MessageHeader: source.endpoint is missing")
    return problems


def messaging_problems(bundle: Resource, *, allow_cc: bool = False) -> list[str]:
    """MedCom messaging rules, FHIR invariants and required codes that the models do not check."""
    problems: list[str] = []
    if bundle.get("type") != "message":
        problems.append("Bundle.type must be 'message'")
    if not UUID.fullmatch(str(bundle.get("id", ""))):
        problems.append("Bundle.id must be a UUID")
    entries = bundle.get("entry") or []
    resources = [e.get("resource", {}) for e in entries]
    if not resources or resources[0].get("resourceType") != "MessageHeader":
        return problems + ["entry[0] must be the MessageHeader"]
    by_ref = {f"{r['resourceType']}/{r['id']}": r for r in resources}
    header = resources[0]
    problems += _header_problems(header, by_ref, allow_cc)
    if not any(
        p.get("target", [{}])[0].get("reference") == f"MessageHeader/{header['id']}"
        for p in resources
        if p["resourceType"] == "Provenance"
    ):
        problems.append("no Provenance targets this message's MessageHeader")
    found = _Found(timestamps=[bundle.get("timestamp", "")])
    for entry, resource in zip(entries, resources, strict=True):
        rid, rtype = resource.get("id", ""), resource["resourceType"]
        if not UUID.fullmatch(rid) or not FHIR_ID.fullmatch(rid):
            problems.append(f"{rtype}: id {rid!r} must be a UUID of at most 64 characters")
        full_url = entry.get("fullUrl", "")
        if full_url != f"{rtype}/{rid}" and not full_url.endswith(f"/{rtype}/{rid}"):
            problems.append(f"{rtype}/{rid}: fullUrl does not name the resource")
        if not resource.get("text", {}).get("div"):
            problems.append(f"{rtype}/{rid}: narrative text is missing")
        problems += _code_problems(resource)
        # The narrative is checked above and is one string; a Provenance's target and entity may point
        # at earlier messages, which are not in this Bundle (the chain of a reply).
        skipped = ("text", "entity", "target") if rtype == "Provenance" else ("text",)
        _walk({k: v for k, v in resource.items() if k not in skipped}, found, f"{rtype}/{rid}")
    problems += [
        f"reference {ref!r} does not resolve inside the Bundle" for ref in found.references if ref not in by_ref
    ]
    problems += [f"timestamp {ts!r} has no time zone" for ts in found.timestamps if not ZONE_SUFFIX.search(ts)]
    problems += [f"{where}: empty value (FHIR elements need a value or children)" for where in found.empty]
    patients = [r for r in resources if r["resourceType"] == "Patient"]
    for patient in patients:
        cprs = [i for i in patient.get("identifier", []) if i.get("system") == CPR]
        if not cprs or any(i.get("use", "official") != "official" for i in cprs):
            problems.append(f"Patient/{patient['id']}: needs a CPR identifier, and its use must be official")
        if not any(n.get("family") for n in patient.get("name", [])):
            problems.append(f"Patient/{patient['id']}: needs a family name")
    return problems


def validate_message(bundle: Resource, *, allow_cc: bool = False) -> None:
    """Raise BuildError listing every problem: an invalid outbound message is a bug and must not leave."""
    problems = messaging_problems(bundle, allow_cc=allow_cc) + fhir_problems(bundle)
    if problems:
        raise BuildError("built message is invalid: " + "; ".join(problems))


def document_problems(bundle: Resource) -> list[str]:
    """FHIR document rules we rely on: a Composition first, an identifier, UUID ids, references inside."""
    problems = []
    entries = bundle.get("entry") or []
    resources = [e.get("resource", {}) for e in entries]
    if bundle.get("type") != "document" or not resources or resources[0].get("resourceType") != "Composition":
        problems.append("a document Bundle starts with its Composition")
    if not (bundle.get("identifier") or {}).get("value"):
        problems.append("a document Bundle needs an identifier (bdl-9)")
    by_ref = {f"{r.get('resourceType')}/{r.get('id')}" for r in resources}
    found = _Found(timestamps=[bundle.get("timestamp", "")])
    for resource in resources:
        rid, rtype = resource.get("id", ""), resource.get("resourceType")
        if not UUID.fullmatch(rid):
            problems.append(f"{rtype}: id {rid!r} must be a UUID")
        if not resource.get("text", {}).get("div"):
            problems.append(f"{rtype}/{rid}: narrative text is missing")
        problems += _code_problems(resource)
        _walk(resource, found, f"{rtype}/{rid}")
    problems += [
        f"reference {ref!r} does not resolve inside the Bundle" for ref in found.references if ref not in by_ref
    ]
    problems += [f"timestamp {ts!r} has no time zone" for ts in found.timestamps if not ZONE_SUFFIX.search(ts)]
    problems += [f"{where}: empty value (FHIR elements need a value or children)" for where in found.empty]
    return problems


def validate_document(bundle: Resource) -> None:
    problems = document_problems(bundle) + fhir_problems(bundle)
    if problems:
        raise BuildError("built document is invalid: " + "; ".join(problems))
