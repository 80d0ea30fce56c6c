"""FHIR R4 content on the message path (what we send, what we receive): the schema generated from the R4 core
StructureDefinitions (`r4_schema`, shipped in schemas/) run by jsonschema-rs, with its three keywords of ours: the
calendar check of dates (`fhir-date`, `fhir-dateTime`, `fhir-instant`: 2026-02-30 is no date), integers
written as JSON integers (`fhirJsonInteger`), and R4's invariants on a contained resource (`fhirContained`).
About 30 µs per referral Bundle, against fhir.resources' 1.3 ms (`make bench`); fhir.resources stays in
`integration validate`, the conformance suite and the tests, and tests/test_validator_differential.py shows the
two agree, but for the classes docs/decisions/0030-message-path-validator.md lists.

Findings have `resource_validation`'s shape (`content_error.ContentError`): `Patient/<id>: name.0.given.1:
<problem>`, field `Patient.name[0].given[1]`, never a value from the message.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from decimal import Decimal
from functools import cache
from typing import Any

import jsonschema_rs
import orjson

from integration.config import shipped
from integration.conformance.content_error import NOT_A_RESOURCE, ContentError, located, not_a_resource
from integration.conformance.r4_schema import CALENDAR_FORMATS, MESSAGE_RESOURCES, SCHEMA_FILE

_FULL_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")


def is_calendar_date(text: str) -> bool:
    """Whether a FHIR date, dateTime or instant names a day the calendar has (its regex already checked the
    rest: the time of day, the zone). Partial dates (2026, 2026-02) have no day to check, and a month or day
    outside R4's ranges (13, 32) is the regex's finding, not a second one here. Any year R4's regex allows
    (0001-9999) is one `datetime.date` holds, as fhir.resources' reading of it needs."""
    parts = _FULL_DATE.match(text)
    if parts is None or not (1 <= int(parts[2]) <= 12 and 1 <= int(parts[3]) <= 31):
        return True
    try:
        date(int(parts[1]), int(parts[2]), int(parts[3]))
    except ValueError:
        return False
    return True


class _JsonInteger:
    """The `fhirJsonInteger` keyword: FHIR JSON writes an integer without a fraction or exponent (R4 §2.6.2);
    JSON Schema's `integer` takes 3.0, and our reader gives such a number as a Decimal."""

    def __init__(self, parent_schema: Any, value: Any, schema_path: Any) -> None:
        pass

    def validate(self, instance: Any) -> None:
        if isinstance(instance, float | Decimal):
            raise ValueError(JSON_INTEGER)


def _meta_has(resource: dict[str, Any], *names: str) -> bool:
    meta = resource.get("meta")
    return isinstance(meta, dict) and any(name in meta for name in names)


# DomainResource's invariants on a contained resource (R4, DomainResource's constraints), by key: what breaks it.
CONTAINED_RULES: dict[str, tuple[str, Callable[[dict[str, Any]], bool]]] = {
    "dom-2": ("a contained resource must not contain resources (dom-2)", lambda r: "contained" in r),
    "dom-4": (
        "a contained resource must not have meta.versionId or meta.lastUpdated (dom-4)",
        lambda r: _meta_has(r, "versionId", "lastUpdated"),
    ),
    "dom-5": (
        "a contained resource must not have a security label, meta.security (dom-5)",
        lambda r: _meta_has(r, "security"),
    ),
}


class _Contained:
    """The `fhirContained` keyword: a contained resource breaks none of the invariants its value names (keys of
    `CONTAINED_RULES`; KeyError at compile time for one this module does not check)."""

    def __init__(self, parent_schema: Any, value: Any, schema_path: Any) -> None:
        self.rules = [CONTAINED_RULES[key] for key in value]

    def validate(self, instance: Any) -> None:
        if isinstance(instance, dict):
            broken = [problem for problem, breaks in self.rules if breaks(instance)]
            if broken:
                raise ValueError("; ".join(broken))


JSON_INTEGER = "must be a JSON integer (no fraction, no exponent)"
NOT_A_DAY = "is not a real date (the calendar has no such day)"
EMPTY_ELEMENT = "empty: an id or an extension is needed (FHIR JSON has no empty objects; ele-1)"
CHOICE = "a choice element ([x]) has more than one type given: at most one may be"
_FORMATS: dict[str, Callable[[str], bool]] = dict.fromkeys(CALENDAR_FORMATS.values(), is_calendar_date)


def load_schema() -> dict[str, Any]:
    """The shipped schema (schemas/fhir-r4-messages.schema.json, in a wheel `integration/_shipped/schemas`)."""
    schema: dict[str, Any] = orjson.loads((shipped("schemas") / SCHEMA_FILE).read_bytes())
    return schema


@cache
def _compiled() -> tuple[Any, dict[str, str]]:
    """The compiled validator, once per process (about 50 ms), and each primitive's pattern → its FHIR type."""
    schema = load_schema()
    validator = jsonschema_rs.Draft202012Validator(
        schema,
        formats=_FORMATS,
        validate_formats=True,
        keywords={"fhirJsonInteger": _JsonInteger, "fhirContained": _Contained},
    )
    patterns = {d["pattern"]: name.removesuffix("-item") for name, d in schema["$defs"].items() if "pattern" in d}
    return validator, patterns


