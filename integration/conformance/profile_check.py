"""A message checked against the snapshots of the StructureDefinitions that apply to it.

Each resource in the Bundle (and the Bundle) is walked along the snapshot of its R4 core definition and
of every profile it claims in `meta.profile`; datatypes the snapshot does not unroll are walked along
their own definition (the profile named on the element's type, else the core one). At every element:

- each `constraint` (FHIRPath, evaluated with fhirpathpy; `resolve()`, `hasValue()`, `htmlChecks()`,
  `conformsTo()` and `memberOf()` supplied here), errors as findings, warnings counted;
- cardinality (`min`/`max`), per slice too; closed slicing;
- `fixed[x]` (equal) and `pattern[x]` (contained) values;
- required bindings whose value set can be enumerated from the definitions we have;
- a reference into the Bundle points at one of the element's target profiles.

Slices are told apart by their discriminators where the slice names the value (extension url, fixed or
pattern values in the slice); `Bundle.entry.resource` is checked as its own resource. What is not done:
`targetProfile` of references that leave the Bundle, type slicing beyond choice types, value sets with
filters or external code systems (counted as not checked), and the primitive types' regexes
(fhir.resources checks those).
`conformsTo(url)` holds when the resource claims `url` or a profile derived from it; the claimed
profiles are themselves checked here, which is what makes that claim worth something.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from fhirpathpy import compile as compile_fhirpath
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models
from lxml import etree

from integration.conformance.definitions import STANDARD_OF_EVENT, STANDARD_OF_PROFILE, Definitions, unversioned

Node = Any  # a JSON value of the message: dict, list item, or primitive
_current: ContextVar[_Check] = ContextVar("profile_check")

XHTML = "{http://www.w3.org/1999/xhtml}"
_UNSAFE_TAGS = {"script", "object", "applet", "iframe", "form", "input", "embed", "base", "link", "meta", "style"}
# A URL that runs script when followed: active content as much as a <script>. URL parsers ignore the case, tabs
# and line breaks anywhere, and leading control characters and spaces (WHATWG URL), so `java&#9;script:` is one.
# A data: URL of a document type runs its own script when opened (text/html, XHTML, SVG); a data: image does not.
_SCRIPT_URL = re.compile(
    r"[\x00-\x20]*(?:(?:javascript|vbscript):|data:[\x00-\x20]*(?:text/html|application/xhtml\+xml|image/svg\+xml))",
    re.IGNORECASE,
)
# A style attribute that runs script or loads a script URL (old IE's expression(), url(javascript:…)).
_SCRIPT_STYLE = re.compile(r"expression[\x00-\x20]*\(|(?:javascript|vbscript):", re.IGNORECASE)
_URL_IGNORED = str.maketrans("", "", "\t\n\r")


@dataclass
class ProfileReport:
    findings: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)  # constraints, warnings, unevaluable, ...
    unknown_profiles: set[str] = field(default_factory=set)
    unevaluable: set[str] = field(default_factory=set)  # constraint keys the engine could not evaluate
    unassignable: set[str] = field(default_factory=set)  # slices we could not tell items apart for


def _typed(data: Node, type_path: str) -> Any:
    """A node fhirpathpy knows the FHIR type of (for `is`, `ofType`, choice elements)."""
    return ResourceNode.create_node(data, type_path)  # type: ignore[no-untyped-call]


# -- the functions fhirpathpy lacks ------------------------------------------------------------------
def _resolve(inputs: list[Node]) -> list[Any]:
    check = _current.get()
    found = []
    for item in inputs:
        ref = item.get("reference") if isinstance(item, dict) else item
        resource = check.by_reference.get(str(ref)) if ref else None
        if resource is not None:
            found.append(_typed(resource, resource["resourceType"]))
    return found


def _has_value(inputs: list[Node]) -> list[bool]:
    return [len(inputs) == 1 and inputs[0] is not None and not isinstance(inputs[0], dict | list)]


def html_checks(div: str) -> bool:
    """FHIR's narrative rules: well-formed XHTML in a div, no active content, no event attributes, some text."""
    try:
        root = etree.fromstring(div.encode(), etree.XMLParser(resolve_entities=False, no_network=True))
    except (etree.XMLSyntaxError, ValueError):
        return False
    if root.tag != XHTML + "div":
        return False
    for element in root.iter():
        if not isinstance(element.tag, str) or not element.tag.startswith(XHTML):
            return False
        if element.tag[len(XHTML) :].lower() in _UNSAFE_TAGS:  # a receiver showing it as HTML ignores the case
            return False
        if any(name.lower().startswith("on") for name in element.attrib):
            return False
        if any(_SCRIPT_URL.match(value.translate(_URL_IGNORED)) for value in element.attrib.values()):
            return False
        if _SCRIPT_STYLE.search(element.attrib.get("style", "").translate(_URL_IGNORED)):
            return False
    return bool("".join(root.itertext()).strip())


