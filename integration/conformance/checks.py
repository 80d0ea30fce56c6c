"""Conformance checks for any FHIR message or document, ours or a partner's (`integration validate`).

Four layers: the fast ones of `layers` for `validate` (our MedCom messaging or document rules, FHIR R4
content with fhir.resources, FHIRPath assertions ported from MedCom's TouchStone test scripts, evaluated
with fhirpathpy and chosen by the message's event), then the profiles' snapshots (constraints,
cardinality, fixed and pattern values, required bindings; `profile_check`) when the definitions are at hand.
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
from integration.conformance.layers import CheckLayer, Scope, Use, layers_for
from integration.conformance.profile_check import ProfileReport, check_profiles, standard_of
from integration.conformance.touchstone import assertion_findings, fhirpath_findings

__all__ = [
    "FAST_LAYERS",
    "Conformance",
    "DefinitionsUnreadable",
    "MessageCheck",
    "assertion_findings",
    "check_document",
    "conformance",
    "conformance_findings",
    "fhirpath_findings",
]


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


LayerTexts = Callable[[dict[str, Any]], list[str]]  # a layer as `validate` runs it: bundle → finding texts


def _texts(layer: CheckLayer) -> LayerTexts:
    """`layer` as `validate` runs it: its findings' full texts."""
    scope = Scope(Use.VALIDATE)
    return lambda bundle: [finding.text for finding in layer.findings(bundle, scope)]


# What `integration validate` runs before the profile layer: the table's layers for it, in its order, by name.
FAST_LAYERS: tuple[tuple[str, LayerTexts], ...] = tuple(
    (layer.name, _texts(layer)) for layer in layers_for(Use.VALIDATE)
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
