"""What a received MedCom message must pass before it is routed: the fast layers of `integration validate`
(their table, and how a received message is read differently, is `layers`).

    FHIR R4 content (the generated R4 schema)     `r4_validator.content_errors`: elements, cardinalities,
                                                  choices, every primitive's JSON type and regex (booleans
                                                  true/false, integers without fraction or exponent,
                                                  strings), real dates
    MedCom's messaging rules and Bundle invariants `messaging_rules.messaging_findings`: bdl-1 to bdl-4,
                                                  bdl-7, fullUrl ↔ resource type and id, resolving
                                                  references, one MessageHeader first, narratives, UUID
                                                  ids, CPR or replacement CPR, required codes, no
                                                  modifierExtension (we understand none), no other
                                                  patient's CPR or replacement number anywhere, one SOR
                                                  id per Organization; for a CareCommunication its resource
                                                  types, one Communication (status unknown, one thread
                                                  id) and one MessageHeader.focus
    the TouchStone assertions of its event        `touchstone.assertion_findings`: exactly one Patient,
                                                  the category coded, the thread id, the definition, …
    FHIR's narrative rules (txt-1, txt-2)         `layers.narrative_findings`: every `text.div` well-formed
                                                  XHTML with no active content (`<script>`, `on…`
                                                  attributes, …): the hotline forwards a received Bundle
                                                  as it is

Nothing these layers call an error is acknowledged `ok`: a message with findings is refused with all of
them (`NotConformant`, a fatal-error acknowledgement with one issue per finding, up to
`layers.REPORTED_FINDINGS` and one more saying how many it left out). The profile layer
(snapshots, bindings) stays off the message path, for its cost: `integration validate` runs it (the
README gives both costs per message).
"""

from __future__ import annotations

from typing import Any

from integration.conformance.layers import LayerFinding, Use, layer_findings
from integration.errors import InvalidInput


def receipt_findings(bundle: dict[str, Any]) -> list[LayerFinding]:
    """Every finding of the fast layers for a received message (`layers`), content first; empty when the
    message may be routed."""
    return layer_findings(bundle, Use.RECEIVED)


class NotConformant(InvalidInput):
    """A received message that the fast layers find errors in: its message names the first (field and
    problem, never a value), `findings` holds them all for the acknowledgement."""

    def __init__(self, findings: list[LayerFinding]) -> None:
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