def _problem(kind: str, detail: dict[str, Any], patterns: dict[str, str]) -> str:
    """What an error of jsonschema-rs' `kind` means, in FHIR's words; never the value."""
    match kind:
        case "Type":
            return f"must be a JSON {' or '.join(t for t in detail['types'] if t != 'null')}"
        case "Pattern":
            return f"is not a valid FHIR {patterns.get(detail['pattern'], 'value')} (R4's regex)"
        case "Format":
            return NOT_A_DAY
        case "Constant":
            return f"must be {detail['expected_value']!r}"
        case "Enum":
            return "not a resource type this service exchanges (" + ", ".join(detail["options"]) + ")"
        case "FalseSchema":
            return CHOICE
        case "Minimum" | "Maximum":
            return f"out of range (the {kind.lower()} is {detail['limit']})"
        case "MinItems":
            return f"needs at least {detail['limit']} item(s)"
        case "MaxItems":
            return f"has more than {detail['limit']} item(s)"
        case "MaxLength":
            return f"longer than {detail['limit']} characters"
        case "MinProperties":
            return EMPTY_ELEMENT
        case "Custom":
            return str(detail["message"])
    return f"violates FHIR R4 ({kind})"


def _anchor(document: dict[str, Any], path: list[Any]) -> tuple[Any, list[Any], int | None]:
    """The resource an error's path lies in (a Bundle entry's own resource, else the document) and the path
    inside it; with the entry's position when it is an entry's resource."""
    if len(path) >= 3 and path[0] == "entry" and isinstance(path[1], int) and path[2] == "resource":
        return document["entry"][path[1]]["resource"], path[3:], path[1]
    return document, path, None


def _described(document: dict[str, Any], error: Any, patterns: dict[str, str]) -> ContentError:
    resource, path, position = _anchor(document, list(error.instance_path))
    rtype = resource.get("resourceType") if isinstance(resource, dict) else None
    if position is not None and rtype not in MESSAGE_RESOURCES:
        return not_a_resource(position, "not a FHIR resource (no resourceType, or not a type this service exchanges)")
    rid = resource.get("id")
    kind, detail = type(error.kind).__name__, error.kind.as_dict()
    if kind == "Required":
        return located(str(rtype), rid, path, "required element is missing", named=detail["property"])
    if kind == "AdditionalProperties":
        return located(str(rtype), rid, [*path, detail["unexpected"][0]], "unknown element (not in FHIR R4)")
    return located(str(rtype), rid, path, _problem(kind, detail, patterns))


def _unknown_elements(document: dict[str, Any], error: Any, patterns: dict[str, str]) -> list[ContentError]:
    """One error per unknown element (jsonschema-rs names them all in one)."""
    first = _described(document, error, patterns)
    if type(error.kind).__name__ != "AdditionalProperties" or first.field.endswith("].resource"):
        return [first]
    resource, path, _ = _anchor(document, list(error.instance_path))
    rtype, rid = resource.get("resourceType"), resource.get("id")
    unknown = error.kind.as_dict()["unexpected"]
    return [located(str(rtype), rid, [*path, name], "unknown element (not in FHIR R4)") for name in unknown]


@contextmanager
def _without_cyclic_gc() -> Iterator[None]:
    """Python's cyclic garbage collector held off: jsonschema-rs makes every error of a document at once, as
    Python objects none of which is in a cycle, and the collector, run again and again while they are made,
    triples the time (100,000 errors: 6 s with it, 2 s without)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def content_errors(document: Any, limit: int | None = None) -> list[ContentError]:
    """FHIR R4 content errors of a message or document (any JSON value; a Bundle, or any resource we exchange),
    one per problem, each naming its element; empty when valid. Raises nothing for any JSON value.

    With `limit`, the first `limit` are described and the rest only counted, in one last error at the document
    (`undescribed`): describing one costs about 35 µs, and a 1 MiB message can carry tens of thousands (25,000
    extensions without `url`: 0.9 s of describing for an acknowledgement that lists the first 100)."""
    validator, patterns = _compiled()
    if validator.is_valid(document):
        return []
    if not isinstance(document, dict) or document.get("resourceType") not in MESSAGE_RESOURCES:
        return [NOT_A_RESOURCE]
    found: dict[str, ContentError] = {}
    with _without_cyclic_gc():
        errors = iter(validator.iter_errors(document))
        for error in errors:
            for described in _unknown_elements(document, error, patterns):
                found.setdefault(described.text, described)
            if limit is not None and len(found) >= limit:
                break
        rest = sum(1 for _ in errors)
    return list(found.values()) + ([undescribed(str(document["resourceType"]), rest)] if rest else [])


def undescribed(rtype: str, count: int) -> ContentError:
    """The error that stands for `count` more the schema found but `content_errors` did not describe."""
    problem = f"{count} more FHIR R4 content error(s) found, not described"
    return ContentError(f"{rtype}: {problem}", rtype, problem)


def fhir_problems(document: Any) -> list[str]:
    """FHIR R4 content problems, as text (`content_errors`)."""
    return [error.text for error in content_errors(document)]
