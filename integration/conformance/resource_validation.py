"""FHIR R4 content validation with fhir.resources, remembering what it already found valid.

fhir.resources 8 ships no R4 package; its R4B models accept R4 content for every resource we
emit (Bundle is identical). Each FHIR element is its own pydantic model with Python-level
validators (about 25 µs each), so a referral of about 100 elements costs milliseconds. Two
things make that affordable without validating less (docs/decisions/0005-validation-cost.md):

- Elements are validated bottom-up and remembered, keyed by their content; a remembered
  element is handed to its parent as the model instance, which fhir.resources accepts as is.
- The key abstracts the message's own volatile tokens: its resource ids (when UUIDs) and its
  timestamp (when a real one) are replaced, wherever they occur, by a fixed token of the same
  shape. fhir.resources judges such tokens by their lexical form only, and a UUID or a real
  timestamp stays one, so two contents that differ only there are valid or invalid together.

Never remembered: what identifies a patient (identifier, name, telecom, contact) and the
patient's narrative; messages validated with `remember=False` (from elsewhere) leave nothing.
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import cache, lru_cache
from typing import Any

import orjson
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from integration.fhir import fhir_json

Resource = dict[str, Any]

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_UUID_STAND_IN = b"abcdef01-abcd-4bcd-8bcd-abcdef012345"
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?(Z|[+-][0-9]{2}:[0-9]{2})")
_PATIENT_IDENTITY = frozenset({"identifier", "name", "telecom", "contact", "text"})

StandIns = tuple[tuple[bytes, bytes], ...]


@cache
def model_for(resource_type: str) -> Any:
    return get_fhir_model_class(resource_type)


def _timestamp_stand_in(token: str) -> bytes | None:
    """A fixed real timestamp of the same shape, or None when `token` is not a real timestamp."""
    shape = _TIMESTAMP.fullmatch(token)
    if shape is None:
        return None
    try:
        datetime.fromisoformat(token)
    except ValueError:
        return None
    seconds = re.sub(r"[0-9]", "0", shape.group(1) or "")
    zone = "Z" if shape.group(3) == "Z" else "+00:00"
    return f"2000-01-01T00:00{seconds}{zone}".encode()


def stand_ins(bundle: Resource) -> StandIns:
    """The message's own volatile tokens, each with its fixed stand-in: every resource id and the
    Bundle's id that is a UUID, and the Bundle's timestamp if it is a real one."""
    entries = bundle.get("entry")
    resources = [e.get("resource") for e in (entries if isinstance(entries, list) else []) if isinstance(e, dict)]
    ids = [bundle.get("id")] + [r.get("id") for r in resources if isinstance(r, dict)]
    unique = {i for i in ids if isinstance(i, str) and _UUID.fullmatch(i)}
    pairs = [(i.encode(), _UUID_STAND_IN) for i in sorted(unique)]
    timestamp = bundle.get("timestamp")
    if isinstance(timestamp, str) and (stand_in := _timestamp_stand_in(timestamp)) is not None:
        pairs.append((timestamp.encode(), stand_in))
    return tuple(pairs)


def memory_key(content: bytes, replacements: StandIns) -> bytes:
    """The content with the message's volatile tokens replaced by their stand-ins."""
    for token, stand_in in replacements:
        content = content.replace(token, stand_in)
    return content


def _held_type(annotation: Any) -> Any:
    """What a field's annotation holds: the first FHIR primitive's Python type (one of `_KINDS`) or element
    model (`get_model_klass`) found walking it and its arguments depth first, last argument first; None when
    neither. No fhir.resources R4B field names both (tests/test_resource_validation_annotations.py)."""
    pending = [annotation]
    while pending:
        current = pending.pop()
        if current in _KINDS:
            return current
        if hasattr(current, "get_model_klass"):
            return current.get_model_klass()
        pending.extend(typing.get_args(current))
    return None


