"""Conformance checks for any FHIR message or document, ours or a partner's (`integration validate`).

Four layers: FHIR R4 content (fhir.resources), our MedCom messaging or document rules, FHIRPath
assertions ported from MedCom's TouchStone test scripts, evaluated with fhirpathpy and chosen by the
message's event, and the profiles' snapshots (constraints, cardinality, fixed and pattern values,
required bindings; `profile_check`) when the definitions are at hand.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from integration.conformance.definitions import (
    CORE_DIR,
    MEDCOM_DIR,
    STANDARDS,
    Definitions,
    DefinitionsMissing,
    load_definitions,
)
from integration.conformance.messaging_rules import Finding, as_dict, as_list
from integration.conformance.profile_check import ProfileReport, check_profiles, compiled_fhirpath, standard_of
from integration.conformance.resource_validation import fhir_problems
from integration.conformance.validation import document_problems, messaging_problems

UUID4 = "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
HEADER = "Bundle.entry[0].resource"
CATEGORY_CODES = "http://medcomfhir.dk/ig/terminology/CodeSystem/medcom-careCommunication-categoryCodes"


@dataclass(frozen=True, slots=True)
class Assertion:
    name: str
    expression: str  # FHIRPath over the Bundle; must evaluate to [true]
    field: str = "Bundle"  # where a failure is reported (the acknowledgement's issue expression)


CARE_COMMUNICATION = (
    Assertion(
        "event is care-communication-message",
        f"{HEADER}.event.as(Coding).code = 'care-communication-message'",
        "MessageHeader.eventCoding",
    ),
    Assertion(
        "a Provenance targets this MessageHeader (TouchStone assertProvenanceTarget)",
        "Bundle.entry.resource.ofType(Provenance).where(target.reference.contains(%resource.entry[0].resource.id)).exists()",
        "Provenance.target",
    ),
    Assertion(
        "the latest Provenance's activity is new-, reply- or forward-message",
        "Bundle.entry.resource.ofType(Provenance).where(target.reference.contains(%resource.entry[0].resource.id))"
        ".activity.coding.code.all($this in ('new-message' | 'reply-message' | 'forward-message'))",
        "Provenance.activity",
    ),
    Assertion(
        "Communication.identifier is a urn:uuid v4 (the thread id)",
        f"Bundle.entry.resource.ofType(Communication).identifier.value.all(matches('^urn:uuid:{UUID4}$'))",
        "Communication.identifier",
    ),
    Assertion(
        "MessageHeader.definition names CareCommunication 5.x",
        f"{HEADER}.definition.matches('^http://medcomfhir.dk/ig/messagedefinitions/MessageDefinition/"
        "MedComCareCommunicationMessageDefinition[|]5[.][0-9]{1,2}$')",
        "MessageHeader.definition",
    ),
    Assertion(
        "exactly one Patient (medcom-careCommunication-2)",
        "Bundle.entry.resource.ofType(Patient).count() = 1",
        "Patient",
    ),
    Assertion(
        "the category is one coding with MedCom's category system and a code (required binding)",
        "Bundle.entry.resource.ofType(Communication).all(category.count() = 1 and category.coding.count() = 1 and "
        f"category.coding.system = '{CATEGORY_CODES}' and category.coding.code.exists())",
        "Communication.category",
    ),
    Assertion(
        "a topic when the category is other (medcom-careCommunication-6)",
        "Bundle.entry.resource.ofType(Communication).all(category.coding.code = 'other' implies topic.text.exists())",
        "Communication.topic",
    ),
    Assertion(
        "priority only with regarding-referral (medcom-careCommunication-5)",
        "Bundle.entry.resource.ofType(Communication).all(priority.exists() implies "
        "category.coding.code = 'regarding-referral')",
        "Communication.priority",
    ),
    Assertion(
        "the MessageHeader's profile is the CareCommunication header (medcom-careCommunication-1)",
        f"{HEADER}.meta.profile.exists($this.startsWith("
        "'http://medcomfhir.dk/ig/carecommunication/StructureDefinition/medcom-careCommunication-messageHeader'))",
        "MessageHeader.meta.profile",
    ),
)
ACKNOWLEDGEMENT = (
    Assertion("event is acknowledgement-message", f"{HEADER}.event.as(Coding).code = 'acknowledgement-message'"),
    Assertion(
        "exactly two Provenances (TouchStone assertProvenanceEntityCount)",
        "Bundle.entry.resource.ofType(Provenance).count() = 2",
    ),
    Assertion(
        "exactly one Provenance with activity acknowledgement",
        "Bundle.entry.resource.ofType(Provenance).where(activity.coding.code = 'acknowledgement').count() = 1",
    ),
    Assertion(
        "one Provenance's entity is the acknowledged MessageHeader (TouchStone assertMessageHeaderid, by id)",
        "Bundle.entry.resource.ofType(Provenance).where(entity.what.reference = 'MessageHeader/' + "
        "%resource.entry[0].resource.response.identifier).count() = 1",
    ),
    Assertion(
        "a Provenance targets this MessageHeader (TouchStone assertProvenanceTarget, by id)",
        "Bundle.entry.resource.ofType(Provenance).where(target.reference.contains(%resource.entry[0].resource.id))"
        ".exists()",
    ),
    Assertion(
        "an OperationOutcome when the response is not ok (medcom-acknowledgement-1)",
        f"{HEADER}.response.code = 'ok' or Bundle.entry.resource.ofType(OperationOutcome).exists()",
    ),
)
REFERRAL = (
    Assertion("focus is a ServiceRequest", f"{HEADER}.focus.reference.all(startsWith('ServiceRequest/'))"),
    Assertion(
        "the ServiceRequest has one category from our referral categories",
        "Bundle.entry.resource.ofType(ServiceRequest).category.coding.code.all($this in "
        "('gop-specialised' | 'gop-general' | 'municipal-rehabilitation'))",
    ),
    Assertion(
        "a RiskAssessment supports the referral",
        "Bundle.entry.resource.ofType(ServiceRequest).supportingInfo.reference.where(startsWith('RiskAssessment/'))"
        ".exists()",
    ),
)
BY_EVENT = {
    "care-communication-message": CARE_COMMUNICATION,
    "acknowledgement-message": ACKNOWLEDGEMENT,
    "new-referral": REFERRAL,
}


def assertion_findings(bundle: dict[str, Any]) -> list[Finding]:
    """The TouchStone assertions of the message's event that are not met, each where it is reported; the
    problem names the assertion, never a value."""
    header = as_dict(as_dict((as_list(bundle.get("entry")) or [{}])[0]).get("resource"))
    event = as_dict(header.get("eventCoding")).get("code")
    findings = []
    for assertion in BY_EVENT.get(event if isinstance(event, str) else "", ()):
        try:
            result = compiled_fhirpath(assertion.expression)(bundle, {"resource": bundle})
        except Exception as exc:  # noqa: BLE001 - a message the engine cannot read fails the assertion, with why
            problem = f"{assertion.name}: could not be evaluated ({type(exc).__name__})"
        else:
            if result == [True]:
                continue
            problem = f"{assertion.name}: not met"
        findings.append(Finding(assertion.field, problem, problem))
    return findings


def fhirpath_findings(bundle: dict[str, Any]) -> list[str]:
    return [finding.text for finding in assertion_findings(bundle)]


@dataclass(frozen=True, slots=True)
class Conformance:
    """What the checks found in one message or document.

    `profiles` is None when the profile layer did not run, and `profiles_skipped` says why (the definitions
    are not at hand, or it is no Bundle); `incomplete` names each check that could not be made as asked
    (definitions that cannot be read; a layer that failed on this input, which is a defect of ours)."""

    findings: list[str]
    profiles: ProfileReport | None  # None: the profile layer did not run
    profiles_skipped: str | None = None
    incomplete: tuple[str, ...] = ()


class DefinitionsUnreadable(RuntimeError):
    """The definitions are there but cannot be read (a file that is not JSON, a folder we may not list)."""


Layer = Callable[[dict[str, Any]], list[str]]


def _structure(bundle: dict[str, Any]) -> list[str]:
    return document_problems(bundle) if bundle.get("type") == "document" else messaging_problems(bundle)


FAST_LAYERS: tuple[tuple[str, Layer], ...] = (
    ("the messaging or document rules", _structure),
    ("the FHIR R4 content check", lambda bundle: fhir_problems(bundle, remember=False)),
    ("the TouchStone assertions", fhirpath_findings),
)


def conformance(bundle: Any, medcom_dir: Path = MEDCOM_DIR, core_dir: Path = CORE_DIR) -> Conformance:
    """Every check we have, and what the profile layer covered (or why it could not run). Never raises: any
    JSON value is a finding (`not a FHIR Bundle`); a layer that fails on the input is named in `incomplete`."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        return Conformance(["not a FHIR Bundle"], None, "not a Bundle")
    findings: list[str] = []
    incomplete: list[str] = []
    for name, layer in FAST_LAYERS:
        try:
            findings += layer(bundle)
        except Exception as exc:  # noqa: BLE001 - reported as a check not made (exit 2), never as conformance
            incomplete.append(_failed(name, exc))
    try:
        report = check_profiles(bundle, _definitions(bundle, medcom_dir, core_dir))
    except DefinitionsMissing as missing:
        return Conformance(findings, None, str(missing), tuple(incomplete))
    except DefinitionsUnreadable as unreadable:
        return Conformance(findings, None, str(unreadable), (*incomplete, str(unreadable)))
    except Exception as exc:  # noqa: BLE001 - as above
        failed = _failed("the profile layer", exc)
        return Conformance(findings, None, failed, (*incomplete, failed))
    return Conformance(findings + report.findings, report, None, tuple(incomplete))


