"""What a received MedCom message must pass before it is routed: the fast layers of `integration validate`.

    FHIR R4 content (fhir.resources)              `resource_validation.content_errors`, validated afresh,
                                                  and every primitive's JSON type (booleans true/false,
                                                  integers without fraction or exponent, strings)
    MedCom's messaging rules and Bundle invariants `messaging_rules.messaging_findings`: bdl-1 to bdl-4,
                                                  bdl-7, fullUrl ↔ resource type and id, resolving
                                                  references, one MessageHeader first, narratives, UUID
                                                  ids, CPR or replacement CPR, required codes, no
                                                  modifierExtension (we understand none), no other
                                                  patient's CPR or replacement number anywhere, one SOR
                                                  id per Organization; for a CareCommunication its resource
                                                  types, one Communication (status unknown, one thread
                                                  id) and one MessageHeader.focus
    the TouchStone assertions of its event        `conformance.assertion_findings`: exactly one Patient,
                                                  the category coded, the thread id, the definition, …

Nothing these layers call an error is acknowledged `ok`: a message with findings is refused with all of
them (`NotConformant`, a fatal-error acknowledgement with one issue per finding). The profile layer
(snapshots, bindings) stays off the message path, for its cost: `integration validate` runs it (the
README gives both costs per message).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from integration.conformance.checks import assertion_findings
from integration.conformance.messaging_rules import messaging_findings
from integration.conformance.resource_validation import content_errors
from integration.errors import InvalidInput


class Layer(Enum):
    """Which check found it; the value is the FHIR issue type the acknowledgement reports it as."""

    FHIR = "structure"
    MESSAGING = "invariant"
    TOUCHSTONE = "business-rule"


@dataclass(frozen=True, slots=True)
class ReceiptFinding:
    field: str  # where, as a FHIR path (the expression)
    problem: str  # what, never a value from the message (ids only when they are UUIDs)
    layer: Layer


def receipt_findings(bundle: dict[str, Any]) -> list[ReceiptFinding]:
    """Every finding of the fast layers, content first; empty when the message may be routed."""
    found = [ReceiptFinding(e.field, e.shown, Layer.FHIR) for e in content_errors(bundle, remember=False)]
    found += [ReceiptFinding(f.field, f.problem, Layer.MESSAGING) for f in messaging_findings(bundle)]
    return found + [ReceiptFinding(f.field, f.problem, Layer.TOUCHSTONE) for f in assertion_findings(bundle)]


class NotConformant(InvalidInput):
    """A received message that the fast layers find errors in: its message names the first (field and
    problem, never a value), `findings` holds them all for the acknowledgement."""

    def __init__(self, findings: list[ReceiptFinding]) -> None:
        first, more = findings[0], len(findings) - 1
        super().__init__(
            first.field,
            first.problem + (f" (and {more} more)" if more else ""),
            tuple(f"{f.field}: {f.problem}" for f in findings),
        )
        self.findings = tuple(findings)


def check_on_receipt(bundle: dict[str, Any]) -> None:
    """Raise NotConformant with every finding of the fast layers, if there is one."""
    findings = receipt_findings(bundle)
    if findings:
        raise NotConformant(findings)
