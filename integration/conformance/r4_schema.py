"""The strict JSON Schema (2020-12) of FHIR R4 that the message path validates with (`r4_validator`), generated
from the R4 core StructureDefinitions (`make fhir-core`: profiles-types and profiles-resources, 4.0.1).

    python -m integration.conformance.r4_schema --write     regenerate schemas/fhir-r4-messages.schema.json
    python -m integration.conformance.r4_schema --check     exit 1 when the committed file is not a fresh generation

Read from each snapshot, for the resource types we send and receive (`MESSAGE_RESOURCES`) and every datatype they
reach: element paths, min/max (required elements, arrays, `maxItems`), types, choice elements (`value[x]` →
`valueString`, … with at most one of them), backbone elements and `contentReference` as named definitions,
contained resources by `resourceType`, primitives as FHIR JSON writes them (R4 §2.6.2: booleans, integers and
decimals as JSON values, everything else a string with R4's regex over the whole value), each primitive's
`_element` sibling (id and extensions, never empty; in arrays, nulls pair the two lists; none for the bare
values `Element.id`, `Extension.url`, `Resource.id`), and no element the definitions do not name
(`additionalProperties: false`). The published fhir.schema.json misses required primitives, Extension.url,
choice exclusivity and impossible dates (docs/decisions/0030-message-path-validator.md); here a required
primitive may be given by its value or by its `_element` with extensions alone (such as data-absent-reason),
as FHIR allows (ele-1: an id alone is no content).

Three keywords are ours, all run by `r4_validator`: the formats `fhir-date`, `fhir-dateTime` and `fhir-instant`
(a calendar check: no 2026-02-30), `fhirJsonInteger` (an integer written without a fraction or exponent: JSON
Schema calls 3.0 an integer, FHIR JSON does not), and `fhirContained` (DomainResource's invariants dom-2, dom-4
and dom-5 on a contained resource). A JSON Schema validator that knows none of them ignores them.

Pure functions from the definitions' JSON to the schema's; the file I/O is `main`'s.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

Json = dict[str, Any]

# What we send (integration/messages) and receive (MedCom's acknowledgement, CareCommunication and
# HospitalNotification, with what their examples contain): the resources the message path validates.
MESSAGE_RESOURCES: tuple[str, ...] = (
    "Bundle",
    "CareTeam",
    "Communication",
    "Composition",
    "Encounter",
    "MessageHeader",
    "Observation",
    "OperationOutcome",
    "Organization",
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Provenance",
    "RiskAssessment",
    "ServiceRequest",
)
SCHEMA_FILE = "fhir-r4-messages.schema.json"
DEFINITION_FILES = ("profiles-types.min.json", "profiles-resources.min.json")

FHIR_TYPE = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
REGEX = "http://hl7.org/fhir/StructureDefinition/regex"
SYSTEM_TYPE = "http://hl7.org/fhirpath/System."
# FHIR JSON's types for primitives (R4 §2.6.2); every other primitive is a JSON string.
JSON_TYPES = {"boolean": "boolean", "integer": "integer", "positiveInt": "integer", "unsignedInt": "integer"}
JSON_TYPES["decimal"] = "number"
# R4 datatypes: integer is 32-bit signed; positiveInt and unsignedInt are its positive and non-negative parts.
INTEGER_RANGES = {"integer": (-(2**31), 2**31 - 1), "positiveInt": (1, 2**31 - 1), "unsignedInt": (0, 2**31 - 1)}
CALENDAR_FORMATS = {"date": "fhir-date", "dateTime": "fhir-dateTime", "instant": "fhir-instant"}
# DomainResource's invariants on a contained resource that look at the contained resource alone (dom-3, that it
# is referred to, needs the whole resource: `integration validate`'s profile layer checks it).
CONTAINED_INVARIANTS = ("dom-2", "dom-4", "dom-5")
# The regexes are XML Schema's (the definitions carry them for the XSDs): there `\s` is space, tab, LF and CR
# only, so a no-break space is not white space (Python's and Rust's Unicode `\s` would say it is).
XSD_SPACE = " \\t\\n\\r"
_SPACE_CHARS = {" ", "\\t", "\\n", "\\r"}


def _class_with_not_space(body: str) -> str:
    """A character class `[…\\S]` whose other members are white space, as a class without `\\S`: the
    complement of the white space it does not list (R4's string: `[ \\r\\n\\t\\S]`, any character)."""
    members = set(re.findall(r"\\.|.", body.replace("\\S", "")))
    if not members <= _SPACE_CHARS:
        raise ValueError(f"cannot translate the class [{body}]")
    missing = "".join(sorted(_SPACE_CHARS - members))
    return f"[^{missing}]" if missing else "[\\s\\S]"


def xsd_pattern(regex: str) -> str:
    """An R4 regex (XML Schema's dialect, matching the whole value) as an anchored ECMA-262 pattern with XML
    Schema's `\\s`. Raises ValueError for a class this translation does not know (none in R4)."""
    out, i = [], 0
    while i < len(regex):
        if regex[i] == "[":
            end = regex.index("]", i + 1)
            body = regex[i + 1 : end]
            if "\\S" in body:
                out.append(_class_with_not_space(body))
            else:
                out.append("[" + body.replace("\\s", XSD_SPACE) + "]")
            i = end + 1
        elif regex.startswith("\\s", i):
            out.append(f"[{XSD_SPACE}]")
            i += 2
        elif regex.startswith("\\S", i):
            out.append(f"[^{XSD_SPACE}]")
            i += 2
        else:
            step = 2 if regex[i] == "\\" else 1
            out.append(regex[i : i + step])
            i += step
    return "^(?:" + "".join(out) + ")$"


def _extension_value(holder: Mapping[str, Any], url: str) -> Any:
    for extension in holder.get("extension", []):
        if extension.get("url") == url:
            return extension.get("valueUrl", extension.get("valueString"))
    return None


def _type_code(element: Mapping[str, Any], type_: Mapping[str, Any]) -> str:
    """The FHIR type of one of an element's types. The snapshots write the ids and `Extension.url` as FHIRPath
    system types with the FHIR type in an extension; `Resource.id` says `string` there, but R4 defines it as an
    `id` (its JSON schema and every resource's own page do), and fhir.resources checks it as one."""
    code = str(type_["code"])
    if not code.startswith(SYSTEM_TYPE):
        return code
    if element.get("base", {}).get("path") == "Resource.id":
        return "id"
    return str(_extension_value(type_, FHIR_TYPE) or "string")


def _system_typed(element: Mapping[str, Any]) -> bool:
    """Whether an element's type is a FHIRPath system type: `Element.id`, `Extension.url` and `Resource.id`, which
    the snapshots type so because they are bare values, with no id and no extensions of their own (XML attributes
    in FHIR XML but for `Resource.id`), so no `_id` or `_url` in FHIR JSON."""
    types = element.get("type", [])
    return len(types) == 1 and str(types[0]["code"]).startswith(SYSTEM_TYPE)


def _given(name: str) -> Json:
    """The rule that an element is given: its name present, and a primitive's `_element` (outside a list) with
    extensions (ele-1: `hasValue() or (children().count() > id.count())`)."""
    if not name.startswith("_"):
        return {"required": [name]}
    return {"required": [name], "properties": {name: {"required": ["extension"]}}}


def _choice_name(base: str, code: str) -> str:
    return base + code[0].upper() + code[1:]


class _Generator:
    """Walks the snapshots from the message resources, adding one definition per type or backbone element."""

    def __init__(self, definitions: Mapping[str, Json]) -> None:
        self.sds = definitions
        self.primitives = {k for k, sd in definitions.items() if sd["kind"] == "primitive-type"}
        self.defs: Json = {}
        self.pending: list[str] = []

    def ref(self, name: str) -> Json:
        if name not in self.defs and name not in self.pending:
            self.pending.append(name)
        return {"$ref": f"#/$defs/{name}"}

    def run(self, resources: Iterable[str]) -> Json:
        for name in resources:
            self.ref(name)
        while self.pending:
            name = self.pending.pop(0)
            self.defs[name] = self.definition(name)
        return self.defs

    def definition(self, name: str) -> Json:
        if name == "Resource":
            return self.resource_dispatch()
        if name == "ContainedResource":
            return self.contained_resource()
        if name == "Element-primitive":
            return self.primitive_element(nullable=False)
        if name == "Element-primitive-item":
            return self.primitive_element(nullable=True)
        if name.endswith("-item"):
            return self.primitive(name.removesuffix("-item"), nullable=True)
        if name in self.primitives:
            return self.primitive(name, nullable=False)
        if "." in name:  # a backbone element: <Type>.<path>
            type_name = name.split(".", 1)[0]
            return self.complex(type_name, name)
        sd = self.sds[name]
        return self.complex(name, sd["snapshot"]["element"][0]["path"], resource=sd["kind"] == "resource")

    def resource_dispatch(self) -> Json:
        """Any resource we exchange, chosen by `resourceType` (Bundle.entry.resource, contained)."""
        names = sorted(n for n, sd in self.sds.items() if sd["kind"] == "resource" and n in self.resources)
        return {
            "type": "object",
            "required": ["resourceType"],
            "properties": {"resourceType": {"enum": names}},
            "allOf": [
                {
                    "if": {"required": ["resourceType"], "properties": {"resourceType": {"const": n}}},
                    "then": self.ref(n),
                }
                for n in names
            ],
        }

    resources: frozenset[str] = frozenset()

    def contained_resource(self) -> Json:
        """A resource in another's `contained`: any we exchange, held to DomainResource's invariants on contained
        resources (`fhirContained`, run by `r4_validator`: no nested resources, no meta.versionId,
        meta.lastUpdated or security label). Raises KeyError when R4 has not these invariants."""
        snapshot = self.sds["DomainResource"]["snapshot"]["element"]
        keys = {c["key"] for e in snapshot if e["path"] == "DomainResource" for c in e.get("constraint", [])}
        missing = set(CONTAINED_INVARIANTS) - keys
        if missing:
            raise KeyError(f"not invariants of DomainResource: {sorted(missing)}")
        return {**self.ref("Resource"), "fhirContained": list(CONTAINED_INVARIANTS)}

    def primitive(self, name: str, *, nullable: bool) -> Json:
        sd = self.sds[name]
        value = next(e for e in sd["snapshot"]["element"] if e["path"] == f"{name}.value")
        json_type = JSON_TYPES.get(name, "string")
        schema: Json = {"type": [json_type, "null"] if nullable else json_type}
        regex = _extension_value(value["type"][0], REGEX)
        if json_type == "string" and regex:
            schema["pattern"] = xsd_pattern(regex)
        if json_type == "string" and value.get("maxLength"):
            schema["maxLength"] = value["maxLength"]
        if name in INTEGER_RANGES:
            schema["minimum"], schema["maximum"] = INTEGER_RANGES[name]
            schema["fhirJsonInteger"] = True
        if name in CALENDAR_FORMATS:
            schema["format"] = CALENDAR_FORMATS[name]
        return schema

    def primitive_element(self, *, nullable: bool) -> Json:
        """A primitive's `_element`: its id and extensions (R4 §2.6.2), one of them at least (FHIR JSON has no
        empty objects; ele-1)."""
        return {
            "type": ["object", "null"] if nullable else "object",
            "properties": {"id": self.ref("string"), "extension": {"type": "array", "items": self.ref("Extension")}},
            "additionalProperties": False,
            "minProperties": 1,
        }

    def complex(self, type_name: str, path: str, *, resource: bool = False) -> Json:
        """The object of a complex type, a resource or one of their backbone elements (`path`)."""
        snapshot = self.sds[type_name]["snapshot"]["element"]
        by_path = {e["path"]: e for e in snapshot}
        properties: Json = {"resourceType": {"const": type_name}} if resource else {}
        required: list[str] = ["resourceType"] if resource else []
        rules: list[Json] = []
        dependent: Json = {}
        for element in snapshot:
            parent, _, name = element["path"].rpartition(".")
            if parent != path or element.get("max") == "0":
                continue
            properties.update(self.element_properties(type_name, element, name, by_path))
            rules += self.cardinality(element, name, required)
            if name.endswith("[x]"):
                dependent.update(self.exclusive(element, name))
        schema: Json = {"type": "object", "properties": properties, "additionalProperties": False}
        if required:
            schema["required"] = required
        if dependent:
            schema["dependentSchemas"] = dependent
        if rules:
            schema["allOf"] = rules
        return schema

    def codes(self, element: Json) -> list[str]:
        return [_type_code(element, t) for t in element.get("type", [])]

    def element_properties(self, type_name: str, element: Json, name: str, by_path: Json) -> list[tuple[str, Json]]:
        """The JSON properties of one element: its name (or each choice's), and `_name` for a primitive."""
        many = element["max"] != "1"
        if "contentReference" in element:
            target = element["contentReference"].lstrip("#")
            return [(name, self.wrap(self.ref(target), element, many))]
        codes = self.codes(element)
        if name.endswith("[x]"):
            base = name[:-3]
            return [p for code in codes for p in self.typed(_choice_name(base, code), code, element, many)]
        code = codes[0]
        if code in ("BackboneElement", "Element") and any(p.startswith(element["path"] + ".") for p in by_path):
            return [(name, self.wrap(self.ref(element["path"]), element, many))]
        if element.get("base", {}).get("path") == "DomainResource.contained":
            return [(name, self.wrap(self.ref("ContainedResource"), element, many))]
        if _system_typed(element):  # no id, no extensions: no `_element`
            return [(name, self.wrap(self.ref(code), element, many))]
        return self.typed(name, code, element, many)

    def typed(self, name: str, code: str, element: Json, many: bool) -> list[tuple[str, Json]]:
        if code in self.primitives:
            value = self.ref(f"{code}-item") if many else self.ref(code)
            extras = self.ref("Element-primitive-item") if many else self.ref("Element-primitive")
            return [(name, self.wrap(value, element, many)), (f"_{name}", self.wrap(extras, element, many))]
        return [(name, self.wrap(self.ref(code), element, many))]

    @staticmethod
    def wrap(item: Json, element: Json, many: bool) -> Json:
        if not many:
            return item
        array: Json = {"type": "array", "items": item}
        if element["min"] > 0:
            array["minItems"] = element["min"]
        if element["max"] != "*":
            array["maxItems"] = int(element["max"])
        return array

    def cardinality(self, element: Json, name: str, required: list[str]) -> list[Json]:
        """A required element: its name in `required`, or (a primitive, given by value or by an `_element` with
        extensions, as ele-1 has it: an id alone is no content; a choice, by any of its types) a rule whose error
        names it: `then: required [name]`."""
        if element["min"] < 1:
            return []
        codes = self.codes(element)
        if name.endswith("[x]"):
            present = []
            for code in codes:
                choice = _choice_name(name[:-3], code)
                present += [choice, f"_{choice}"] if code in self.primitives else [choice]
        elif codes and codes[0] in self.primitives and "contentReference" not in element and not _system_typed(element):
            present = [name, f"_{name}"]
        else:
            required.append(name)
            return []
        given = [_given(n) for n in present]
        return [{"if": {"not": {"anyOf": given}}, "then": {"required": [name]}}]

    def exclusive(self, element: Json, name: str) -> Json:
        """At most one of a choice's types (FHIR JSON): each name forbids the others (and their `_elements`)."""
        codes = self.codes(element)
        names = {_choice_name(name[:-3], c): c for c in codes}
        forbidden = {n: [n, f"_{n}"] if c in self.primitives else [n] for n, c in names.items()}
        return {n: {"properties": {f: False for other in names if other != n for f in forbidden[other]}} for n in names}


def definitions_from(bundles: Iterable[Json]) -> dict[str, Json]:
    """StructureDefinitions by id (the type they define) from the core's Bundles; logical models and
    constraints (SimpleQuantity, MoneyQuantity: their base type's shape) left out."""
    found = {}
    for bundle in bundles:
        for entry in bundle["entry"]:
            sd = entry["resource"]
            if sd.get("resourceType") == "StructureDefinition" and sd.get("derivation") != "constraint":
                if sd["kind"] != "logical":
                    found[sd["id"]] = sd
    return found


def generate(bundles: Iterable[Json], resources: Iterable[str] = MESSAGE_RESOURCES) -> Json:
    """The schema for `resources` from the R4 core's definition Bundles (profiles-types, profiles-resources).
    The root accepts any of `resources` by its `resourceType`. Raises KeyError for a type the definitions lack."""
    definitions = definitions_from(bundles)
    generator = _Generator(definitions)
    generator.resources = frozenset(resources)
    missing = generator.resources - definitions.keys()
    if missing:
        raise KeyError(f"not in the definitions: {sorted(missing)}")
    defs = generator.run(["Resource"])
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:hjerterehab:fhir-r4-messages",
        "$comment": "Generated by `python -m integration.conformance.r4_schema --write` from hl7.fhir.r4.core "
        "4.0.1 (make fhir-core); do not edit.",
        "$ref": "#/$defs/Resource",
        "$defs": dict(sorted(defs.items())),
    }


def dumps(schema: Json) -> str:
    """The schema as the committed file holds it: sorted keys, compact, one final newline."""
    return json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module): reads the core definitions, writes or checks the schema file."""
    from integration.config import PROJECT_ROOT

    parser = argparse.ArgumentParser(prog="python -m integration.conformance.r4_schema")
    parser.add_argument("--core", type=Path, default=PROJECT_ROOT / ".cache" / "hl7.fhir.r4.core")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "schemas" / SCHEMA_FILE)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true")
    action.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    bundles = [json.loads((args.core / name).read_text(encoding="utf-8")) for name in DEFINITION_FILES]
    text = dumps(generate(bundles))
    if args.write:
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {args.out} ({len(text)} bytes)")
        return 0
    same = args.out.is_file() and args.out.read_text(encoding="utf-8") == text
    print(f"{args.out} {'is' if same else 'is NOT'} a fresh generation")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