def _element_model(annotation: Any) -> Any:
    """The element model behind a field's annotation (None for a primitive, or a field that holds resources)."""
    held = _held_type(annotation)
    if held is None or held in _KINDS or held.__name__ in ("Resource", "DomainResource"):
        return None
    return held


@cache
def _complex_fields(model: Any) -> dict[str, Any]:
    """JSON name → element model, for the fields of `model` whose values are complex elements."""
    fields = {}
    for name, info in model.model_fields.items():
        element = _element_model(info.annotation)
        if element is not None:
            fields[info.alias or name] = element
    return fields


class InvalidElement(Exception):
    def __init__(self, field: str, error: ValidationError) -> None:
        super().__init__(field)
        self.field, self.error = field, error


@lru_cache(maxsize=16384)
def _validated_element(model: Any, key: bytes) -> Any:
    """The element model built from the key's content: valid exactly when the original is."""
    return model.model_validate(orjson.loads(key))


def _element(model: Any, value: Any, field: str, replacements: StandIns) -> Any:
    if isinstance(value, dict):
        key = memory_key(fhir_json.dumps(value, option=orjson.OPT_SORT_KEYS), replacements)
        try:
            return _validated_element(model, key)
        except ValidationError as exc:
            raise InvalidElement(field, exc) from None
    if isinstance(value, list):
        return [_element(model, item, f"{field}.{i}", replacements) for i, item in enumerate(value)]
    return value


class _BoundedSet:
    """Remembers up to `size` keys, forgetting the oldest first."""

    def __init__(self, size: int) -> None:
        self._keys: dict[bytes, None] = {}
        self._size = size

    def __contains__(self, key: bytes) -> bool:
        return key in self._keys

    def clear(self) -> None:
        self._keys.clear()

    def add(self, key: bytes) -> None:
        self._keys[key] = None
        if len(self._keys) > self._size:
            del self._keys[next(iter(self._keys))]


_valid_resources = _BoundedSet(4096)


def forget_validated() -> None:
    """Empty the memory of validated elements and resources."""
    _validated_element.cache_clear()
    _valid_resources.clear()


def _validate_with_known_elements(
    model: Any, resource: Resource, replacements: StandIns, skip: frozenset[str] = frozenset()
) -> None:
    fields = _complex_fields(model)
    model.model_validate(
        {
            k: _element(fields[k], v, k, replacements) if k in fields and k not in skip else v
            for k, v in resource.items()
        }
    )


def validate_resource(resource: Resource, replacements: StandIns = ()) -> None:
    """Validate one resource with its fhir.resources model, remembering what was found valid.

    `replacements` are the message's volatile tokens (`stand_ins`). Raises pydantic's
    ValidationError, or InvalidElement naming the field whose element failed.
    """
    model = model_for(resource["resourceType"])
    if resource["resourceType"] == "Patient":
        _validate_with_known_elements(model, resource, replacements, _PATIENT_IDENTITY)
        return
    key = model.__name__.encode() + memory_key(fhir_json.dumps(resource, option=orjson.OPT_SORT_KEYS), replacements)
    if key not in _valid_resources:
        _validate_with_known_elements(model, resource, replacements)
        _valid_resources.add(key)


_NAME = re.compile(r"(?![A-Za-z0-9_]*\d{6})[A-Za-z_][A-Za-z0-9_]{0,63}")  # no six digits: a CPR is ten
_HIDDEN = "(id not shown)"
# fhir.resources' one message that quotes the input: "expects resource type ``Meta``, but got ``<value>``. Make sure …"
_QUOTED_RESOURCE_TYPE = re.compile(r"but got ``.*``\.\s*Make sure", re.DOTALL)
# What fhir.resources' validators raise besides ValidationError on content they cannot read (its url type,
# for one, calls str methods on whatever it is given), and orjson on a number it cannot write.
_UNREADABLE = (KeyError, ValueError, TypeError, AttributeError)


