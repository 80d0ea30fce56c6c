"""`resource_validation` reads each field's annotation once (`_held_type`) for both the element model and the
primitive kind: the same results, over every field of every fhir.resources R4B model class, as the two walks
it replaced (kept here as they were, as the oracle)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import typing
from functools import cache
from typing import Any

import fhir.resources.R4B as r4b

from integration.conformance import resource_validation
from integration.conformance.resource_validation import _KINDS, _element_model, _primitive_kind


def _old_element_model(annotation: Any) -> Any:
    pending = [annotation]
    while pending:
        current = pending.pop()
        if hasattr(current, "get_model_klass"):
            model = current.get_model_klass()
            return None if model.__name__ in ("Resource", "DomainResource") else model
        pending.extend(typing.get_args(current))
    return None


def _old_primitive_kind(annotation: Any) -> str | None:
    pending = [annotation]
    while pending:
        current = pending.pop()
        if current in _KINDS:
            return _KINDS[current]
        if hasattr(current, "get_model_klass"):
            return None
        pending.extend(typing.get_args(current))
    return None


@cache
def _model_classes() -> list[Any]:
    """Every pydantic model class of fhir.resources R4B: each resource, each element, each backbone element."""
    classes: dict[str, Any] = {}
    for module in pkgutil.iter_modules(r4b.__path__):
        if module.ispkg or module.name.startswith(("fhirtypes", "tests")):
            continue
        loaded = importlib.import_module(f"{r4b.__name__}.{module.name}")
        for _name, cls in inspect.getmembers(loaded, inspect.isclass):
            if hasattr(cls, "model_fields") and cls.__module__.startswith(r4b.__name__):
                classes[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return [classes[key] for key in sorted(classes)]


def test_every_model_class_of_fhir_resources_r4b_is_found() -> None:
    names = {cls.__name__ for cls in _model_classes()}
    assert len(names) > 600 and {"Bundle", "Patient", "Communication", "Coding", "BundleEntry"} <= names


def test_the_merged_walk_gives_the_element_model_and_primitive_kind_the_two_walks_gave() -> None:
    fields = 0
    for cls in _model_classes():
        for name, info in cls.model_fields.items():
            where = f"{cls.__name__}.{name}"
            assert _element_model(info.annotation) is _old_element_model(info.annotation), where
            assert _primitive_kind(info.annotation) == _old_primitive_kind(info.annotation), where
            fields += 1
    assert fields > 10000


def test_the_fields_the_validator_reads_are_unchanged_for_every_resource() -> None:
    resources = [cls for cls in _model_classes() if cls.__name__ == getattr(cls, "get_resource_type", lambda: "")()]
    assert len(resources) > 100
    for model in resources:
        complex_fields = resource_validation._complex_fields(model)
        assert complex_fields == {
            info.alias or name: element
            for name, info in model.model_fields.items()
            if (element := _old_element_model(info.annotation)) is not None
        }, model.__name__
