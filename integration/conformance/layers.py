"""The fast check layers, in one table: what `integration validate` runs, what a MedCom message we receive
must pass before it is routed, and the gate every message and document we build passes before it leaves.

    layer                                   issue type      sent  received  validate
    MedCom's messaging or document rules    invariant        1       2         1
    FHIR R4 content                         structure        2       1         2
    the TouchStone assertions of its event  business-rule    3       3         3
    FHIR's narrative rules (txt-1, txt-2)   invariant        4       4         -

The numbers are each use's order (the first finding names a refusal, and an acknowledgement lists its
issues in this order); `-` is a use the layer does not apply to. Where the uses differ:

- received: a MedCom message, so always held to the messaging rules (a Bundle of type `document` is a
  finding, not a document).
- sent: the document rules for a document; `cc` destinations where the flow allows them.
- sent and received: the narrative rules, which `validate` gets from the profile layer; on receipt because a
  flow forwards the received Bundle as it is (the hotline's), so active content would reach the receiver.
- sent and received: FHIR R4 content by the schema generated from the R4 core definitions (`r4_validator`,
  microseconds; the first `REPORTED_FINDINGS - 1` errors described, the rest counted); validate: by
  fhir.resources (`resource_validation`, milliseconds), as the conformance suite and the tests do.
  tests/test_validator_differential.py holds the two to the same verdicts, but for the classes
  docs/decisions/0030-message-path-validator.md lists.
- validate: a layer that fails on its input is a check not made (`checks.conformance`), never a finding.

The profile layer (snapshots, cardinality, bindings) is `validate`'s alone, for its cost.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from functools import partial
from typing import Any

from integration.conformance import r4_validator, resource_validation
from integration.conformance.content_error import ContentError
from integration.conformance.messaging_rules import Finding, as_dict, as_list, document_findings, messaging_findings
from integration.conformance.profile_check import html_checks
from integration.conformance.touchstone import assertion_findings


class Use(Enum):
    """Where the fast layers run."""

    SENT = "sent"  # the gate on what we build (`validation.outgoing_findings`)
    RECEIVED = "received"  # a MedCom message before it is routed (`receipt.receipt_findings`)
    VALIDATE = "validate"  # `integration validate` (`checks.conformance`)


class Layer(Enum):
    """Which kind of check found it; the value is the FHIR issue type (R4 ValueSet issue-type) an
    acknowledgement reports it as."""

    FHIR = "structure"  # FHIR R4 content
    RULES = "invariant"  # MedCom's messaging or document rules, FHIR's invariants (bdl-*, txt-*)
    TOUCHSTONE = "business-rule"  # the TouchStone assertions


@dataclass(frozen=True, slots=True)
class LayerFinding:
    """One finding of a fast layer: where (`field`, a FHIR path such as `Patient.name[0].family`), what
    (`problem`, never a value from the message; ids only when they are UUIDs), the full `text` (with ids and
    values, for `integration validate`, tests and our own debugging: never logged, so not in the repr) and
    the kind of check (`layer`, whose value is the acknowledgement's issue type)."""

    field: str
    problem: str
    text: str = dataclasses.field(repr=False)
    layer: Layer


@dataclass(frozen=True, slots=True)
class Scope:
    """How one run reads the message: `use`, and whether `cc` destinations are allowed (only a flow that
    sends copies says so)."""

    use: Use
    allow_cc: bool = False


Check = Callable[[Any, Scope], list[Finding]]


def _structure(bundle: Any, scope: Scope) -> list[Finding]:
    """The document rules for a document we send or validate, else MedCom's messaging rules; none for a
    Bundle of type `collection` given to `validate` (no MedCom message or document: `audit export`'s
    AuditEvents, checked against FHIR R4 alone)."""
    kind = as_dict(bundle).get("type")
    if scope.use is Use.VALIDATE and kind == "collection":
        return []
    if scope.use is not Use.RECEIVED and kind == "document":
        return document_findings(bundle)
    return messaging_findings(bundle, allow_cc=scope.allow_cc)


# The most findings a refusal reports: an acknowledgement lists this many issues, and one more saying how many
# it left out (`messages.acknowledgement.listed`); its audit record names the same. A sender mending a message
# needs its first problems (every refused message we have seen had under 20), while a small message can repeat
# one mistake tens of thousands of times: 25,000 extensions without `url` (509 KB) made a 13.9 MB ack, 13 times
# our own inbound limit, and a 6 MB audit record. 100 issues make an ack of about 60 kB.
REPORTED_FINDINGS = 100
# On the message path the content check describes one fewer and counts the rest in one more finding, so that
# both fit one acknowledgement (content comes first on receipt); describing each costs about 35 µs.
_MESSAGE_PATH_CONTENT = partial(r4_validator.content_errors, limit=REPORTED_FINDINGS - 1)
CONTENT_CHECKS: dict[Use, Callable[[Any], list[ContentError]]] = {
    Use.SENT: _MESSAGE_PATH_CONTENT,
    Use.RECEIVED: _MESSAGE_PATH_CONTENT,
    Use.VALIDATE: resource_validation.content_errors,
}


def _content(bundle: Any, scope: Scope) -> list[Finding]:
    """FHIR R4 content: on the message path by the generated schema, in `validate` by fhir.resources."""
    return [Finding(error.field, error.shown, error.text) for error in CONTENT_CHECKS[scope.use](bundle)]


def _touchstone(bundle: Any, scope: Scope) -> list[Finding]:
    """The TouchStone assertions of the message's event; none for what is no JSON object."""
    return assertion_findings(bundle) if isinstance(bundle, dict) else []


def _narrated(bundle: Any) -> list[tuple[str, dict[str, Any]]]:
    """Every resource of the Bundle that may carry a narrative, with its FHIR path's head: each entry's resource
    (`Communication`) and the resources it contains (`Communication.contained[0]`; R4 allows no deeper ones)."""
    found = []
    for entry in as_list(as_dict(bundle).get("entry")):
        resource = as_dict(as_dict(entry).get("resource"))
        rtype = str(resource.get("resourceType"))
        found.append((rtype, resource))
        found += [(f"{rtype}.contained[{n}]", as_dict(c)) for n, c in enumerate(as_list(resource.get("contained")))]
    return found


def narrative_findings(bundle: Any) -> list[Finding]:
    """FHIR's narrative rules (txt-1, txt-2) on every resource's `text.div` that is there (a missing one is a
    messaging rule), contained resources' too: well-formed XHTML in a `div`, no active content (`<script>`,
    `<object>`, `on…` attributes, …: `profile_check.html_checks`), some text. The check the profile layer runs,
    cheap enough for every message (an XML parse of each div)."""
    found = []
    for path, resource in _narrated(bundle):
        div = as_dict(resource.get("text")).get("div")
        if div and not (isinstance(div, str) and html_checks(div)):
            rtype, rid = resource.get("resourceType"), resource.get("id")
            problem = "narrative is not well-formed XHTML with some text and no active content (txt-1, txt-2)"
            found.append(Finding(f"{path}.text.div", problem, f"{rtype}/{rid}: {problem}"))
    return found


@dataclass(frozen=True, slots=True)
class CheckLayer:
    """One row of the table: `name` (as `validate` reports a layer that failed on its input), the kind of
    check, the check, and its place in each use's order (None: it does not apply there)."""

    name: str
    layer: Layer
    check: Check
    sent: int | None = None
    received: int | None = None
    validate: int | None = None

    def place(self, use: Use) -> int | None:
        """Where this layer runs in `use`'s order, or None when it does not run there."""
        return {Use.SENT: self.sent, Use.RECEIVED: self.received, Use.VALIDATE: self.validate}[use]

    def findings(self, bundle: Any, scope: Scope) -> list[LayerFinding]:
        """This layer's findings on `bundle` (any JSON value), in the one shape; raises what the check raises."""
        return [LayerFinding(f.field, f.problem, f.text, self.layer) for f in self.check(bundle, scope)]


LAYERS: tuple[CheckLayer, ...] = (
    CheckLayer("the messaging or document rules", Layer.RULES, _structure, sent=1, received=2, validate=1),
    CheckLayer("the FHIR R4 content check", Layer.FHIR, _content, sent=2, received=1, validate=2),
    CheckLayer("the TouchStone assertions", Layer.TOUCHSTONE, _touchstone, sent=3, received=3, validate=3),
    CheckLayer(
        "FHIR's narrative rules", Layer.RULES, lambda bundle, _scope: narrative_findings(bundle), sent=4, received=4
    ),
)


def layers_for(use: Use) -> tuple[CheckLayer, ...]:
    """The layers that apply to `use`, in its order."""
    placed = [(place, layer) for layer in LAYERS if (place := layer.place(use)) is not None]
    return tuple(layer for _place, layer in sorted(placed, key=lambda pair: pair[0]))


def layer_findings(bundle: Any, use: Use, *, allow_cc: bool = False) -> list[LayerFinding]:
    """Every finding of `use`'s layers on `bundle`, in its order; empty when it passes. Raises what a layer
    raises (`validate` runs the layers one by one instead, to report a failed one as a check not made)."""
    scope = Scope(use, allow_cc)
    return [finding for layer in layers_for(use) for finding in layer.findings(bundle, scope)]