def _failed(layer: str, exc: BaseException) -> str:
    return f"{layer} failed on this input ({type(exc).__name__}; a defect: please report it with the input)"


def _definitions(bundle: dict[str, Any], medcom_dir: Path, core_dir: Path) -> Definitions:
    """The pinned definitions of the bundle's standard: DefinitionsMissing when a folder is not there,
    DefinitionsUnreadable when one is there but cannot be read."""
    standard = standard_of(bundle)
    folders = [core_dir, medcom_dir, *(medcom_dir / folder for folder in STANDARDS[standard])]
    for folder in folders:
        if folder.is_dir() and not os.access(folder, os.R_OK | os.X_OK):
            raise DefinitionsUnreadable(f"the definitions in {folder} cannot be read (permission denied)")
    try:
        return load_definitions(standard, medcom_dir, core_dir)
    except DefinitionsMissing:
        raise
    except OSError as exc:
        raise DefinitionsUnreadable(f"the definitions cannot be read: {exc.strerror or exc} ({exc.filename})") from None
    except (ValueError, TypeError, KeyError, AttributeError) as exc:  # orjson's JSONDecodeError is a ValueError
        raise DefinitionsUnreadable(
            f"the definitions in {medcom_dir} or {core_dir} cannot be read: not FHIR JSON ({type(exc).__name__})"
        ) from None


