"""The patient: dk-core's CPR and replacement CPR identifiers in their formats, a birth date that agrees
with the CPR number and the message's time, a family name; and anywhere in the message, no other patient's
number and no modifier extension (we understand none)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

from integration.conformance.messaging_rules.base import (
    CPR,
    UNKNOWN_MODIFIER,
    Finding,
    Place,
    Resource,
    as_dict,
    as_list,
    resource_type,
)
from integration.domain.cpr import parse_cpr
from integration.domain.identifiers import REPLACEMENT_SYSTEMS, parse_replacement_cpr

_PATIENT_SYSTEMS = frozenset({CPR, *REPLACEMENT_SYSTEMS})
OTHER_PATIENT = "names a patient other than the message's one Patient"


def _number_problem(identifier: dict[str, Any]) -> str | None:
    """What is wrong with a CPR or replacement CPR identifier's value, in words that never repeat it."""
    value, system = identifier.get("value"), identifier.get("system")
    if not isinstance(value, str):
        return "has no value"
    try:
        parse_cpr(value) if system == CPR else parse_replacement_cpr(str(system), value)
    except ValueError as exc:
        return str(exc)
    return None


def _identifier_findings(patient: Resource) -> list[Finding]:
    """dk-core's Patient.identifier slices: a CPR number (use official), else a replacement number, an
    X-eCPR or a region's D-eCPR (use temp), each in its format."""
    rid, identifiers = patient.get("id"), [as_dict(i) for i in as_list(patient.get("identifier"))]
    cprs = [i for i in identifiers if i.get("system") == CPR]
    replacements = [i for i in identifiers if isinstance(i.get("system"), str) and i["system"] in REPLACEMENT_SYSTEMS]
    problems = []
    if not cprs and not replacements:
        problems.append("needs a CPR identifier, or a replacement CPR (X-eCPR or D-eCPR) for a patient without one")
    if len({str(i.get("value")) for i in cprs}) > 1:
        problems.append("names more than one CPR number: which is the patient cannot be told")
    if len({(i["system"], str(i.get("value"))) for i in replacements}) > 1:
        problems.append("names more than one replacement CPR number: which is the patient cannot be told")

    if any(i.get("use", "official") != "official" for i in cprs):
        problems.append("a CPR identifier's use must be official")
    if any(i.get("use", "temp") != "temp" for i in replacements):
        problems.append("a replacement CPR identifier's use must be temp")
    problems += [p for i in cprs + replacements if (p := _number_problem(i))]
    findings = [Finding("Patient.identifier", p, f"Patient/{rid}: identifier: {p}") for p in problems]
    return findings + [
        Finding("Patient.birthDate", p, f"Patient/{rid}: birthDate: {p}")
        for p in _birth_date_against_cpr(patient, cprs)
    ]


def _birth_date_against_cpr(patient: Resource, cprs: list[dict[str, Any]]) -> list[str]:
    """Patient.birthDate, given as a full date, must be the date the CPR number's digits and century rule give."""
    born = patient.get("birthDate")
    if len(cprs) != 1 or not isinstance(born, str) or len(born) != 10 or not isinstance(cprs[0].get("value"), str):
        return []
    try:
        cpr, given = parse_cpr(cprs[0]["value"]), date.fromisoformat(born)
    except ValueError:
        return []  # a malformed number or date is reported as such, by its own check
    if given != cpr.birth_date:
        return ["birthDate is not the birth date the CPR number gives"]
    return []


def _birth_findings(patient: Resource, bundle: Resource) -> list[Finding]:
    """A patient born after the message was sent cannot be right (the date part of both, as written)."""
    born, sent = patient.get("birthDate"), bundle.get("timestamp")
    if not isinstance(born, str) or not isinstance(sent, str) or not born or born <= sent[: len(born)]:
        return []
    problem = "is after the message's timestamp"
    return [Finding("Patient.birthDate", problem, f"Patient/{patient.get('id')}: birthDate {problem}")]


def patient_findings(patient: Resource, bundle: Resource) -> list[Finding]:
    findings, rid = _identifier_findings(patient) + _birth_findings(patient, bundle), patient.get("id")
    if not any(as_dict(n).get("family") for n in as_list(patient.get("name"))):
        findings.append(Finding("Patient.name", "needs a family name", f"Patient/{rid}: needs a family name"))
    return findings


def _anywhere(node: Any, at: Place) -> Iterator[tuple[Place, str, Any, dict[str, Any]]]:
    """Every (place, key, value, object holding it) under `node`, depth first."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        here = at.child(key)
        if isinstance(key, str) and isinstance(node, dict):
            yield here, key, value, node
        if isinstance(value, dict | list):
            yield from _anywhere(value, here)


def content_findings(resources: list[Resource]) -> list[Finding]:
    """Anywhere in the resources: a modifierExtension (we understand none), and a CPR or replacement CPR
    identifier that is not the one Patient's (another patient's data). With no Patient, or more than one,
    other findings say so and the identifiers are not compared."""
    patients = [r for r in resources if r.get("resourceType") == "Patient"]
    own = (
        {
            (i["system"], i.get("value"))
            for i in map(as_dict, as_list(patients[0].get("identifier")))
            if isinstance(i.get("system"), str) and isinstance(i.get("value"), str)
        }
        if len(patients) == 1
        else None
    )
    findings = []
    for resource in resources:
        rtype = resource_type(resource) or "Resource"
        rid = resource.get("id", "")
        for at, key, value, holder in _anywhere(resource, Place(f"{rtype}/{rid}", rtype)):
            if key == "modifierExtension" and value not in ([], None):
                findings.append(Finding(at.field, UNKNOWN_MODIFIER, f"{at.text}: {UNKNOWN_MODIFIER}"))
            elif (
                own is not None
                and key == "system"
                and isinstance(value, str)
                and value in _PATIENT_SYSTEMS
                and not at.field.startswith("Patient.identifier[")
            ):
                if (value, holder.get("value")) not in own:
                    where, text = at.field.removesuffix(".system"), at.text.removesuffix(".system")
                    findings.append(Finding(where, OTHER_PATIENT, f"{text}: {OTHER_PATIENT}"))
    return findings
