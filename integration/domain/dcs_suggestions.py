"""DCS criteria suggested from an event's diagnosis and procedure codes, beside the clinician's own (pure).

The agreement leaves the risk stratification to the clinician ("Risikovurdering og stratificering af patienter
ved udskrivelse fra hospital"): a code is a hint, never a criterion. Nothing here feeds the risk group, the
pathway or a message; the referral flow only audits the comparison (`dcs-suggested`) and the pathway board
shows it beside what the clinician ticked. The table is mappings/dcs-suggestions.yaml.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from integration.domain.records import Diagnosis, Procedure


class CodeKind(Enum):
    DIAGNOSIS = "diagnosis"  # ICD-10, from the event's diagnoses in either notation (ICD-10 or SKS)
    PROCEDURE = "procedure"  # an SKS procedure code (HL7 v2 PR1-3, the JSON contract's procedures)


# A diagnosis prefix in ICD-10 notation: a letter, two digits, then at most five more (the dot optional).
ICD10_PREFIX = re.compile(r"[A-Z][0-9]{2}(?:\.?[0-9A-Z]{1,5})?")
# An SKS procedure prefix: SKS classification letter and at least one more character (e.g. `BFCB`, `KFNG05`).
SKS_PROCEDURE_PREFIX = re.compile(r"[A-Z][0-9A-Z]{1,9}")


@dataclass(frozen=True, slots=True)
class SuggestionRule:
    """One row of the table: codes starting with `prefix` (normalised: no dot, upper case; a diagnosis in
    ICD-10 notation, without SKS's leading `D`) suggest `criterion` (one of `risk.DCS_CRITERIA`)."""

    kind: CodeKind
    prefix: str
    criterion: str


@dataclass(frozen=True, slots=True)
class Suggestion:
    """A criterion the codes suggest, with every code of the event (as the sender wrote it) that suggests it."""

    criterion: str
    codes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Comparison:
    """The suggestions beside the clinician's criteria: `not_ticked` the suggested criteria the clinician did
    not tick (for the clinician to look at); `without_code` the ticked criteria no code supports (informative
    only: most criteria, such as incomplete revascularisation, have no code at all)."""

    suggestions: tuple[Suggestion, ...]
    clinician: tuple[str, ...]
    not_ticked: tuple[str, ...]
    without_code: tuple[str, ...]


def diagnosis_key(diagnosis: Diagnosis) -> str:
    """A diagnosis code in ICD-10 notation without the dot: `I50.9` → `I509`; SKS `DI509` → `I509` (SKS writes
    an ICD-10 diagnosis with the classification letter `D` before it, and may add letters after it)."""
    code = diagnosis.code.replace(".", "").strip().upper()
    return code[1:] if diagnosis.system == "SKS" and code.startswith("D") else code


def rule_prefix(kind: CodeKind, written: str) -> str | None:
    """A table prefix normalised (no dot, upper case), or None when it is no code of its kind: a diagnosis
    prefix must be ICD-10 notation (`I50`, `I13.0`), not SKS (`DI50`), so that `D50` reads as one notation."""
    text = written.strip().upper()
    pattern = ICD10_PREFIX if kind is CodeKind.DIAGNOSIS else SKS_PROCEDURE_PREFIX
    return text.replace(".", "") if pattern.fullmatch(text) else None


def suggest(
    diagnoses: Iterable[Diagnosis], procedures: Iterable[Procedure], rules: Iterable[SuggestionRule]
) -> tuple[Suggestion, ...]:
    """The criteria the codes suggest, in the order the rules first suggest them, each with its codes in the
    event's order (diagnoses, then procedures; a code once per criterion). Empty: nothing to suggest."""
    coded = [(CodeKind.DIAGNOSIS, diagnosis_key(d), d.code) for d in diagnoses]
    coded += [(CodeKind.PROCEDURE, p.code.strip().upper(), p.code) for p in procedures]
    found: dict[str, list[str]] = {}
    for rule in rules:
        for kind, key, written in coded:
            if kind is rule.kind and key.startswith(rule.prefix):
                codes = found.setdefault(rule.criterion, [])
                if written not in codes:
                    codes.append(written)
    return tuple(Suggestion(criterion, tuple(codes)) for criterion, codes in found.items())


def compare(suggestions: tuple[Suggestion, ...], clinician: tuple[str, ...]) -> Comparison:
    """The suggestions beside the criteria the clinician ticked (`DischargeEvent.risk_criteria`)."""
    suggested = [s.criterion for s in suggestions]
    return Comparison(
        suggestions=suggestions,
        clinician=clinician,
        not_ticked=tuple(c for c in suggested if c not in clinician),
        without_code=tuple(c for c in clinician if c not in suggested),
    )
