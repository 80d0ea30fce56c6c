"""Proof that FHIR XML read into FHIR JSON lost and changed nothing (the FHIR XML reader's check).

The reader (`fhir_xml`) keeps only the last of a repeated element where FHIR allows one and passes over
text inside an element, attributes FHIR XML does not define and elements of another namespace: FHIR JSON has no
place for them (fhir.resources' reader, before it, also rewrote some lexical forms: `10:00:00.000` →
`10:00:00`, `+00:00` → `Z`). So the document it made is walked beside the parsed XML, element by element:
every element, attribute and text of the input must be carried by the result, and every value of the result
must come from the input. Rules from FHIR R4's XML format
(https://hl7.org/fhir/R4/xml.html): elements in the FHIR namespace; a primitive's value in its `value`
attribute; `id` an attribute on every element but a resource; `url` an attribute on an extension;
the narrative a single XHTML `div`, compared as canonical XML; no text content elsewhere.

Where they differ, NotCarried names the element FHIR style without indices (`Patient.identifier.value`)
and never its value. A date or time a reader re-wrote is put back as sent (same instant, its lexical
form kept); a decimal is carried as a JSON number of the same value.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from lxml import etree

from integration.formats.json_contract import RefusedContent

FHIR_NS = "http://hl7.org/fhir"
XHTML_NS = "http://www.w3.org/1999/xhtml"
_NAME = re.compile(r"(?![A-Za-z0-9_]*\d{6})[A-Za-z_][A-Za-z0-9_.-]{0,63}")  # no six digits: a CPR is ten
# FHIR R4 date, dateTime, instant and time: the forms the reader may re-write (fractions of seconds).
_TEMPORAL = re.compile(
    r"-?[0-9]{4}(-[0-9]{2}(-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?)?)?"
    r"|[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
)
_EXTENSIONS = ("extension", "modifierExtension")


class NotCarried(RefusedContent):
    """The XML holds something the FHIR JSON made of it does not carry, or carries differently; `document`
    is that FHIR JSON (well-formed, so a MedCom sender can still be answered with a fatal-error ack)."""


class _Differs(Exception):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(field, problem)
        self.field, self.problem = field, problem


def _shown(name: str) -> str:
    return name if _NAME.fullmatch(name) else "?"


def _local(element: etree._Element) -> str:
    return str(etree.QName(element).localname)


def carry_exactly(root: etree._Element, document: dict[str, Any]) -> dict[str, Any]:
    """`document` (FHIR JSON read from `root`), with any date or time re-written by the reader put back as
    sent; NotCarried naming the element when the XML holds anything the document does not carry as sent."""
    try:
        _Walk().resource(root, document, _local(root))
    except _Differs as differs:
        raise NotCarried(differs.field, differs.problem, document) from None
    return document


class _Walk:
    """One comparison; each method checks one XML element against its JSON counterpart."""

    def resource(self, element: etree._Element, obj: dict[str, Any], path: str) -> None:
        if obj.get("resourceType") != _local(element):
            raise _Differs(path, "the resource type was not carried")
        self._no_attributes(element, path, allowed=())
        self._children(element, obj, path, resource=True)

    def _no_attributes(self, element: etree._Element, path: str, allowed: tuple[str, ...]) -> None:
        for name in element.attrib:
            if name not in allowed:
                shown = _shown(etree.QName(name).localname)
                raise _Differs(path, f"attribute {shown} is not one FHIR XML defines here")

    def _no_text(self, element: etree._Element, path: str) -> None:
        if (element.text or "").strip():
            raise _Differs(path, "text inside the element: FHIR XML puts a value in its value attribute")
        for child in element:
            if (child.tail or "").strip():
                raise _Differs(path, "text between elements: FHIR XML carries no text there")

    def _children(self, element: etree._Element, obj: dict[str, Any], path: str, *, resource: bool) -> None:
        self._no_text(element, path)
        consumed = {"resourceType"} if resource else set()
        if not resource:
            allowed = ("id", "url") if _local(element) in _EXTENSIONS else ("id",)
            self._no_attributes(element, path, allowed)
            for name in allowed:
                if name in element.attrib:
                    self._same_string(element.attrib[name], obj, name, f"{path}.{name}")
                    consumed.add(name)
        groups: dict[str, list[etree._Element]] = {}
        for child in element:
            groups.setdefault(self._child_name(child, path), []).append(child)
        for name, children in groups.items():
            where = f"{path}.{name}"
            if name in consumed:
                raise _Differs(where, "given both as an attribute and as an element")
            consumed.update((name, f"_{name}"))
            if name == "div":
                self._narrative(children, obj.get("div"), where)
            else:
                self._field(children, obj, name, where)
        extra = next((key for key in obj if key not in consumed and obj[key] is not None), None)
        if extra is not None:
            raise _Differs(f"{path}.{_shown(extra.lstrip('_'))}", "the FHIR reader made a value the XML does not hold")

    def _child_name(self, child: etree._Element, path: str) -> str:
        qname = etree.QName(child)
        if qname.namespace == XHTML_NS and qname.localname == "div" and path.endswith(".text"):
            return "div"
        if qname.namespace != FHIR_NS:
            raise _Differs(f"{path}.{_shown(qname.localname)}", "an element outside the FHIR namespace")
        return str(qname.localname)

    def _field(self, children: list[etree._Element], obj: dict[str, Any], name: str, where: str) -> None:
        values, extras = obj.get(name), obj.get(f"_{name}")
        if isinstance(values, list) or isinstance(extras, list):
            values_list = values if isinstance(values, list) else []
            extras_list = extras if isinstance(extras, list) else []
            carried = max(len(values_list), len(extras_list))
            if carried != len(children):
                raise _Differs(where, f"{len(children)} given, {carried} carried by the FHIR reader")
            values_list += [None] * (carried - len(values_list))
            extras_list += [None] * (carried - len(extras_list))
            for index, child in enumerate(children):
                values_list[index] = self._one(child, values_list[index], extras_list[index], where)
            if isinstance(values, list):
                obj[name] = values_list[: len(values)]
            return
        if values is None and extras is None:
            raise _Differs(where, "an element FHIR R4 does not define here")
        if len(children) > 1:
            raise _Differs(where, "more than once where FHIR R4 allows one")
        obj[name] = self._one(children[0], values, extras, where)
        if values is None:
            obj.pop(name)

    def _one(self, element: etree._Element, value: Any, extra: Any, where: str) -> Any:
        """The JSON value for one XML element: a resource, a complex value, or a primitive."""
        if isinstance(value, dict):
            if "resourceType" in value:
                self._no_attributes(element, where, allowed=())
                self._no_text(element, where)
                inner = list(element)
                if len(inner) != 1:
                    raise _Differs(where, "a resource wrapper holds exactly one resource")
                kind = _local(inner[0])
                if etree.QName(inner[0]).namespace != FHIR_NS:
                    raise _Differs(f"{where}.{_shown(kind)}", "an element outside the FHIR namespace")
                self.resource(inner[0], value, _shown(kind))
            else:
                self._children(element, value, where, resource=False)
            return value
        return self._primitive(element, value, extra if isinstance(extra, dict) else {}, where)

    def _primitive(self, element: etree._Element, value: Any, extra: dict[str, Any], where: str) -> Any:
        self._no_attributes(element, where, allowed=("value", "id"))
        self._no_text(element, where)
        if "id" in element.attrib:
            self._same_string(element.attrib["id"], extra, "id", f"{where}.id")
        elif extra.get("id") is not None:
            raise _Differs(f"{where}.id", "the FHIR reader made a value the XML does not hold")
        children = [child for child in element]
        if any(etree.QName(c).namespace != FHIR_NS or _local(c) != "extension" for c in children):
            odd = next(c for c in children if etree.QName(c).namespace != FHIR_NS or _local(c) != "extension")
            raise _Differs(f"{where}.{_shown(_local(odd))}", "a primitive value holds only extensions")
        if children:
            self._field(children, extra, "extension", f"{where}.extension")
        elif extra.get("extension"):
            raise _Differs(f"{where}.extension", "the FHIR reader made a value the XML does not hold")
        sent = element.attrib.get("value")
        if sent is None:
            if value is not None:
                raise _Differs(where, "the FHIR reader made a value the XML does not hold")
            return None
        return _same_value(sent, value, where)

    def _same_string(self, sent: str, obj: dict[str, Any], key: str, where: str) -> None:
        if obj.get(key) != sent:
            raise _Differs(where, "not carried as sent by the FHIR reader")

    def _narrative(self, children: list[etree._Element], div: Any, where: str) -> None:
        if len(children) > 1:
            raise _Differs(where, "more than once where FHIR R4 allows one")
        if not isinstance(div, str) or _canonical_div(div) != _canonical(children[0]):
            raise _Differs(where, "the XHTML narrative was not carried unchanged")


def _same_value(sent: str, value: Any, where: str) -> Any:
    """The JSON value to carry for the XML value `sent`, which the reader made into `value`."""
    if isinstance(value, bool):
        if sent != ("true" if value else "false"):
            raise _Differs(where, "not carried as sent by the FHIR reader")
        return value
    if isinstance(value, int | float | Decimal):
        try:
            same = Decimal(sent) == Decimal(str(value) if isinstance(value, Decimal) else repr(value))
            same = same and Decimal(sent).is_finite()
        except InvalidOperation:
            same = False
        if not same:
            raise _Differs(where, "a number not carried as sent by the FHIR reader")
        return value
    if value == sent:
        return value
    if (
        isinstance(value, str)
        and _TEMPORAL.fullmatch(sent)
        and _TEMPORAL.fullmatch(value)
        and _same_moment(sent, value)
    ):
        return sent  # the reader re-wrote the fraction of a second; carry what was sent
    raise _Differs(where, "not carried as sent by the FHIR reader")


def _same_moment(sent: str, made: str) -> bool:
    """Whether two FHIR date/time lexical forms differ only in how the fraction of a second or UTC
    (`Z`, `+00:00`) is written."""
    fraction = re.compile(r"\.([0-9]+)")

    def digits(text: str) -> tuple[str, str]:
        found = fraction.search(text)
        utc = text[:-6] + "Z" if text.endswith("+00:00") else text
        return fraction.sub("", utc, count=1), (found.group(1) if found else "").rstrip("0")

    return digits(sent) == digits(made)


def _canonical(element: etree._Element) -> bytes:
    return bytes(etree.tostring(element, method="c14n", exclusive=True, with_tail=False))


def _canonical_div(div: str) -> bytes | None:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    try:
        return _canonical(etree.fromstring(div.encode("utf-8"), parser))
    except etree.XMLSyntaxError:
        return None
