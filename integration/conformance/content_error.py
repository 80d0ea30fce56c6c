"""One FHIR R4 content error in the shape every content check reports it (the message path's `r4_validator` and
`integration validate`'s `resource_validation`): where, by FHIR path, and what, never a value from the message."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
NAME = re.compile(r"(?![A-Za-z0-9_]*\d{6})[A-Za-z_][A-Za-z0-9_]{0,63}")  # no six digits: a CPR is ten
HIDDEN = "(id not shown)"


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


def located(
    rtype: str, rid: Any, path: list[Any], problem: str, *, named: str | None = None, shown: str | None = None
) -> ContentError:
    """The error at `path` (element names and list positions, from the message) inside the resource `rtype`/`rid`;
    `named` is a last element name that comes from the definitions (a missing element: `value[x]`), shown as is.
    `shown` is the problem without values, when `problem` may hold one."""
    shown_id = rid if isinstance(rid, str) and UUID.fullmatch(rid) else HIDDEN
    names: list[Any] = [p if isinstance(p, int) or (isinstance(p, str) and NAME.fullmatch(p)) else "?" for p in path]
    full: list[Any] = list(path)
    if named is not None:
        names.append(named)
        full.append(named)
    field = rtype + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in names)
    return ContentError(
        f"{rtype}/{rid}: {'.'.join(str(p) for p in full)}: {problem}",
        field,
        f"{rtype}/{shown_id}: {'.'.join(str(p) for p in names)}: {problem if shown is None else shown}",
    )


def not_a_resource(position: int, why: str) -> ContentError:
    """An entry whose resource is no resource we can read (`why`)."""
    return ContentError(f"entry[{position}]: {why}", f"Bundle.entry[{position}].resource", f"entry[{position}]: {why}")


NOT_A_RESOURCE = ContentError("not a FHIR resource", "Bundle", "not a FHIR resource")
