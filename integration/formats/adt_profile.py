"""The HL7 v2 ADT profile (`mappings/hl7.yaml`): which field of an ADT message carries what of the discharge
event, read once into a frozen record. Pure: the YAML document comes in as a dict (`integration.mappings`
reads the file); a missing or wrong key is a ConfigurationError naming it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from integration.domain.records import Organisation
from integration.errors import ConfigurationError

_PLACE = re.compile(r"([A-Z][A-Z0-9]{2})-([1-9][0-9]{0,2})(?:\.([1-9][0-9]?))?\Z")
FILE = "hl7.yaml"
RISK_GROUPS = ("low", "moderate", "high")
DECISIONS = ("municipal", "hospital", "none")


@dataclass(frozen=True, slots=True)
class Place:
    """A field (and component) of a segment: `PID-3.1`. `component` None means the field's first value."""

    segment: str
    field: int
    component: int | None = None

    def __str__(self) -> str:
        return f"{self.segment}-{self.field}" + (f".{self.component}" if self.component else "")


@dataclass(frozen=True, slots=True)
class Source:
    """Where a value comes from: a field (`place`), or an observation (the OBX whose OBX-3.1 is `observation`)."""

    place: Place | None = None
    observation: str | None = None

    def __str__(self) -> str:
        return str(self.place) if self.place else f"OBX[{self.observation}]"


@dataclass(frozen=True, slots=True)
class Hl7Profile:
    """The loaded profile; see mappings/hl7.yaml for what each item means and its default."""

    timezone: ZoneInfo
    occurred_at: tuple[Place, ...]
    patient_identifier: Place
    assigning_authorities: frozenset[str]
    identifier_types: frozenset[str]
    name: Place
    birth_date: Place
    municipality_code: Place
    gp_ydernummer: Place
    gp_sor: Place
    unit_sor: Place
    visit_number: Place
    admitted_at: Place
    discharged_at: Place
    diagnosis_code: Place
    diagnosis_system: Place
    diagnosis_systems: dict[str, str]
    diagnosis_priority: Place
    diagnosis_type: Place
    primary_types: frozenset[str]
    procedure_code: Place
    procedure_system: Place
    procedure_systems: frozenset[str]
    procedure_date: Place
    sternotomy_prefixes: tuple[str, ...]
    exercise_test: dict[str, Source]  # contract key → source
    rehabilitation: dict[str, Source]  # contract key → source
    values: dict[str, dict[str, str]]  # contract key → {HL7 code: contract value}
    departments: Mapping[str, Organisation]  # by SOR id: mappings/departments.yaml, for PV1-3


EXERCISE_TEST = ("performed", "date", "maxWorkloadWatt", "mets", "peakHeartRate", "conclusion")
REHABILITATION = (
    "clinicianRiskGroup",
    "riskCriteria",
    "decision",
    "trainingNeeded",
    "rehabElements",
    "ambulatoryControl",
    "ambulatoryControlAtEndOfRehab",
    "note",
)


def _place(value: Any, key: str) -> Place:
    found = _PLACE.match(value) if isinstance(value, str) else None
    if not found:
        raise ConfigurationError(f"{FILE}: {key} is not a field place like PID-3 or PV1-3.10")
    segment, field, component = found.groups()
    return Place(segment, int(field), int(component) if component else None)


def _source(value: Any, key: str) -> Source:
    if isinstance(value, dict) and set(value) == {"field"}:
        return Source(place=_place(value["field"], f"{key}.field"))
    if isinstance(value, dict) and set(value) == {"observation"} and isinstance(value["observation"], str):
        if value["observation"].strip():
            return Source(observation=value["observation"])
    raise ConfigurationError(f"{FILE}: {key} must be {{field: SEG-F}} or {{observation: CODE}}")


