"""Validation of every message before it leaves: FHIR R4 content and MedCom's messaging rules.

FHIR content is checked by fhir.resources (`resource_validation`). It does not check required
code bindings, the 64-character id limit or invariants, so `messaging_problems` checks those,
with the MedCom envelope rules, on every message (`messaging_rules`).
"""

from __future__ import annotations

from typing import Any

from integration.errors import BuildError
from integration.fhir.messaging_rules import document_findings, messaging_findings
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


def messaging_problems(bundle: Any, *, allow_cc: bool = False) -> list[str]:
    """MedCom messaging rules, FHIR invariants and required codes that the models do not check."""
    return [finding.text for finding in messaging_findings(bundle, allow_cc=allow_cc)]


def validate_message(bundle: Resource, *, allow_cc: bool = False) -> None:
    """Raise BuildError listing every problem: an invalid outbound message is a bug and must not leave."""
    problems = messaging_problems(bundle, allow_cc=allow_cc) + fhir_problems(bundle)
    if problems:
        raise BuildError("built message is invalid: " + "; ".join(problems))


def document_problems(bundle: Any) -> list[str]:
    """FHIR document rules we rely on: a Composition first, an identifier, UUID ids, references inside."""
    return [finding.text for finding in document_findings(bundle)]


def validate_document(bundle: Resource) -> None:
    problems = document_problems(bundle) + fhir_problems(bundle)
    if problems:
        raise BuildError("built document is invalid: " + "; ".join(problems))
