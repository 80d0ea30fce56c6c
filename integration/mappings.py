"""Loading `mappings/` (YAML) once at start into frozen records, with a clear error for a bad file.

Where our messages go (exchanges, routing keys) is the topology's (`integration.topology`), not the mappings'.
A `routing` table that earlier releases read from referral.yaml and hotlines.yaml is accepted only while it
says what the topology says: a file that routes elsewhere must not be ignored in silence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays
import yaml

from integration.domain.dcs_suggestions import CodeKind, SuggestionRule, rule_prefix
from integration.domain.directory import Department, Directory, Municipality
from integration.domain.hotline import Hotline, OnCall
from integration.domain.identifiers import gs1_check_digit_ok
from integration.domain.missed_referral import MissedReferralWatch
from integration.domain.opening_hours import WEEKDAYS, OpeningHours, parse_hours
from integration.domain.pathway import CATEGORY
from integration.domain.records import Organisation, RiskGroup
from integration.domain.referral_rules import NoteTexts, ReferralRules
from integration.domain.risk import DCS_CRITERIA, RiskPolicy
from integration.errors import ConfigurationError
from integration.fhir.terminology import Terminology
from integration.formats.adt_profile import Hl7Profile, profile_from_mapping
from integration.topology import (
    HOTLINE_REPLY,
    HOTLINE_REQUEST,
    REFERRAL_TO_HOSPITAL,
    REFERRAL_TO_MUNICIPALITY,
)

REHAB_ELEMENTS = ("physical-activity", "diet", "patient-education", "smoking-cessation")


@dataclass(frozen=True, slots=True)
class Mappings:
    directory: Directory
    terminology: Terminology
    referral_rules: ReferralRules
    hotlines: dict[str, Hotline]
    hotline_settings: dict[str, Any]  # timezone, reply texts, triage phone, the region's on-call
    gp_clinics: dict[str, Organisation]  # by ydernummer
    dcs_suggestions: tuple[SuggestionRule, ...] = ()  # dcs-suggestions.yaml: codes → criteria suggested
    missed_referral: MissedReferralWatch = MissedReferralWatch()  # hospital-notifications.yaml


def _read(directory: Path, name: str) -> dict[str, Any]:
    path = directory / name
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"cannot read {path}: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigurationError(f"{path}: expected a mapping at the top level")
    return doc


def _organisation(doc: dict[str, Any], where: str) -> Organisation:
    ean = str(doc["ean"])
    if not gs1_check_digit_ok(ean):
        raise ConfigurationError(f"{where}: EAN {ean} has a wrong GS1 check digit")
    return Organisation(sor=str(doc["sor"]), ean=ean, name=str(doc["name"]))


def _municipalities(doc: dict[str, Any]) -> dict[str, Municipality]:
    result: dict[str, Municipality] = {}
    for item in doc["municipalities"]:
        code = str(item["code"])
        if code in result:
            raise ConfigurationError(f"municipalities.yaml: code {code} appears twice")
        endpoint = item.get("endpoint")
        result[code] = Municipality(
            code=code,
            name=item["name"],
            region=item["region"],
            endpoint=_organisation(endpoint, f"municipalities.yaml {code}") if endpoint else None,
            placeholder=bool(endpoint and endpoint.get("placeholder")),
        )
    return result


def _departments(doc: dict[str, Any]) -> dict[str, Department]:
    result: dict[str, Department] = {}
    for item in doc["departments"]:
        org = _organisation(item, f"departments.yaml {item.get('sor')}")
        result[org.sor] = Department(
            organisation=org,
            hospital=item["hospital"],
            rehabilitation_unit=item.get("rehabilitationUnit"),
            placeholder=bool(item.get("placeholder")),
        )
    return result


def _require_labels(labels: dict[str, Any], table: str, codes: tuple[str, ...] | list[str]) -> None:
    missing = [code for code in codes if code not in labels.get(table, {})]
    if missing:
        raise ConfigurationError(f"referral.yaml: labels.{table} lacks {', '.join(missing)}")


def _referral_rules(doc: dict[str, Any]) -> ReferralRules:
    labels = {table: {str(k).lower(): v for k, v in entries.items()} for table, entries in doc["labels"].items()}
    _require_labels(labels, "dcsRiskCriterion", DCS_CRITERIA)
    _require_labels(labels, "rehabElement", REHAB_ELEMENTS)
    _require_labels(labels, "referralCategory", sorted(set(CATEGORY.values())))
    _require_labels(labels, "riskGroup", [g.value for g in RiskGroup])
    high = frozenset(doc["risk"].get("highRiskCriteria") or ())
    if unknown := high - set(DCS_CRITERIA):
        raise ConfigurationError(f"referral.yaml: risk.highRiskCriteria names unknown criteria {sorted(unknown)}")
    notes = doc["notes"]
    return ReferralRules(
        risk_policy=RiskPolicy(high_risk_criteria=high),
        sternotomy_delay_weeks=int(doc["sternotomyBicycleTestDelayWeeks"]),
        notes=NoteTexts(
            no_exercise_test=notes["noExerciseTest"],
            sternotomy=notes["sternotomy"],
            risk_escalated=notes["riskEscalated"],
            closing_conversation=notes["closingConversation"],
            ambulatory_control=notes["ambulatoryControl"],
            cancelled=notes["cancelled"],
        ),
        labels=labels,
    )


def _zone(name: Any) -> ZoneInfo:
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(f"hotlines.yaml: timezone {name!r} is not an IANA time zone") from None


def _hotlines(doc: dict[str, Any]) -> dict[str, Hotline]:
    calendar = holidays.country_holidays(doc["holidayCountry"])
    zone = _zone(doc["timezone"])  # the hours are wall-clock times there
    result = {}
    for item in doc["departments"]:
        sor = str(item["sor"])
        try:
            weekly = {WEEKDAYS.index(day): parse_hours(span) for day, span in item["hours"].items()}
            closed = frozenset((int(m), int(d)) for m, d in (day.split("-") for day in item.get("closedDays", [])))
        except ValueError as exc:
            raise ConfigurationError(f"hotlines.yaml {sor}: {exc}") from None
        result[sor] = Hotline(
            sor,
            item["name"],
            OpeningHours(weekly, closed, calendar.__contains__, zone),
            item["onCall"]["name"],
            item["onCall"]["phone"],
        )
    return result


REPLY_TEXTS = ("onCall", "acuteToTriage", "acuteToGp", "afterHours", "responsibilityWithGp", "toGp", "copyToAdmitting")


def _hotline_settings(doc: dict[str, Any]) -> dict[str, Any]:
    """The time zone, reply texts, triage phone and the region's on-call contact (KeyError: a key is missing),
    each reply text present and the on-call contact named."""
    settings = {k: doc[k] for k in ("timezone", "replies", "triagePhone", "regionalOnCall")}
    missing = [key for key in REPLY_TEXTS if not isinstance(as_mapping(settings["replies"]).get(key), str)]
    if missing:
        raise ConfigurationError(f"hotlines.yaml: replies lacks {', '.join(missing)}")
    on_call = as_mapping(settings["regionalOnCall"])
    if not all(isinstance(on_call.get(k), str) and on_call[k].strip() for k in ("name", "phone")):
        raise ConfigurationError("hotlines.yaml: regionalOnCall needs a name and a phone")
    settings["regionalOnCall"] = OnCall(on_call["name"], on_call["phone"])
    return settings


def as_mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def load_mappings(directory: Path) -> Mappings:
    try:
        referral = _read(directory, "referral.yaml")
        hotline_doc = _read(directory, "hotlines.yaml")
        _refuse_other_routing(referral, "referral.yaml", REFERRAL_ROUTING)
        _refuse_other_routing(hotline_doc, "hotlines.yaml", HOTLINE_ROUTING)
        mappings = Mappings(
            directory=Directory(
                municipalities=_municipalities(_read(directory, "municipalities.yaml")),
                departments=_departments(_read(directory, "departments.yaml")),
            ),
            terminology=Terminology.from_mapping(_read(directory, "terminology.yaml")),
            referral_rules=_referral_rules(referral),
            hotlines=_hotlines(hotline_doc),
            hotline_settings=_hotline_settings(hotline_doc),
            gp_clinics={
                str(c["ydernummer"]): _organisation(c, f"gp-clinics.yaml {c.get('ydernummer')}")
                for c in _read(directory, "gp-clinics.yaml")["clinics"]
            },
            dcs_suggestions=dcs_suggestion_rules(_read(directory, DCS_SUGGESTIONS)),
            missed_referral=missed_referral_watch(_read(directory, HOSPITAL_NOTIFICATIONS)),
        )
    except KeyError as exc:
        raise ConfigurationError(f"{directory}: a mapping file lacks the key {exc}") from None
    _refuse_shared_endpoints(mappings)
    return mappings


DCS_SUGGESTIONS = "dcs-suggestions.yaml"
RULE_KEYS = {"criterion", "diagnoses", "procedures"}
CODE_KINDS = {"diagnoses": CodeKind.DIAGNOSIS, "procedures": CodeKind.PROCEDURE}


def dcs_suggestion_rules(doc: dict[str, Any]) -> tuple[SuggestionRule, ...]:
    """dcs-suggestions.yaml's `rules` → one SuggestionRule per code prefix, in the file's order. Raises
    ConfigurationError naming the rule's key for an unknown criterion, a malformed prefix (a diagnosis in SKS
    form), an unknown key, or a rule without codes; KeyError (reported by `load_mappings`) without `rules`."""
    rules = doc["rules"]
    if not isinstance(rules, list):
        raise ConfigurationError(f"{DCS_SUGGESTIONS}: rules is not a list")
    result: list[SuggestionRule] = []
    for i, rule in enumerate(rules):
        where = f"{DCS_SUGGESTIONS}: rules[{i}]"
        if not isinstance(rule, dict):
            raise ConfigurationError(f"{where} is not a table")
        if unknown := sorted(set(rule) - RULE_KEYS, key=str):
            raise ConfigurationError(f"{where} has unknown keys {unknown} (known: {sorted(RULE_KEYS)})")
        criterion = rule.get("criterion")
        if criterion not in DCS_CRITERIA:
            raise ConfigurationError(f"{where}.criterion names no DCS criterion: {criterion!r}")
        found = [
            _suggestion_rule(where, key, written, criterion)
            for key in CODE_KINDS
            for written in _codes(rule, key, where)
        ]
        if not found:
            raise ConfigurationError(f"{where} names no diagnoses and no procedures")
        result += found
    return tuple(result)


def _codes(rule: dict[str, Any], key: str, where: str) -> list[Any]:
    codes = rule.get(key) or []
    if not isinstance(codes, list):
        raise ConfigurationError(f"{where}.{key} is not a list")
    return codes


def _suggestion_rule(where: str, key: str, written: Any, criterion: str) -> SuggestionRule:
    prefix = rule_prefix(CODE_KINDS[key], str(written))
    if prefix is None:
        form = "an ICD-10 code prefix such as I50 or I13.0" if key == "diagnoses" else "an SKS procedure code prefix"
        raise ConfigurationError(f"{where}.{key}: {written!r} is not {form}")
    return SuggestionRule(CODE_KINDS[key], prefix, criterion)


HOSPITAL_NOTIFICATIONS = "hospital-notifications.yaml"
UNIT_KEYS = {"sor", "name", "placeholder"}


def missed_referral_watch(doc: dict[str, Any]) -> MissedReferralWatch:
    """hospital-notifications.yaml → the units whose discharges home are watched for their discharge event and
    how long (`missedReferralAfter`, hours: a positive number). Raises ConfigurationError naming the key for a
    bad value, a unit without a SOR id (digits only) or one named twice; KeyError (reported by `load_mappings`)
    without `units` or `missedReferralAfter`."""
    hours, units = doc["missedReferralAfter"], doc["units"]
    if isinstance(hours, bool) or not isinstance(hours, int | float) or not 0 < hours <= 24 * 365:
        raise ConfigurationError(f"{HOSPITAL_NOTIFICATIONS}: missedReferralAfter is not a number of hours (1-8760)")
    if not isinstance(units, list):
        raise ConfigurationError(f"{HOSPITAL_NOTIFICATIONS}: units is not a list")
    found: set[str] = set()
    for i, unit in enumerate(units):
        where = f"{HOSPITAL_NOTIFICATIONS}: units[{i}]"
        if not isinstance(unit, dict):
            raise ConfigurationError(f"{where} is not a table")
        if unknown := sorted(set(unit) - UNIT_KEYS, key=str):
            raise ConfigurationError(f"{where} has unknown keys {unknown} (known: {sorted(UNIT_KEYS)})")
        sor = str(unit.get("sor", ""))
        if not sor.isdigit():
            raise ConfigurationError(f"{where}.sor is not a SOR id")
        if sor in found:
            raise ConfigurationError(f"{where}.sor {sor} appears twice")
        found.add(sor)
    return MissedReferralWatch(frozenset(found), timedelta(hours=hours))


# What earlier releases' `routing` tables said, key by key, as the topology says it now.
REFERRAL_ROUTING = {
    "exchange": REFERRAL_TO_MUNICIPALITY.exchange,
    "municipality": REFERRAL_TO_MUNICIPALITY.key,
    "hospital": REFERRAL_TO_HOSPITAL.key,
}
HOTLINE_ROUTING = {"exchange": HOTLINE_REQUEST.exchange, "queue": HOTLINE_REQUEST.key, "reply": HOTLINE_REPLY.key}


def _refuse_other_routing(doc: dict[str, Any], name: str, topology: dict[str, str]) -> None:
    """An earlier release's `routing` table is accepted only when it says what the topology says (see above)."""
    said = doc.get("routing") or {}
    if not isinstance(said, dict):
        raise ConfigurationError(f"{name}: routing is not a table; routes are integration/topology.py's now")
    for key, value in said.items():
        if topology.get(key) != value:
            raise ConfigurationError(
                f"{name}: routing.{key} is not the topology's ({topology.get(key)!r}); routes are "
                "integration/topology.py's now: remove the routing table"
            )


