"""Required codes: the FHIR R4 required bindings of the coded elements we emit, which the models do not
enforce, and the narrative's status."""

from __future__ import annotations

from integration.conformance.messaging_rules.base import Finding, Resource, as_dict, values_at

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
_CODES_BY_OWNER: dict[str, list[tuple[str, frozenset[str]]]] = {}
for (_owner, _path), _allowed in REQUIRED_CODES.items():
    _CODES_BY_OWNER.setdefault(_owner, []).append((_path, _allowed))


def code_findings(resource: Resource, rtype: str) -> list[Finding]:
    """Each of `REQUIRED_CODES` for `rtype` that holds another value, then a narrative status that is none
    of FHIR's."""
    rid, findings = resource.get("id"), []
    for path, allowed in _CODES_BY_OWNER.get(rtype, ()):
        findings += [
            Finding(f"{rtype}.{path}", "is not a valid code", f"{rtype}/{rid}: {path} {v!r} is not a valid code")
            for v in values_at(resource, path)
            if not isinstance(v, str) or v not in allowed
        ]
    text = resource.get("text")
    status = as_dict(text).get("status")
    if text is not None and (not isinstance(status, str) or status not in REQUIRED_CODES[("Narrative", "status")]):
        findings.append(
            Finding(f"{rtype}.text.status", "is not a valid code", f"{rtype}/{rid}: text.status is not a valid code")
        )
    return findings
