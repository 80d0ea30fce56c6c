"""The gate every FHIR message and document passes before it leaves: the fast layers of `integration validate`,
in this order (their table, shared with `validate` and what we receive, is `layers`):

    MedCom's messaging rules, or the document     `messaging_rules.messaging_findings` / `document_findings`:
    rules, with FHIR's invariants and required    bdl-7, fullUrl ↔ resource, one MessageHeader first,
    codes the models do not check                 UUID ids, narratives present, required codes
    FHIR R4 content (the generated R4 schema)     `r4_validator.content_errors`: jsonschema-rs and a calendar
                                                  check of dates (docs/decisions/0030-message-path-validator.md)
    the TouchStone assertions of its event        `touchstone.assertion_findings`
    FHIR's narrative rules (txt-1, txt-2)         `layers.narrative_findings` (`profile_check.html_checks` on
                                                  every `text.div`): well-formed XHTML, no active content,
                                                  some text

The profile layer (snapshots, cardinality, bindings) is `validate`'s alone, for its cost. An output that
fails the gate is never published: the input it was built from is refused (`Unsendable`, a Rejected, so
dead-lettered and a MedCom sender answered fatal-error) naming the output's failing element. It is
usually content we repeated that the input's own reader let through (issue #11, point 4), else a defect
of ours; the dead letter can be replayed after the fix either way.
"""

from __future__ import annotations

from typing import Any

from integration.conformance.layers import LayerFinding, Use, layer_findings, narrative_findings
from integration.conformance.messaging_rules import document_findings, messaging_findings
from integration.conformance.resource_validation import fhir_problems
from integration.errors import InvalidInput

__all__ = [
    "Unsendable",
    "document_problems",
    "fhir_problems",
    "messaging_problems",
    "narrative_findings",
    "outgoing_findings",
    "validate_document",
    "validate_message",
]

Resource = dict[str, Any]


class Unsendable(InvalidInput):
    """A message we built from the input fails the gate: the input is refused, naming the output's first
    failing element (`field`), every finding value-free in `details`; `texts` has them in full."""

    def __init__(self, what: str, findings: list[LayerFinding]) -> None:
        first, more = findings[0], len(findings) - 1
        problem = f"the {what} built from this input would fail our own checks: {first.problem}"
        super().__init__(
            first.field,
            problem + (f" (and {more} more)" if more else ""),
            tuple(f"{f.field}: {f.problem}" for f in findings),
        )
        self.texts = tuple(f.text for f in findings)


def messaging_problems(bundle: Any, *, allow_cc: bool = False) -> list[str]:
    """MedCom messaging rules, FHIR invariants and required codes that the models do not check."""
    return [finding.text for finding in messaging_findings(bundle, allow_cc=allow_cc)]


def document_problems(bundle: Any) -> list[str]:
    """FHIR document rules we rely on: a Composition first, an identifier, UUID ids, references inside."""
    return [finding.text for finding in document_findings(bundle)]


def outgoing_findings(bundle: Any, *, allow_cc: bool = False) -> list[LayerFinding]:
    """Every finding of the gate's layers (see the module; their table is `layers`), structure first; empty
    when `bundle` may leave. `allow_cc` allows cc destinations (a flow that sends copies)."""
    return layer_findings(bundle, Use.SENT, allow_cc=allow_cc)


def validate_message(bundle: Resource, *, allow_cc: bool = False) -> None:
    """Raise Unsendable when the message fails the gate: it must not leave, and its input is refused."""
    findings = outgoing_findings(bundle, allow_cc=allow_cc)
    if findings:
        raise Unsendable("message", findings)


def validate_document(bundle: Resource) -> None:
    """Raise Unsendable when the document fails the gate."""
    findings = outgoing_findings(bundle)
    if findings:
        raise Unsendable("document", findings)