def _html_checks(inputs: list[Node]) -> list[bool]:
    return [all(isinstance(i, str) and html_checks(i) for i in inputs)] if inputs else []


def _conforms_to(inputs: list[Node], url: str) -> list[bool]:
    check = _current.get()
    return [check.conforms_to(i, url) for i in inputs if isinstance(i, dict)]


def _member_of(inputs: list[Node], value_set: str) -> list[bool]:
    codes = _current.get().definitions.codes(value_set)
    if codes is None:
        return []
    return [bool(_codings(i) & codes) if not isinstance(i, str) else any(c == i for _, c in codes) for i in inputs]


FUNCTIONS = {
    "resolve": {"fn": _resolve, "arity": {0: []}},
    "hasValue": {"fn": _has_value, "arity": {0: []}},
    "htmlChecks": {"fn": _html_checks, "arity": {0: []}},
    "conformsTo": {"fn": _conforms_to, "arity": {1: ["String"]}},
    "memberOf": {"fn": _member_of, "arity": {1: ["String"]}},
}


@cache
def compiled_fhirpath(expression: str) -> Callable[..., list[Any]]:
    """An R4 FHIRPath expression, parsed once, with the functions above; call it with (node, variables)."""
    return compile_fhirpath(expression, models["r4"], {"userInvocationTable": FUNCTIONS, "traceFn": _quiet})


def _quiet(*_args: Any) -> None:
    """trace() is for debugging an expression; here it would print the message's references."""


def _codings(value: Node) -> set[tuple[str, str]]:
    """The (system, code) pairs of a Coding or CodeableConcept; a part that is not a string counts as empty."""
    if isinstance(value, dict) and "coding" in value:
        return {_pair(c) for c in _items(value["coding"]) if isinstance(c, dict)}
    if isinstance(value, dict):
        return {_pair(value)}
    return set()


def _pair(coding: Mapping[str, Any]) -> tuple[str, str]:
    system, code = coding.get("system", ""), coding.get("code", "")
    return (system if isinstance(system, str) else "", code if isinstance(code, str) else "")


def _items(value: Node) -> list[Node]:
    """A JSON array's items; nothing for any other shape (the messaging rules report the shape)."""
    return value if isinstance(value, list) else []


def _claimed(resource: Mapping[str, Any]) -> list[str]:
    """The profiles a resource claims in meta.profile (those written as strings)."""
    meta = resource.get("meta")
    return [p for p in _items(meta.get("profile") if isinstance(meta, dict) else None) if isinstance(p, str)]


# -- reading the instance along element ids ----------------------------------------------------------
def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _children(node: Node, name: str) -> list[tuple[Node, str | None]]:
    """The values of child `name` of a JSON object, with their type for a choice element (`value[x]`)."""
    if not isinstance(node, dict):
        return []
    if name.endswith("[x]"):
        base = name[:-3]
        found: list[tuple[Node, str | None]] = []
        for key, value in node.items():
            if key.startswith(base) and key[len(base) : len(base) + 1].isupper():
                type_name = _choice_type(key[len(base) :])
                found += [(v, type_name) for v in (value if isinstance(value, list) else [value])]
        return found
    value = node.get(name)
    if value is None:
        return []
    return [(v, None) for v in (value if isinstance(value, list) else [value])]


def _at(node: Node, path: str) -> list[Node]:
    """The values at a dotted path below a JSON object."""
    found = [node]
    for name in path.split("."):
        found = [value for parent in found for value, _ in _children(parent, name)]
    return found


PRIMITIVES = frozenset(
    "boolean integer string decimal uri url canonical base64Binary instant date dateTime time code oid id "
    "markdown unsignedInt positiveInt uuid xhtml".split()
)