def _section(doc: dict[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key)
    if not isinstance(value, dict):
        raise ConfigurationError(f"{FILE}: {key} is missing or not a table")
    return value


def _strings(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigurationError(f"{FILE}: {key} must be a list of strings")
    return tuple(value)


def _string_table(value: Any, key: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ConfigurationError(f"{FILE}: {key} must be a table of strings")
    return dict(value)


def _zone(value: Any) -> ZoneInfo:
    try:
        return ZoneInfo(str(value))
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(f"{FILE}: timezone is not an IANA time zone") from None


def _sources(section: dict[str, Any], keys: tuple[str, ...], name: str) -> dict[str, Source]:
    unknown = set(section) - set(keys)
    if unknown:
        raise ConfigurationError(f"{FILE}: {name}.{sorted(unknown)[0]} is not an item of the contract")
    return {key: _source(section[key], f"{name}.{key}") for key in keys if key in section}


def _values(doc: dict[str, Any]) -> dict[str, dict[str, str]]:
    tables = doc.get("values") or {}
    if not isinstance(tables, dict):
        raise ConfigurationError(f"{FILE}: values is not a table")
    allowed = {"clinicianRiskGroup": RISK_GROUPS, "decision": DECISIONS}
    result = {}
    for key, table in tables.items():
        if key not in allowed:
            raise ConfigurationError(f"{FILE}: values.{key} is not an item with coded values")
        result[key] = _string_table(table, f"values.{key}")
        wrong = [code for code, value in result[key].items() if value not in allowed[key]]
        if wrong:
            raise ConfigurationError(f"{FILE}: values.{key}.{wrong[0]} is not one of {', '.join(allowed[key])}")
    return result


def profile_from_mapping(doc: dict[str, Any], departments: Mapping[str, Organisation]) -> Hl7Profile:
    """The profile from mappings/hl7.yaml's document; ConfigurationError naming the key at fault."""
    if doc.get("version") != 1:
        raise ConfigurationError(f"{FILE}: version must be 1")
    event, patient, admission = _section(doc, "event"), _section(doc, "patient"), _section(doc, "admission")
    dg1, pr1 = _section(doc, "diagnoses"), _section(doc, "procedures")
    occurred = _key(event, "event", "occurredAt")
    if not isinstance(occurred, list) or not occurred:
        raise ConfigurationError(f"{FILE}: event.occurredAt must be a list of field places")
    return Hl7Profile(
        timezone=_zone(_key(doc, "", "timezone")),
        occurred_at=tuple(_place(p, "event.occurredAt") for p in occurred),
        patient_identifier=_place(_key(patient, "patient", "identifier"), "patient.identifier"),
        assigning_authorities=frozenset(
            _strings(_key(patient, "patient", "assigningAuthorities"), "patient.assigningAuthorities")
        ),
        identifier_types=frozenset(_strings(_key(patient, "patient", "identifierTypes"), "patient.identifierTypes")),
        name=_place(_key(patient, "patient", "name"), "patient.name"),
        birth_date=_place(_key(patient, "patient", "birthDate"), "patient.birthDate"),
        municipality_code=_place(_key(patient, "patient", "municipalityCode"), "patient.municipalityCode"),
        gp_ydernummer=_place(_key(patient, "patient", "gpYdernummer"), "patient.gpYdernummer"),
        gp_sor=_place(_key(patient, "patient", "gpSor"), "patient.gpSor"),
        unit_sor=_place(_key(admission, "admission", "unitSor"), "admission.unitSor"),
        visit_number=_place(_key(admission, "admission", "visitNumber"), "admission.visitNumber"),
        admitted_at=_place(_key(admission, "admission", "admittedAt"), "admission.admittedAt"),
        discharged_at=_place(_key(admission, "admission", "dischargedAt"), "admission.dischargedAt"),
        diagnosis_code=_place(_key(dg1, "diagnoses", "code"), "diagnoses.code"),
        diagnosis_system=_place(_key(dg1, "diagnoses", "codingSystem"), "diagnoses.codingSystem"),
        diagnosis_systems=_diagnosis_systems(_key(dg1, "diagnoses", "codingSystems")),
        diagnosis_priority=_place(_key(dg1, "diagnoses", "priority"), "diagnoses.priority"),
        diagnosis_type=_place(_key(dg1, "diagnoses", "type"), "diagnoses.type"),
        primary_types=frozenset(_strings(_key(dg1, "diagnoses", "primaryTypes"), "diagnoses.primaryTypes")),
        procedure_code=_place(_key(pr1, "procedures", "code"), "procedures.code"),
        procedure_system=_place(_key(pr1, "procedures", "codingSystem"), "procedures.codingSystem"),
        procedure_systems=frozenset(_strings(_key(pr1, "procedures", "codingSystems"), "procedures.codingSystems")),
        procedure_date=_place(_key(pr1, "procedures", "date"), "procedures.date"),
        sternotomy_prefixes=_strings(_key(pr1, "procedures", "sternotomyPrefixes"), "procedures.sternotomyPrefixes"),
        exercise_test=_sources(_section(doc, "exerciseTest"), EXERCISE_TEST, "exerciseTest"),
        rehabilitation=_sources(_section(doc, "rehabilitation"), REHABILITATION, "rehabilitation"),
        values=_values(doc),
        departments=departments,
    )


def _key(section: dict[str, Any], name: str, key: str) -> Any:
    if key not in section:
        raise ConfigurationError(f"{FILE}: lacks the key {name + '.' if name else ''}{key}")
    return section[key]


def _diagnosis_systems(value: Any) -> dict[str, str]:
    table = _string_table(value, "diagnoses.codingSystems")
    wrong = [code for code, system in table.items() if system not in ("ICD-10", "SKS")]
    if wrong:
        raise ConfigurationError(f"{FILE}: diagnoses.codingSystems.{wrong[0]} must map to ICD-10 or SKS")
    return table
