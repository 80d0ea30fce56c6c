"""FHIR XML → FHIR JSON, read along the message path's R4 schema (`conformance.r4_schema`), judging nothing.

FHIR R4's XML format (https://hl7.org/fhir/R4/xml.html) against its JSON format (json.html): a primitive's value
is its `value` attribute, and its id and extensions become the `_name` sibling; an element's id and an
extension's url are attributes; a resource sits inside a wrapper element (`<resource><Patient>`); the narrative
is an XHTML `div`, carried as its XML text. The schema says which names repeat (a JSON array) and each
primitive's JSON type: a boolean, an integer or a decimal (an int, or a `Decimal` holding the sender's digits, as
`json_contract.decode_json` reads JSON) when its text is one, else the text as sent.

Nothing is refused here, so that the XML form of a message is judged by the same checks as its JSON form
(`conformance.receipt`: the schema, MedCom's rules) and its sender gets the same acknowledgement: a date that is
no day is carried as sent, an element FHIR R4 does not define is carried under its own name (its value, or an
object of what it holds), two types of a choice both. What FHIR JSON cannot carry as sent (a second value where
one is allowed, text, attributes or elements of another namespace) is what `fhir_xml_fidelity` refuses after.
"""

from __future__ import annotations

import re
from decimal import Decimal
from functools import cache
from typing import Any

from lxml import etree

from integration.conformance.r4_validator import load_schema

FHIR_NS = "http://hl7.org/fhir"
XHTML_NS = "http://www.w3.org/1999/xhtml"
Json = dict[str, Any]
_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")
_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_RESOURCE_DEFINITIONS = ("Resource", "ContainedResource")
_EXTENSIONS = ("extension", "modifierExtension")


@cache
def _definitions() -> dict[str, Json]:
    definitions: dict[str, Json] = load_schema()["$defs"]
    return definitions


def fhir_json(resource: etree._Element) -> Json:
    """A FHIR resource in XML (its element: `<Bundle xmlns="http://hl7.org/fhir">`) as FHIR JSON."""
    return _resource(resource)


def _local(element: etree._Element) -> str:
    return str(etree.QName(element).localname)


def _fhir_children(element: etree._Element) -> list[etree._Element]:
    """Its child elements in the FHIR namespace (another namespace's, comments and text are not FHIR content:
    `fhir_xml_fidelity` names them)."""
    return [c for c in element if isinstance(c.tag, str) and etree.QName(c).namespace == FHIR_NS]


def _resource(element: etree._Element) -> Json:
    name = _local(element)
    document: Json = {"resourceType": name}
    _fill(element, document, _definitions().get(name, {}))
    return document


def _fill(element: etree._Element, into: Json, definition: Json) -> None:
    """`into` gets the JSON properties of `element`'s children, as `definition` (a complex type or resource of
    the schema; `{}` for one FHIR R4 does not define) names and types them."""
    properties: Json = definition.get("properties", {})
    for child in element:
        if not isinstance(child.tag, str):
            continue
        qname = etree.QName(child)
        if qname.namespace == XHTML_NS and qname.localname == "div":
            into["div"] = etree.tostring(child, encoding="unicode", with_tail=False)
        elif qname.namespace == FHIR_NS:
            _add(into, str(qname.localname), child, properties.get(str(qname.localname)))


def _add(into: Json, name: str, child: etree._Element, schema: Json | None) -> None:
    """One child element into its property (and a primitive's `_name`): appended where the schema says the
    element repeats, else set (a second one replaces the first: `fhir_xml_fidelity` refuses it)."""
    many = schema is not None and schema.get("type") == "array"
    value, extras = _value(child, schema.get("items", schema) if schema is not None else None)
    if not many:
        if name in into and schema is None:  # an unknown element given twice: carried as a list
            if not isinstance(into[name], list):
                into[name] = [into[name]]
            into[name].append(value)  # in place: a copy per repeat made 200,000 of them take a minute
            return
        into[name] = value
        if extras is not None:
            into[f"_{name}"] = extras
        return
    values, extras_list = into.setdefault(name, []), into.get(f"_{name}")
    if extras is not None and extras_list is None:  # the first with an id or extensions: the rest had none
        extras_list = into[f"_{name}"] = [None] * len(values)
    if extras_list is not None:
        extras_list.append(extras)
    values.append(value)


def _value(element: etree._Element, schema: Json | None) -> tuple[Any, Json | None]:
    """The JSON value of one element, and its `_element` (a primitive's id and extensions; None: none)."""
    target = str(schema["$ref"]).rsplit("/", 1)[1].removesuffix("-item") if schema and "$ref" in schema else None
    definition = _definitions().get(target, {}) if target else {}
    if target in _RESOURCE_DEFINITIONS:
        inner = _fhir_children(element)
        return (_resource(inner[0]) if inner else {}), None
    if target is not None and definition.get("type") != "object":
        return _primitive(element, definition)
    if target is None and "value" in element.attrib:  # not in FHIR R4: carried as a primitive of its text
        return _primitive(element, {"type": "string"})
    found: Json = {}
    for attribute in ("id", "url") if _local(element) in _EXTENSIONS else ("id",):
        if attribute in element.attrib:
            found[attribute] = element.attrib[attribute]
    _fill(element, found, definition)
    return found, None


def _primitive(element: etree._Element, definition: Json) -> tuple[Any, Json | None]:
    """A primitive: its value in its JSON type (None when there is no `value`), and its id and extensions. One
    with neither value, id nor extensions is carried as an empty `_element`, which the schema names (ele-1)."""
    sent = element.attrib.get("value")
    extras: Json = {"id": element.attrib["id"]} if "id" in element.attrib else {}
    _fill(element, extras, _definitions().get("Element-primitive", {}))
    json_type = definition.get("type")
    value = _typed(sent, json_type[0] if isinstance(json_type, list) else json_type) if sent is not None else None
    return value, (extras if extras or sent is None else None)


def _typed(text: str, json_type: Any) -> Any:
    """An XML value as FHIR JSON writes its type; the text as sent when it is no value of that type."""
    if json_type == "boolean" and text in ("true", "false"):
        return text == "true"
    if json_type in ("integer", "number") and _INTEGER.fullmatch(text):
        return int(text)
    if json_type == "number" and _DECIMAL.fullmatch(text):
        return Decimal(text)
    return text