@dataclass(frozen=True, slots=True)
class ContentError:
    """One FHIR content error: `text` as before (`Patient/<id>: identifier.0.value: <problem>`), `field` as a
    FHIR path (`Patient.identifier[0].value`), and `shown`, which repeats nothing from the message but what
    FHIR defines: the id only when it is a UUID, element names only when they are names."""

    text: str
    field: str
    shown: str

    def __str__(self) -> str:
        return self.text


def without_values(problem: str) -> str:
    """pydantic's words for a problem on one line, without the value fhir.resources quotes in one of them."""
    return " ".join(_QUOTED_RESOURCE_TYPE.sub("but got another. Make sure", problem).split())


def _located(rtype: str, rid: Any, path: list[Any], problem: str) -> ContentError:
    shown_id = rid if isinstance(rid, str) and _UUID.fullmatch(rid) else _HIDDEN
    names = [p if isinstance(p, int) or (isinstance(p, str) and _NAME.fullmatch(p)) else "?" for p in path]
    field = rtype + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in names)
    return ContentError(
        f"{rtype}/{rid}: {'.'.join(str(p) for p in path)}: {problem}",
        field,
        f"{rtype}/{shown_id}: {'.'.join(str(p) for p in names)}: {without_values(problem)}",
    )


def _validation_errors(resource: Resource, error: ValidationError, field: str = "") -> list[ContentError]:
    rtype = resource.get("resourceType")
    prefix: list[Any] = [int(p) if p.isdigit() else p for p in field.split(".")] if field else []
    return [
        _located(rtype if isinstance(rtype, str) else "Resource", resource.get("id"), prefix + list(e["loc"]), e["msg"])
        for e in error.errors()
    ]


def _not_a_resource(position: int, why: str) -> ContentError:
    return ContentError(f"entry[{position}]: {why}", f"Bundle.entry[{position}].resource", f"entry[{position}]: {why}")


def _model(resource: Any) -> Any:
    """The fhir.resources model for `resource`, or None when it names no FHIR R4 resource type."""
    rtype = resource.get("resourceType") if isinstance(resource, dict) else None
    if not isinstance(rtype, str) or not _NAME.fullmatch(rtype):
        return None
    try:
        return model_for(rtype)
    except _UNREADABLE:
        return None


def _checked(resource: Resource, model: Any, replacements: StandIns, remember: bool) -> list[ContentError]:
    """The content errors of one resource (or the Bundle's shell), remembering what is valid when asked to."""
    try:
        if remember:
            validate_resource(resource, replacements)
        else:
            model.model_validate(resource)
    except ValidationError as exc:
        return _validation_errors(resource, exc)
    except InvalidElement as exc:
        return _validation_errors(resource, exc.error, exc.field)
    except _UNREADABLE as exc:
        rtype = resource.get("resourceType")
        problem = f"cannot be read as FHIR R4 ({type(exc).__name__})"
        where = _unreadable_element(model, resource)
        return [_located(rtype if isinstance(rtype, str) else "Resource", resource.get("id"), where, problem)]
    return []


def _unreadable_element(model: Any, resource: Resource) -> list[Any]:
    """The element whose content the validator itself failed on (it does not say): each one alone."""
    for key, value in resource.items():
        if key != "resourceType":
            try:
                model.model_validate({"resourceType": resource.get("resourceType"), key: value})
            except ValidationError:
                continue
            except _UNREADABLE:
                return [key]
    return []


# FHIR JSON's types for primitives (R4 §2.6.2 "JSON representation of primitive elements"): a boolean is JSON
# true/false, an integer a JSON number without fraction or exponent, a decimal a JSON number, every other
# primitive a JSON string. fhir.resources' (pydantic's) lax mode coerces "true", 5.0 and 1E1, and the raw
# JSON, not the model, is what we forward; so the JSON types are checked on the raw content.
_KINDS = {bool: "boolean", int: "integer", Decimal: "decimal", str: "string"}
_SHOULD_BE = {
    "boolean": "must be a JSON boolean (true or false)",
    "integer": "must be a JSON integer (no fraction, no exponent)",
    "decimal": "must be a JSON number",
    "string": "must be a JSON string",
}