def _choice_type(suffix: str) -> str:
    """The type a choice element's key names: `valueDateTime` → dateTime, `valueCoding` → Coding."""
    lowered = _lower_first(suffix)
    return lowered if lowered in PRIMITIVES else suffix


def _is_complex(type_name: str) -> bool:
    return type_name[:1].isupper()


def _contains(pattern: Node, value: Node) -> bool:
    """FHIR pattern matching: every part of the pattern is in the value (lists: each item matches some item)."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(k in value and _contains(v, value[k]) for k, v in pattern.items())
    if isinstance(pattern, list):
        return isinstance(value, list) and all(any(_contains(p, v) for v in value) for p in pattern)
    return bool(pattern == value)


def _fhir_type(element: Mapping[str, Any], item: Node, type_name: str | None) -> str:
    """The type fhirpathpy should give the node: a resource's type, a datatype's name, else the element path
    (backbone elements)."""
    if isinstance(item, dict) and item.get("resourceType"):
        return str(item["resourceType"])
    if type_name:
        return type_name
    types = element.get("type") or []
    if len(types) == 1 and _is_complex(types[0].get("code", "")) and types[0]["code"] != "BackboneElement":
        return str(types[0]["code"])
    return str(element["path"])


def _fixed_or_pattern(element: Mapping[str, Any]) -> tuple[str, Node] | None:
    for key, value in element.items():
        if key.startswith("fixed"):
            return "fixed", value
        if key.startswith("pattern"):
            return "pattern", value
    return None


# -- the snapshot as a tree --------------------------------------------------------------------------
@dataclass(frozen=True)
class _Tree:
    sd: Mapping[str, Any]
    elements: Mapping[str, Mapping[str, Any]]
    children: Mapping[str, tuple[Mapping[str, Any], ...]]
    patterned: frozenset[str]  # ids of the elements with a fixed or pattern value in their subtree

    @property
    def root(self) -> Mapping[str, Any]:
        root: Mapping[str, Any] = self.sd["snapshot"]["element"][0]
        return root

    @property
    def name(self) -> str:
        return str(self.sd.get("name") or self.sd.get("id"))


_trees: dict[int, _Tree] = {}


def _tree(sd: Mapping[str, Any]) -> _Tree:
    cached = _trees.get(id(sd))
    if cached is not None and cached.sd is sd:
        return cached
    elements = {e["id"]: e for e in sd["snapshot"]["element"]}
    children: dict[str, list[Mapping[str, Any]]] = {}
    for element in sd["snapshot"]["element"][1:]:
        parent = element["id"].rsplit(".", 1)[0]
        children.setdefault(parent, []).append(element)
    patterned = {
        ".".join(parts[:end])
        for element_id, element in elements.items()
        if _fixed_or_pattern(element) is not None
        for parts in [element_id.split(".")]
        for end in range(1, len(parts) + 1)
    }
    tree = _Tree(sd, elements, {k: tuple(v) for k, v in children.items()}, frozenset(patterned))
    _trees[id(sd)] = tree
    return tree


def _last(element: Mapping[str, Any]) -> str:
    return str(element["id"].rsplit(".", 1)[-1].split(":", 1)[0])


class _Check:
    def __init__(self, definitions: Definitions, bundle: Mapping[str, Any]) -> None:
        self.definitions = definitions
        self.report = ProfileReport()
        self.by_reference: dict[str, Mapping[str, Any]] = {}
        for entry in _items(bundle.get("entry")):
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(resource, dict) and resource.get("resourceType") and resource.get("id"):
                self.by_reference[f"{resource['resourceType']}/{resource['id']}"] = resource
                if isinstance(entry.get("fullUrl"), str):
                    self.by_reference[entry["fullUrl"]] = resource
        self._done: set[tuple[str, str]] = set()
        self._resource: Mapping[str, Any] = bundle

    def conforms_to(self, resource: Mapping[str, Any], url: str) -> bool:
        core = "http://hl7.org/fhir/StructureDefinition/"
        if unversioned(url) in {core + str(resource.get("resourceType")), core + "Resource", core + "DomainResource"}:
            return True
        return any(self.definitions.derives_from(p, url) for p in _claimed(resource))

    # -- per resource ------------------------------------------------------------------------------
    def resource(self, resource: Mapping[str, Any], where: str) -> None:
        self._resource = resource
        rtype = str(resource.get("resourceType"))
        profiles = [self.definitions.core(rtype)]
        for url in _claimed(resource):
            sd = self.definitions.structure(url)
            if sd is None:
                self.report.unknown_profiles.add(unversioned(url))
            profiles.append(sd)
        for sd in profiles:
            if sd is not None and sd.get("snapshot"):
                tree = _tree(sd)
                self._item(tree, tree.root, resource, where, None)

    # -- along the tree ----------------------------------------------------------------------------
    def _datatype(
        self, element: Mapping[str, Any], value: Mapping[str, Any], where: str, type_name: str | None = None
    ) -> None:
        types = element.get("type") or []
        if type_name is None and len(types) == 1:
            type_name = types[0].get("code")
        if not type_name or not _is_complex(type_name) or type_name in ("Resource", "Element", "BackboneElement"):
            return
        declared: Mapping[str, Any] = next((t for t in types if t.get("code") == type_name), {})
        for url in declared.get("profile") or [None]:
            sd = self.definitions.structure(url) if url else self.definitions.core(type_name)
            if sd is None:
                self.report.unknown_profiles.add(str(url))
                continue
            if sd.get("snapshot"):
                tree = _tree(sd)
                self._item(tree, tree.root, value, where, None)

    def _kids(self, tree: _Tree, kids: tuple[Mapping[str, Any], ...], value: Node, where: str) -> None:
        groups: dict[str, list[Mapping[str, Any]]] = {}
        for kid in kids:
            groups.setdefault(_last(kid), []).append(kid)
        for name, group in groups.items():
            base, slices = group[0], [k for k in group[1:] if k.get("sliceName")]
            if base["path"] == "Bundle.entry.resource":
                continue  # each entry's resource is checked as a resource of its own
            values = _children(value, name)
            self._cardinality(tree, base, len(values), f"{where}.{name}")
            for index, (item, type_name) in enumerate(values):
                at = f"{where}.{name}[{index}]" if base.get("max") != "1" else f"{where}.{name}"
                self._item(tree, base, item, at, type_name)
            if slices:
                self._slices(tree, base, slices, values, where, name)

    def _item(self, tree: _Tree, element: Mapping[str, Any], item: Node, at: str, type_name: str | None) -> None:
        self._constraints(tree, element, item, at, type_name)
        self._value(tree, element, item, at)
        self._target(tree, element, item, at)
        kids = tree.children.get(element["id"])
        if kids:
            self._kids(tree, kids, item, at)
        elif isinstance(item, dict):
            self._datatype(element, item, at, type_name)

    def _slices(
        self,
        tree: _Tree,
        base: Mapping[str, Any],
        slices: list[Mapping[str, Any]],
        values: list[tuple[Node, str | None]],
        where: str,
        name: str,
    ) -> None:
        assigned: dict[str, list[int]] = {s["id"]: [] for s in slices}
        unmatched = []
        for index, (item, type_name) in enumerate(values):
            matches = [s for s in slices if self._in_slice(tree, s, item, type_name, base)]
            if not matches:
                unmatched.append(index)
            for s in matches[:1]:
                assigned[s["id"]].append(index)
        for s in slices:
            indexes = assigned[s["id"]]
            self._cardinality(tree, s, len(indexes), f"{where}.{name}:{s['sliceName']}")
            for index in indexes:
                item, type_name = values[index]
                self._item(tree, s, item, f"{where}.{name}[{index}]", type_name)
        if unmatched and (base.get("slicing") or {}).get("rules") == "closed":
            self.report.findings.append(
                f"{where}.{name}: {len(unmatched)} item(s) fit no slice of the closed slicing ({tree.name})"
            )

    def _in_slice(
        self, tree: _Tree, slice_: Mapping[str, Any], item: Node, type_name: str | None, base: Mapping[str, Any]
    ) -> bool:
        """Whether `item` belongs to the slice, by the slicing's discriminators."""
        if slice_["path"].endswith("[x]"):
            return type_name is not None and str(slice_["sliceName"]).lower().endswith(type_name.lower())
        profiles = [p for t in slice_.get("type") or [] for p in t.get("profile") or []]
        for discriminator in (base.get("slicing") or {}).get("discriminator") or []:
            path = str(discriminator.get("path", "")).removeprefix("$this").removeprefix(".")
            kind = discriminator.get("type")
            if kind in ("value", "pattern") and path == "url" and profiles:
                url = item.get("url") if isinstance(item, dict) else None
                if not (isinstance(url, str) and url in {unversioned(p) for p in profiles}):
                    return False
            elif kind in ("value", "pattern") and re.fullmatch(r"[a-z][A-Za-z]*(\.[a-z][A-Za-z]*)*", path):
                expected = self._expected(tree, slice_, path, profiles)
                if expected is None:  # the value sits in a sliced extension: match the slice's patterns
                    if slice_["id"] not in tree.patterned:
                        self.report.counts["slices without a discriminating value"] += 1
                        self.report.unassignable.add(str(slice_["id"]))
                        return False
                    if not self._matches(tree, slice_["id"], item):
                        return False
                elif not any(_contains(expected, v) for v in _at(item, path)):
                    return False
            elif kind == "type" and path:
                allowed = {t["code"] for t in tree.elements.get(f"{slice_['id']}.{path}[x]", {}).get("type", [])}
                if not any(isinstance(item, dict) and f"{path}{c[:1].upper()}{c[1:]}" in item for c in allowed):
                    return False
            elif not self._matches(tree, slice_["id"], item):  # e.g. extension('…').value.code
                return False
        return True

    def _expected(self, tree: _Tree, slice_: Mapping[str, Any], path: str, profiles: list[str]) -> Node | None:
        """The fixed or pattern value a slice sets at `path`, looking into the profiles of the types on the way."""
        segments = path.split(".")
        found = self._expected_below(tree, slice_["id"], segments)
        for typed in self._typed_trees(profiles):
            found = found if found is not None else self._expected_below(typed, typed.root["id"], segments)
        return found

    def _expected_below(self, tree: _Tree, element_id: str, segments: list[str]) -> Node | None:
        if not segments:
            found = _fixed_or_pattern(tree.elements.get(element_id, {}))
            return found[1] if found else None
        child = f"{element_id}.{segments[0]}"
        element = tree.elements.get(child)
        if element is None:
            return None
        found = self._expected_below(tree, child, segments[1:])
        profiles = [p for t in element.get("type") or [] for p in t.get("profile") or []]
        for typed in self._typed_trees(profiles):
            found = found if found is not None else self._expected_below(typed, typed.root["id"], segments[1:])
        return found

    def _typed_trees(self, profiles: list[str]) -> list[_Tree]:
        return [_tree(sd) for sd in map(self.definitions.structure, profiles) if sd and sd.get("snapshot")]

    def _matches(self, tree: _Tree, element_id: str, item: Node) -> bool:
        """Whether `item` has every fixed and pattern value the element's subtree asks for."""
        element = tree.elements[element_id]
        wanted = _fixed_or_pattern(element)
        if wanted and not (item == wanted[1] if wanted[0] == "fixed" else _contains(wanted[1], item)):
            return False
        for kid in tree.children.get(element_id, ()):
            if kid["id"] not in tree.patterned:
                continue
            values = _children(item, _last(kid))
            if kid.get("sliceName"):
                sliced = tree.elements.get(kid["id"].rsplit(":", 1)[0], {})
                values = [(v, t) for v, t in values if self._in_slice(tree, kid, v, t, sliced)]
            if not values or not any(self._matches(tree, kid["id"], v) for v, _ in values):
                return False
        return True

    # -- the checks --------------------------------------------------------------------------------
    def _cardinality(self, tree: _Tree, element: Mapping[str, Any], count: int, where: str) -> None:
        low, high = int(element.get("min") or 0), element.get("max", "*")
        self.report.counts["cardinalities"] += 1
        if count < low or (high != "*" and count > int(high)):
            self.report.findings.append(f"{where}: {count} found, {tree.name} allows {low}..{high}")

    def _value(self, tree: _Tree, element: Mapping[str, Any], item: Node, where: str) -> None:
        wanted = _fixed_or_pattern(element)
        if wanted:
            self.report.counts["fixed and pattern values"] += 1
            kind, expected = wanted
            if not (item == expected if kind == "fixed" else _contains(expected, item)):
                self.report.findings.append(f"{where}: must be {kind} {expected!r} ({tree.name})")
        binding = element.get("binding") or {}
        if binding.get("strength") == "required" and binding.get("valueSet"):
            self._binding(tree, binding["valueSet"], item, where)

    def _target(self, tree: _Tree, element: Mapping[str, Any], item: Node, where: str) -> None:
        """A reference inside the Bundle must point at a resource of an allowed target profile: its type's, or one
        it claims (or derives from). References that leave the Bundle are the messaging rules' business."""
        targets = [
            p for t in element.get("type") or [] if t.get("code") == "Reference" for p in t.get("targetProfile", [])
        ]
        reference = item.get("reference") if isinstance(item, dict) else None
        resource = self.by_reference.get(str(reference)) if reference else None
        if not targets or resource is None:
            return
        self.report.counts["reference targets"] += 1
        if not any(self.conforms_to(resource, url) for url in targets):
            names = ", ".join(unversioned(u).rsplit("/", 1)[-1] for u in targets)
            self.report.findings.append(f"{where}: {reference} is none of {names} ({tree.name})")

    def _binding(self, tree: _Tree, value_set: str, item: Node, where: str) -> None:
        codes = self.definitions.codes(value_set)
        if codes is None:
            self.report.counts["bindings not checkable"] += 1
            return
        self.report.counts["required bindings"] += 1
        if isinstance(item, str):
            ok = item in {code for _, code in codes}
        else:
            found = _codings(item)
            ok = bool(found & codes) or (not found and isinstance(item, dict) and "coding" not in item)
        if not ok:
            self.report.findings.append(
                f"{where}: not in the required value set {unversioned(value_set)} ({tree.name})"
            )

    def _constraints(
        self, tree: _Tree, element: Mapping[str, Any], item: Node, where: str, type_name: str | None
    ) -> None:
        for constraint in element.get("constraint") or []:
            key = str(constraint.get("key"))
            if (where, key) in self._done or not constraint.get("expression"):
                continue
            self._done.add((where, key))
            self._evaluate(tree, element, constraint, item, where, type_name)

    def _evaluate(
        self,
        tree: _Tree,
        element: Mapping[str, Any],
        constraint: Mapping[str, Any],
        item: Node,
        where: str,
        type_name: str | None,
    ) -> None:
        key = str(constraint["key"])
        try:  # a resource as itself, so that expressions may start with its type name
            node = (
                item
                if isinstance(item, dict) and "resourceType" in item
                else _typed(item, _fhir_type(element, item, type_name))
            )
            context = {"resource": self._resource, "rootResource": self._resource}
            result = compiled_fhirpath(constraint["expression"])(node, context)
        except Exception:  # noqa: BLE001 - an expression the engine cannot evaluate is counted, not guessed
            self.report.unevaluable.add(key)
            self.report.counts["unevaluable"] += 1
            return
        self.report.counts["constraints"] += 1
        if result in ([], [True]):
            return
        if constraint.get("severity") == "warning":
            self.report.counts["warnings"] += 1
            return
        human = str(constraint.get("human", "")).strip()
        self.report.findings.append(f"{where}: {key} {human} ({tree.name})")


