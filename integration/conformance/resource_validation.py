"""FHIR R4 content validation with fhir.resources: `integration validate`, the conformance suite and the tests.

The message path validates with the schema generated from the R4 core definitions instead (`r4_validator`,
docs/decisions/0030-message-path-validator.md, which retired the remembering of decision 0005);
tests/test_validator_differential.py holds the two to the same verdicts.

fhir.resources 8 ships no R4 package; its R4B models accept R4 content for every resource we
emit (Bundle is identical). Each FHIR element is its own pydantic model with Python-level
validators (about 25 µs each), so a referral of about 100 elements costs about a millisecond.
The Bundle's shell (its entries without their resources) and each resource are validated with
their own models: the same content as the Bundle whole, without the Bundle's dynamic dispatch on
`resourceType`, which validates every resource twice.
"""

from __future__ import annotations

import re
import typing
from decimal import Decimal
from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from integration.conformance.content_error import NAME, NOT_A_RESOURCE, ContentError, located, not_a_resource

Resource = dict[str, Any]


@cache
def model_for(resource_type: str) -> Any:
    return get_fhir_model_class(resource_type)


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


# fhir.resources' one message that quotes the input: "expects resource type ``Meta``, but got ``<value>``. Make sure …"
_QUOTED_RESOURCE_TYPE = re.compile(r"but got ``.*``\.\s*Make sure", re.DOTALL)
# What fhir.resources' validators raise besides ValidationError on content they cannot read (its url type,
# for one, calls str methods on whatever it is given), and orjson on a number it cannot write.
_UNREADABLE = (KeyError, ValueError, TypeError, AttributeError)


def without_values(problem: str) -> str:
    """pydantic's words for a problem on one line, without the value fhir.resources quotes in one of them."""
    return " ".join(_QUOTED_RESOURCE_TYPE.sub("but got another. Make sure", problem).split())


def _located(rtype: str, rid: Any, path: list[Any], problem: str) -> ContentError:
    return located(rtype, rid, path, problem, shown=without_values(problem))


def _validation_errors(resource: Resource, error: ValidationError) -> list[ContentError]:
    rtype = resource.get("resourceType")
    return [
        _located(rtype if isinstance(rtype, str) else "Resource", resource.get("id"), list(e["loc"]), e["msg"])
        for e in error.errors()
    ]


def _model(resource: Any) -> Any:
    """The fhir.resources model for `resource`, or None when it names no FHIR R4 resource type."""
    rtype = resource.get("resourceType") if isinstance(resource, dict) else None
    if not isinstance(rtype, str) or not NAME.fullmatch(rtype):
        return None
    try:
        return model_for(rtype)
    except _UNREADABLE:
        return None


def _checked(resource: Resource, model: Any) -> list[ContentError]:
    """The content errors of one resource (or the Bundle's shell)."""
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        return _validation_errors(resource, exc)
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


def contained_errors(resource: Resource) -> list[ContentError]:
    """A contained resource without `resourceType` (R4: every resource names its type; fhir.resources reads such
    an object as a bare Resource and lets it pass)."""
    contained = resource.get("contained")
    return [
        located(
            str(resource.get("resourceType")),
            resource.get("id"),
            ["contained", i],
            "required element is missing",
            named="resourceType",
        )
        for i, item in enumerate(contained if isinstance(contained, list) else [])
        if isinstance(item, dict) and "resourceType" not in item
    ]


def _resource_errors(resource: Resource, model: Any) -> list[ContentError]:
    return _checked(resource, model) + json_type_errors(resource, model) + contained_errors(resource)


def _shell(bundle: Resource) -> Resource:
    """The Bundle without its entries' resources (each is validated with its own model); any other resource
    as it is."""
    if bundle.get("resourceType") != "Bundle" or "entry" not in bundle:
        return bundle
    entries = bundle["entry"]
    if isinstance(entries, list):
        entries = [{k: v for k, v in e.items() if k != "resource"} if isinstance(e, dict) else e for e in entries]
    return {**bundle, "entry": entries}


def content_errors(bundle: Any) -> list[ContentError]:
    """FHIR R4 content errors: the Bundle's shell, then each resource with its own model; any JSON value is read."""
    model = _model(bundle)
    if model is None:
        return [NOT_A_RESOURCE]
    shell = _shell(bundle)
    errors = _resource_errors(shell, model)
    entries = bundle.get("entry")
    for position, entry in enumerate(entries if isinstance(entries, list) else []):
        resource = (entry.get("resource") if isinstance(entry, dict) else None) or {}
        model = _model(resource)
        if model is None:
            errors.append(not_a_resource(position, "not a FHIR resource (no resourceType, or not an R4 type)"))
        else:
            errors += _resource_errors(resource, model)
    return errors


def fhir_problems(bundle: Any) -> list[str]:
    """FHIR R4 content problems, as text (`content_errors`)."""
    return [error.text for error in content_errors(bundle)]
