"""The message path's FHIR R4 validator (the generated schema, `r4_validator`) against fhir.resources
(`resource_validation`, what `integration validate` runs): the same verdict, valid or invalid, on every golden
message, every MedCom example Bundle and thousands of mutated resources, except for the disagreement classes
docs/decisions/0030-message-path-validator.md lists (`DISAGREEMENTS`, each also shown by its own example).

The mutations are drawn by Hypothesis, derandomized and without a database (the same examples on every run),
from every resource of the golden messages, at places the schema says have the type each mutation needs:
a required element dropped, a second type of a choice, a primitive of the wrong JSON type or format, an
unknown element, an impossible date, an extension without url. A mutated resource is validated alone
(both validators take any resource we exchange), which keeps fhir.resources' share of the runtime small.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from integration.conformance import r4_validator, resource_validation
from tests.conftest import GOLDEN

DIFFERENTIAL = settings(
    deadline=None,
    derandomize=True,  # the same examples on every run: CI is deterministic, and its cost bounded
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
EXAMPLES = 500  # per mutation kind: 3,500 mutated resources in all
DEFS: dict[str, Any] = r4_validator.load_schema()["$defs"]
Json = dict[str, Any]

NOTE = Path(__file__).parent.parent / "docs" / "decisions" / "0030-message-path-validator.md"
VERDICTS = {
    "schema refuses, fhir.resources accepts": (False, True),
    "schema accepts, fhir.resources refuses": (True, False),
}


def _listed_disagreements(note: str) -> dict[str, tuple[bool, bool]]:
    """The decision note's table of disagreement classes: class → (valid by the schema, by fhir.resources)."""
    rows = (line.split(" | ") for line in note.splitlines() if line.startswith("| `"))
    return {row[0].removeprefix("| `").removesuffix("`"): VERDICTS[row[1]] for row in rows}


# Where the two validators disagree, by class, and which way: read from the decision note's table, so that the
# test accepts exactly what the note lists.
DISAGREEMENTS: dict[str, tuple[bool, bool]] = _listed_disagreements(NOTE.read_text(encoding="utf-8"))


def _real(text: str) -> str:
    """A golden expected file's placeholders back into real values: `<id:N>` a UUID, `<now>` a timestamp."""
    text = re.sub(r"<id:(\d+)>", lambda m: str(uuid.uuid5(uuid.NAMESPACE_URL, f"golden-{m[1]}")), text)
    return text.replace("<now>", "2026-11-20T14:30:00+01:00")


