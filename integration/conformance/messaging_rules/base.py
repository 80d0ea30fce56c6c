"""What every messaging rule uses: the finding, readers that accept any JSON value, places in a resource."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

Resource = dict[str, Any]

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
SOR = "urn:oid:1.2.208.176.1.1"
EAN = "https://www.gs1.org/gln"
CPR = "urn:oid:1.2.208.176.1.2"
UNKNOWN_MODIFIER = "a modifier extension we do not understand: the content must not be processed (FHIR R4 §2.4)"


@dataclass(frozen=True, slots=True)
class Finding:
    field: str  # where, as a FHIR path: `Patient.text`, `MessageHeader.destination`
    problem: str  # what, never a value from the message
    text: str  # the full description, with ids and values, for our own messages and `integration validate`

    def __str__(self) -> str:
        return self.text


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def values_at(node: Any, path: str) -> Iterator[Any]:
    """Every value at the dotted `path` under `node`, lists unrolled at each step (`identifier.use`)."""
    head, _, rest = path.partition(".")
    value = node.get(head) if isinstance(node, dict) else None
    for item in value if isinstance(value, list) else ([] if value is None else [value]):
        if rest:
            yield from values_at(item, rest)
        else:
            yield item


@dataclass(frozen=True, slots=True)
class Place:
    """A place in a resource: `Type/id.a.0.b` for the text, `Type.a[0].b` for the field."""

    text: str
    field: str

    def child(self, key: str | int) -> Place:
        return Place(f"{self.text}.{key}", f"{self.field}[{key}]" if isinstance(key, int) else f"{self.field}.{key}")


def resource_type(resource: Resource) -> str | None:
    rtype = resource.get("resourceType")
    return rtype if isinstance(rtype, str) and rtype else None


def message_header(bundle: Any) -> dict[str, Any]:
    """The resource of a message's first entry (its MessageHeader when it is one), or {}: any JSON value is read."""
    entries = as_list(bundle.get("entry")) if isinstance(bundle, dict) else []
    return as_dict(as_dict(entries[0]).get("resource")) if entries else {}