def _refuse_shared_endpoints(mappings: Mappings) -> None:
    """Every receiving endpoint (a municipality's unit, a department, a GP clinic) has its own SOR id and EAN:
    two that share one would receive each other's messages, and an ack from one would count for the other."""
    endpoints = [(f"municipalities.yaml {c}", m.endpoint) for c, m in mappings.directory.municipalities.items()]
    endpoints += [(f"departments.yaml {sor}", d.organisation) for sor, d in mappings.directory.departments.items()]
    endpoints += [(f"gp-clinics.yaml {y}", org) for y, org in mappings.gp_clinics.items()]
    seen: dict[tuple[str, str], str] = {}
    for where, org in endpoints:
        if org is None:
            continue
        for kind, value in (("SOR id", org.sor), ("EAN", org.ean)):
            if value is None:
                continue
            if (kind, value) in seen:
                raise ConfigurationError(f"{where}: {kind} {value} is also {seen[kind, value]}'s")
            seen[kind, value] = where


def load_hl7_profile(directory: Path, departments: Directory) -> Hl7Profile:
    """mappings/hl7.yaml: the HL7 v2 ADT profile, its PV1-3 units looked up in departments.yaml
    (ConfigurationError naming the key at fault)."""
    units = {sor: department.organisation for sor, department in departments.departments.items()}
    return profile_from_mapping(_read(directory, "hl7.yaml"), units)