def _bundles(value: Any) -> Iterator[Json]:
    if isinstance(value, dict):
        if value.get("resourceType") == "Bundle":
            yield value
            return
        for inner in value.values():
            yield from _bundles(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _bundles(inner)


GOLDEN_BUNDLES = [
    (f"{p.relative_to(GOLDEN)}#{i}", b)
    for p in sorted(GOLDEN.rglob("*.json"))
    for i, b in enumerate(_bundles(json.loads(_real(p.read_text(encoding="utf-8")))))
]
RESOURCES: list[Json] = list(
    {
        json.dumps(e["resource"], sort_keys=True): e["resource"]
        for _, b in GOLDEN_BUNDLES
        for e in b.get("entry", [])
        if e.get("resource", {}).get("resourceType") in DEFS
    }.values()
)


def verdicts(document: Any) -> tuple[bool, bool]:
    """(valid by the schema, valid by fhir.resources)."""
    return not r4_validator.content_errors(document), not resource_validation.content_errors(document)


# -- the corpus ------------------------------------------------------------------------------------------


def test_the_corpus_is_the_golden_messages() -> None:
    assert len(GOLDEN_BUNDLES) >= 50 and len(RESOURCES) >= 100


@pytest.mark.parametrize(("name", "bundle"), GOLDEN_BUNDLES, ids=[n for n, _ in GOLDEN_BUNDLES])
def test_every_golden_message_is_valid_by_both(name: str, bundle: Json) -> None:
    assert verdicts(bundle) == (True, True), name


def test_every_medcom_example_gets_the_same_verdict_from_both(shared: Path) -> None:
    paths = [p for p in (shared / "medcom").rglob("*.json") if "definitions" not in p.parts]
    checked = 0
    for path in paths:
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("resourceType") != "Bundle":
            continue
        schema, fhir = verdicts(document)
        assert schema == fhir, path.name
        checked += 1
    assert checked >= 15


# -- where the schema says what is what ----------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    """A place in a resource: its path and the definition it is (`Patient`, `Coding`, `dateTime`)."""

    path: tuple[Any, ...]
    kind: str


def _ref(schema: Json) -> str:
    return str(schema["$ref"]).rsplit("/", 1)[1]


def nodes(value: Any, kind: str, path: tuple[Any, ...] = ()) -> Iterator[Node]:
    """Every object and primitive of a valid resource, with its definition's name, as the schema reads it."""
    if value is None:
        return
    if kind == "Resource":
        kind = value["resourceType"]
    kind = kind.removesuffix("-item")
    yield Node(path, kind)
    properties = DEFS[kind].get("properties") if isinstance(value, dict) else None
    if not properties or kind.startswith("Element-primitive"):
        return
    for name, inner in value.items():
        schema = properties.get(name, {})
        if schema.get("type") == "array":
            for i, item in enumerate(inner):
                yield from nodes(item, _ref(schema["items"]), (*path, name, i))
        elif "$ref" in schema:
            yield from nodes(inner, _ref(schema), (*path, name))


def _at(resource: Json, node: Node) -> Any:
    """The same place in a copy of the resource."""
    target: Any = resource
    for step in node.path[:-1]:
        target = target[step]
    return target


# -- the mutations ---------------------------------------------------------------------------------------

Mutation = Callable[[Json, Node, Any], str | None]  # changes the resource at the node; its class, or None: n/a


def _objects(kind_filter: Callable[[str], bool]) -> Callable[[Node], bool]:
    return lambda node: "properties" in DEFS.get(node.kind, {}) and kind_filter(node.kind)


def drop_required(resource: Json, node: Node, draw: Any) -> str | None:
    definition, target = DEFS[node.kind], _holder(resource, node)
    names = [n for n in definition.get("required", []) if n != "resourceType" and n in target]
    for rule in definition.get("allOf", []):
        alternatives = [alt["required"][0] for alt in rule["if"]["not"]["anyOf"]]
        if any(a in target for a in alternatives):
            names.append("|".join(a for a in alternatives if a in target))
    if not names:
        return None
    for name in draw(st.sampled_from(sorted(names))).split("|"):
        target.pop(name)
        target.pop(f"_{name}", None)
    return "drop-required"


def _holder(resource: Json, node: Node) -> Any:
    return resource if not node.path else _at(resource, node)[node.path[-1]]


SAMPLES: dict[str, Any] = {
    "string": "x",
    "boolean": True,
    "integer": 1,
    "decimal": 1,
    "dateTime": "2026-01-01",
    "date": "2026-01-01",
    "instant": "2026-01-01T10:00:00Z",
    "code": "x",
    "uri": "http://x",
    "canonical": "http://x",
    "CodeableConcept": {"text": "x"},
    "Coding": {"code": "x"},
    "Quantity": {"value": 1},
    "Period": {"start": "2026-01-01"},
    "Reference": {"reference": "Patient/x"},
    "Identifier": {"value": "x"},
    "Range": {"low": {"value": 1}},
    "Age": {"value": 1},
    "Duration": {"value": 1},
    "Timing": {"event": ["2026-01-01"]},
}


def duplicate_choice(resource: Json, node: Node, draw: Any) -> str | None:
    definition, target = DEFS[node.kind], _holder(resource, node)
    present = [n for n in definition.get("dependentSchemas", {}) if n in target]
    if not present:
        return None
    chosen = draw(st.sampled_from(sorted(present)))
    others = [
        o
        for o in definition["dependentSchemas"][chosen]["properties"]
        if not o.startswith("_") and _ref(definition["properties"][o]) in SAMPLES
    ]
    if not others:
        return None
    other = draw(st.sampled_from(sorted(others)))
    target[other] = copy.deepcopy(SAMPLES[_ref(definition["properties"][other])])
    return "duplicate-choice"


WRONG_JSON: dict[str, list[Any]] = {"string": [7, True, {"x": 1}], "boolean": ["true", 1], "integer": [1.5, "1"]}
WRONG_JSON["number"] = ["1.0", True]
# Values of the right JSON type that R4's regex refuses, per type, with their class when they are one.
BAD_FORMATS: dict[str, list[tuple[str, str]]] = {
    "code": [("a  b", "format"), (" a", "format"), ("", "format")],
    "id": [("a b", "format"), ("a" * 65, "id-too-long"), ("", "format")],
    "uri": [("a b", "uri-with-space")],
    "url": [("a b", "uri-with-space")],
    "canonical": [("a b", "uri-with-space")],
    "uuid": [("c757873d-ec9a-4326-a141-556f43239520", "uuid-format")],
    "oid": [("1.2.3", "format")],
    "string": [("", "format")],
    "markdown": [("", "markdown-empty")],
    "date": [("2026-1-1", "format"), ("2026-01-01T10:00:00Z", "format")],
    "dateTime": [("2026-01-01T10:00:00", "format"), ("2026-13", "format"), ("2026-01-01T24:00:00Z", "format")],
    "instant": [("2026-01-01", "format"), ("2026-01-01T10:00Z", "format")],
    "time": [("25:00:00", "format")],
    "base64Binary": [("abc", "format")],
}


def wrong_type(resource: Json, node: Node, draw: Any) -> str | None:
    json_type = DEFS.get(node.kind, {}).get("type")
    json_type = json_type[0] if isinstance(json_type, list) else json_type
    if json_type not in WRONG_JSON or not node.path:
        return None
    value = draw(st.sampled_from(WRONG_JSON[json_type]))
    _at(resource, node)[node.path[-1]] = value
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return "date-as-number" if number and node.kind in ("date", "dateTime", "instant", "time") else "wrong-type"


def wrong_format(resource: Json, node: Node, draw: Any) -> str | None:
    if node.kind not in BAD_FORMATS or not node.path:
        return None
    value, klass = draw(st.sampled_from(BAD_FORMATS[node.kind]))
    _at(resource, node)[node.path[-1]] = value
    return klass


UNKNOWN_NAMES = [("nickname", "unknown-element"), ("valueFoo", "unknown-element"), ("_nickname", "unknown-element")]
UNKNOWN_NAMES += [("Status", "unknown-element"), ("fhir_comments", "fhir_comments")]


def unknown_element(resource: Json, node: Node, draw: Any) -> str | None:
    target = _holder(resource, node)
    if not isinstance(target, dict) or "properties" not in DEFS.get(node.kind, {}):
        return None
    name, klass = draw(st.sampled_from(UNKNOWN_NAMES))
    target[name] = ["x"] if name == "fhir_comments" else "x"
    return klass


_FULL_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def bad_date(resource: Json, node: Node, draw: Any) -> str | None:
    if node.kind not in ("date", "dateTime", "instant") or not node.path:
        return None
    holder = _at(resource, node)
    value = holder[node.path[-1]]
    if not isinstance(value, str) or not _FULL_DATE.match(value):
        return None
    day = draw(st.sampled_from(["2026-02-30", "2026-04-31", "2023-02-29", "2026-02-29", "2024-06-31"]))
    holder[node.path[-1]] = day + value[10:]
    return "bad-date"


def extension_without_url(resource: Json, node: Node, draw: Any) -> str | None:
    target = _holder(resource, node)
    properties = DEFS.get(node.kind, {}).get("properties", {})
    if not isinstance(target, dict) or "extension" not in properties:
        return None
    extension = draw(st.sampled_from([{"valueString": "x"}, {"valueBoolean": True}, {"extension": []}]))
    target.setdefault("extension", []).append(extension)
    return "extension-without-url"


EXTENSIONS = [{"url": "http://x", "valueString": "x"}]
# A primitive's `_element` (R4 §2.6.2 "JSON representation of primitive elements"), whether the value stays, and
# its class: beside the value or alone (a choice's `_valueDateTime` too), with extensions; never an empty object;
# an id alone without a value breaks ele-1 (`hasValue() or children().count() > id.count()`), which both check
# only where the element is required: elsewhere both accept it, as the decision note says.
PRIMITIVE_ELEMENTS: list[tuple[str, bool, Json]] = [
    ("primitive-element", True, {"extension": EXTENSIONS}),
    ("primitive-element", False, {"id": "e1", "extension": EXTENSIONS}),
    ("empty-element", True, {}),
    ("element-id-only", False, {"id": "e1"}),
]


def _primitive(schema: Json) -> bool:
    item = schema.get("items", schema)
    return "$ref" in item and DEFS[_ref(item)].get("type") not in (None, "object", ["object", "null"])


def primitive_element(resource: Json, node: Node, draw: Any) -> str | None:
    """A primitive's `_element` sibling; where R4 has none (`Element.id`, `Extension.url`), an unknown element."""
    properties, target = DEFS.get(node.kind, {}).get("properties", {}), _holder(resource, node)
    if not isinstance(target, dict):
        return None
    names = sorted(n for n in target if n in properties and _primitive(properties[n]))
    if not names:
        return None
    name = draw(st.sampled_from(names))
    if f"_{name}" not in properties:
        target[f"_{name}"] = {"extension": EXTENSIONS}
        return "unknown-element"
    klass, keep, element = draw(st.sampled_from(PRIMITIVE_ELEMENTS))
    many = isinstance(target[name], list)
    target[f"_{name}"] = [copy.deepcopy(element) for _ in target[name]] if many else copy.deepcopy(element)
    if not keep and many:
        target[name] = [None for _ in target[name]]
    elif not keep:
        target.pop(name)
    if node.kind == "Extension" and name.startswith("value") and klass != "empty-element":
        return "extension-value-element"
    required = _required_as(DEFS[node.kind], name)
    if klass == "element-id-only" and required and not many:
        return "required-element-id-only"
    if klass == "primitive-element" and not keep and required.endswith("[x]"):
        return "required-choice-element"
    return klass


def _required_as(definition: Json, name: str) -> str:
    """The required element `name` gives (itself, or the choice `content[x]` it is a type of), else ""."""
    for rule in definition.get("allOf", []):
        if name in (alternative["required"][0] for alternative in rule["if"]["not"]["anyOf"]):
            return str(rule["then"]["required"][0])
    return name if name in definition.get("required", []) else ""


CONTAINED_RESOURCE: Json = {"resourceType": "Organization", "id": "c1", "name": "x"}
# A resource given in `contained`, with its class: one R4 allows; one without resourceType; and one for each of
# DomainResource's invariants on contained resources that the message path checks (dom-2, dom-4, dom-5).
CONTAINED: list[tuple[str, Json]] = [
    ("contained-resource", CONTAINED_RESOURCE),
    ("contained-without-resourceType", {"id": "c1"}),
    ("contained-invariants", {**CONTAINED_RESOURCE, "contained": [{"resourceType": "Organization", "id": "c2"}]}),
    ("contained-invariants", {**CONTAINED_RESOURCE, "meta": {"versionId": "1"}}),
    ("contained-invariants", {**CONTAINED_RESOURCE, "meta": {"lastUpdated": "2026-01-01T10:00:00Z"}}),
    ("contained-invariants", {**CONTAINED_RESOURCE, "meta": {"security": [{"code": "R"}]}}),
]


def contained(resource: Json, node: Node, draw: Any) -> str | None:
    """A resource in `contained`, of a resource that may contain (a DomainResource)."""
    if node.path or "contained" not in DEFS[node.kind].get("properties", {}):
        return None
    klass, inner = draw(st.sampled_from(CONTAINED))
    resource.setdefault("contained", []).append(copy.deepcopy(inner))
    return klass


MUTATIONS: dict[str, Mutation] = {
    "drop-required": drop_required,
    "duplicate-choice": duplicate_choice,
    "wrong-type": wrong_type,
    "wrong-format": wrong_format,
    "unknown-element": unknown_element,
    "bad-date": bad_date,
    "extension-without-url": extension_without_url,
    "primitive-element": primitive_element,
    "contained": contained,
}


_CANDIDATES: dict[tuple[int, str], list[Node]] = {}


def _mutated(data: st.DataObject, name: str) -> tuple[Json, str]:
    mutation = MUTATIONS[name]
    index = data.draw(st.integers(0, len(RESOURCES) - 1), label="resource")
    key = (index, name)
    if key not in _CANDIDATES:
        _CANDIDATES[key] = [n for n in nodes(RESOURCES[index], "Resource") if _applies(RESOURCES[index], n, name)]
    places = _CANDIDATES[key]
    if not places:
        return RESOURCES[index], "unchanged"
    node = data.draw(st.sampled_from(places), label="where")
    resource = copy.deepcopy(RESOURCES[index])
    klass = mutation(resource, node, data.draw)
    return resource, klass or "unchanged"


def _applies(resource: Json, node: Node, name: str) -> bool:
    trial = copy.deepcopy(resource)
    return MUTATIONS[name](trial, node, _first) is not None


def _first(strategy: Any) -> Any:
    """A stand-in for `data.draw` when only asking whether a mutation applies: the simplest value."""
    return strategy.example() if not hasattr(strategy, "elements") else strategy.elements[0]


def _agree_or_listed(resource: Json, klass: str) -> None:
    schema, fhir = verdicts(resource)
    if schema != fhir:
        assert klass in DISAGREEMENTS, f"{klass}: schema says {schema}, fhir.resources {fhir}"
        assert (schema, fhir) == DISAGREEMENTS[klass], f"{klass}: not the way the decision note lists"


# The verdict of both on a class no table lists: what R4 says (a mutation's own name breaks R4: both refuse).
BOTH_GIVE: dict[str, tuple[bool, bool]] = {
    "format": (False, False),
    "unknown-element": (False, False),
    "empty-element": (False, False),
    "contained-without-resourceType": (False, False),
    "primitive-element": (True, True),
    "contained-resource": (True, True),
    "element-id-only": (True, True),  # breaks ele-1; neither checks it (the decision note says so)
    "required-element-id-only": (False, False),  # ele-1 on a required element: both check that one
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_mutated_resources_get_the_same_verdict_from_both(name: str) -> None:
    @settings(DIFFERENTIAL, max_examples=EXAMPLES)
    @given(st.data())
    def run(data: st.DataObject) -> None:
        resource, klass = _mutated(data, name)
        _agree_or_listed(resource, klass)
        expected = BOTH_GIVE.get(klass, (False, False) if klass == name else None)
        if expected is not None and klass not in DISAGREEMENTS:
            assert verdicts(resource) == expected, klass

    run()


# -- each listed disagreement, shown -------------------------------------------------------------------


def _patient(**extra: Any) -> Json:
    return {"resourceType": "Patient", "id": "p1", **extra}


DISAGREEMENT_EXAMPLES: dict[str, Json] = {
    "fhir_comments": _patient(fhir_comments=["x"]),
    "uri-with-space": _patient(implicitRules="a b"),
    "uuid-format": _patient(extension=[{"url": "http://x", "valueUuid": "c757873d-ec9a-4326-a141-556f43239520"}]),
    "id-too-long": _patient(id="a" * 65),
    "date-as-number": _patient(deceasedDateTime=7),
    "markdown-empty": _patient(extension=[{"url": "http://x", "valueMarkdown": ""}]),
    "extension-value-element": _patient(extension=[{"url": "http://x", "_valueDateTime": {"extension": EXTENSIONS}}]),
    "contained-invariants": _patient(contained=[{**CONTAINED_RESOURCE, "meta": {"versionId": "1"}}]),
    "required-choice-element": {
        "resourceType": "Communication",
        "status": "completed",
        "payload": [{"_contentString": {"extension": EXTENSIONS}}],
    },
}


@pytest.mark.parametrize("klass", sorted(DISAGREEMENTS))
def test_each_listed_disagreement_is_real_and_goes_the_listed_way(klass: str) -> None:
    assert verdicts(DISAGREEMENT_EXAMPLES[klass]) == DISAGREEMENTS[klass]
    assert verdicts(_patient()) == (True, True)


def test_the_decision_notes_table_is_read_whole() -> None:
    rows = [line for line in NOTE.read_text(encoding="utf-8").splitlines() if line.startswith("| `")]
    assert len(DISAGREEMENTS) == len(rows) >= 8 and set(DISAGREEMENTS) == set(DISAGREEMENT_EXAMPLES)