@dataclass(frozen=True, slots=True)
class MessageCheck:
    """One message of what `validate` was given: `label` says which ("" for a single message or document);
    `result` is None when it is no FHIR resource at all (a JSON form in transform's output), `skipped` why."""

    label: str
    result: Conformance | None
    skipped: str | None = None


def check_document(
    document: Any, medcom_dir: Path = MEDCOM_DIR, core_dir: Path = CORE_DIR, *, refusal: str | None = None
) -> list[MessageCheck]:
    """A FHIR message or document, or `integration transform`'s output (a JSON array of
    `{"route": {...}, "message": ...}`): each message checked, labelled `message N (routing key)`.
    `refusal` is a content error its reader found (a finding first); `document` is None when the reader
    could make no FHIR JSON of it, and then the refusal is the only finding."""
    if document is None and refusal is not None:
        return [MessageCheck("", Conformance([refusal], None, "the message could not be read into FHIR JSON"))]
    if refusal is not None:
        result = conformance(document, medcom_dir, core_dir)
        return [MessageCheck("", replace(result, findings=[refusal, *result.findings]))]
    if not isinstance(document, list):
        return [MessageCheck("", conformance(document, medcom_dir, core_dir))]
    return [_output_item(index, item, medcom_dir, core_dir) for index, item in enumerate(document, start=1)]


def _output_item(index: int, item: Any, medcom_dir: Path, core_dir: Path) -> MessageCheck:
    if not isinstance(item, dict) or "message" not in item:
        label = f"item {index}"
        return MessageCheck(label, Conformance(["not a transform output item (route and message)"], None, "no message"))
    route = item.get("route")
    key = route.get("routingKey") if isinstance(route, dict) else None
    label = f"message {index}" + (f" ({key})" if isinstance(key, str) and key else "")
    message = item["message"]
    if isinstance(message, dict) and "resourceType" not in message:
        return MessageCheck(label, None, "not a FHIR resource (a JSON form); not checked")
    return MessageCheck(label, conformance(message, medcom_dir, core_dir))


def conformance_findings(bundle: Any) -> list[str]:
    """Every finding, empty when the message or document conforms; a check that could not be made is one too."""
    result = conformance(bundle)
    return result.findings + list(result.incomplete)