def standard_of(bundle: Mapping[str, Any]) -> str:
    """Which pinned set of definitions a message is checked against: by its event, else by its claimed profile;
    a Bundle of type `collection` (no MedCom message or document) against FHIR R4 core alone."""
    if bundle.get("type") == "collection":
        return "r4-core"
    entries = _items(bundle.get("entry"))
    header = entries[0].get("resource") if entries and isinstance(entries[0], dict) else None
    coding = header.get("eventCoding") if isinstance(header, dict) else None
    event = coding.get("code") if isinstance(coding, dict) else None
    if isinstance(event, str) and event in STANDARD_OF_EVENT:
        return STANDARD_OF_EVENT[event]
    claimed = " ".join(_claimed(bundle))
    return next(
        (standard for marker, standard in STANDARD_OF_PROFILE.items() if marker in claimed), "care-communication"
    )


def check_profiles(bundle: Mapping[str, Any], definitions: Definitions) -> ProfileReport:
    """Every profile finding for a Bundle and the resources in it."""
    check = _Check(definitions, bundle)
    token = _current.set(check)
    try:
        check.resource(bundle, "Bundle")
        for index, entry in enumerate(_items(bundle.get("entry"))):
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(resource, dict):
                check.resource(resource, f"Bundle.entry[{index}].resource({resource.get('resourceType')})")
    finally:
        _current.reset(token)
    return check.report