def _primitive_kind(annotation: Any) -> str | None:
    """boolean, integer, decimal or string for a field holding a FHIR primitive (or a list of them), else None."""
    held = _held_type(annotation)
    return _KINDS[held] if held in _KINDS else None


@cache
def _primitive_fields(model: Any) -> dict[str, str]:
    """JSON name → boolean, integer, decimal or string, for the fields of `model` that hold primitives."""
    kinds = {}
    for name, info in model.model_fields.items():
        kind = _primitive_kind(info.annotation)
        if kind is not None and not name.endswith("__ext") and name != "fhir_comments":
            kinds[info.alias or name] = kind
    return kinds


def _json_type_ok(kind: str, value: Any) -> bool:
    if value is None:
        return True  # in a list of primitives, a null pairs with an `_element`'s extension
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "decimal":
        return isinstance(value, int | float | Decimal) and not isinstance(value, bool)
    return isinstance(value, str)


def json_type_errors(resource: Resource, model: Any) -> list[ContentError]:
    """Every primitive in `resource` whose JSON type is not the one FHIR JSON requires, naming where (a path of
    element names, never the value). Contained resources are checked with their own model."""
    errors: list[ContentError] = []
    rtype, rid = resource.get("resourceType"), resource.get("id")
    pending: list[tuple[Any, Any, list[Any]]] = [(model, resource, [])]
    while pending:
        current, node, path = pending.pop()
        kinds, complex_fields = _primitive_fields(current), _complex_fields(current)
        for key, value in node.items():
            values = value if isinstance(value, list) else [value]
            if key in kinds:
                for i, item in enumerate(values):
                    if not _json_type_ok(kinds[key], item):
                        where = path + [key] + ([i] if isinstance(value, list) else [])
                        errors.append(_located(str(rtype), rid, where, _SHOULD_BE[kinds[key]]))
            elif key in complex_fields:
                for i, item in enumerate(values):
                    if isinstance(item, dict):
                        where = path + [key] + ([i] if isinstance(value, list) else [])
                        pending.append((complex_fields[key], item, where))
            elif key == "contained":
                for i, item in enumerate(values):
                    inner = _model(item)
                    if inner is not None:
                        pending.append((inner, item, path + [key, i]))
    return errors


def _shell(bundle: Resource) -> Resource:
    """The Bundle without its entries' resources (each is validated with its own model)."""
    entries = bundle.get("entry", [])
    if isinstance(entries, list):
        entries = [{k: v for k, v in e.items() if k != "resource"} if isinstance(e, dict) else e for e in entries]
    return {**bundle, "entry": entries}


def content_errors(bundle: Any, *, remember: bool = True) -> list[ContentError]:
    """FHIR R4 content errors: the Bundle's shell, then each resource with its own model; any JSON value is read.

    `remember` is for our own messages; a message from elsewhere is validated afresh and leaves
    nothing behind.
    """
    if not isinstance(bundle, dict) or _model(bundle) is None:
        return [ContentError("not a FHIR resource", "Bundle", "not a FHIR resource")]
    model, replacements = _model(bundle), stand_ins(bundle)
    shell = _shell(bundle)
    errors = _checked(shell, model, replacements, remember) + json_type_errors(shell, model)
    entries = bundle.get("entry")
    for position, entry in enumerate(entries if isinstance(entries, list) else []):
        resource = (entry.get("resource") if isinstance(entry, dict) else None) or {}
        model = _model(resource)
        if model is None:
            errors.append(_not_a_resource(position, "not a FHIR resource (no resourceType, or not an R4 type)"))
        else:
            errors += _checked(resource, model, replacements, remember) + json_type_errors(resource, model)
    return errors


def fhir_problems(bundle: Any, *, remember: bool = True) -> list[str]:
    """FHIR R4 content problems, as text (`content_errors`)."""
    return [error.text for error in content_errors(bundle, remember=remember)]
