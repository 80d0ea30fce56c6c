"""Identifiers and references: UUID ids, fullUrls that name their resource, references that resolve inside
the Bundle, no empty values (ele-1), a narrative in every resource; the walk that collects them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from integration.conformance.messaging_rules.base import UUID, Finding, Place, Resource, as_dict
from integration.conformance.messaging_rules.times import is_timestamp, time_findings

FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
EMPTY = "empty value (FHIR elements need a value or children)"


@dataclass
class Collected:
    """What `collect` found in the resources walked so far."""

    references: list[tuple[Place, str]] = field(default_factory=list)
    timestamps: list[tuple[Place, str]] = field(default_factory=list)
    empty: list[Place] = field(default_factory=list)


def collect(node: Any, found: Collected, at: Place) -> None:
    """Collect references and timestamps, and the empty values FHIR forbids (invariant ele-1)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        here = at.child(key)
        if value in ("", [], {}, None):
            found.empty.append(here)
        elif key == "reference" and isinstance(value, str):
            found.references.append((here, value))
        elif isinstance(value, str):
            if is_timestamp(value):
                found.timestamps.append((here, value))
        else:
            collect(value, found, here)


def collected_findings(found: Collected, known: set[str] | dict[str, Any], bundle: Resource) -> list[Finding]:
    """References that do not resolve (not in `known`, `Type/id`), the Bundle's and other timestamps without
    a zone (`times`), empty values."""
    findings = [
        Finding(
            at.field.removesuffix(".reference"),
            "the reference does not resolve inside the Bundle",
            f"reference {ref!r} does not resolve inside the Bundle",
        )
        for at, ref in found.references
        if ref not in known
    ]
    findings += time_findings(bundle, found.timestamps)
    return findings + [Finding(at.field, EMPTY, f"{at.text}: {EMPTY}") for at in found.empty]


def not_a_resource(position: int) -> Finding:
    where = f"Bundle.entry[{position}].resource"
    return Finding(where, "not a FHIR resource (no resourceType)", f"entry[{position}]: not a FHIR resource")


def id_finding(resource: Resource, rtype: str) -> list[Finding]:
    """MedCom's ids: a UUID, which is a FHIR id (at most 64 characters)."""
    rid = resource.get("id", "")
    if isinstance(rid, str) and UUID.fullmatch(rid) and FHIR_ID.fullmatch(rid):
        return []
    problem = "must be a UUID of at most 64 characters" if "id" in resource else "missing: MedCom requires a UUID id"
    return [Finding(f"{rtype}.id", problem, f"{rtype}: id {rid!r} must be a UUID of at most 64 characters")]


def full_url_finding(entry: dict[str, Any], position: int, rtype: str, rid: Any) -> list[Finding]:
    """An entry's fullUrl names its resource: `Type/id`, or an absolute URL ending so."""
    full_url = entry.get("fullUrl", "")
    if isinstance(full_url, str) and (full_url == f"{rtype}/{rid}" or full_url.endswith(f"/{rtype}/{rid}")):
        return []
    problem = "fullUrl does not name the resource"
    return [Finding(f"Bundle.entry[{position}].fullUrl", problem, f"{rtype}/{rid}: {problem}")]


def narrative_finding(resource: Resource, rtype: str) -> list[Finding]:
    if as_dict(resource.get("text")).get("div"):
        return []
    problem = "narrative missing: MedCom requires one in every resource"
    return [Finding(f"{rtype}.text", problem, f"{rtype}/{resource.get('id', '')}: narrative text is missing")]
