"""Human-readable narrative (`text`) for every resource but the Bundle, as MedCom requires.

A plain `<p><b>label</b>: value</p>` list in Danish, showing the resource's id and the ids of
what it references; values are escaped.
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape

_XHTML = '<div xmlns="http://www.w3.org/1999/xhtml">'


def narrative(resource_type: str, resource_id: str, rows: Iterable[tuple[str, object]]) -> dict[str, str]:
    lines = [f"<p><b>{escape(resource_type)}</b>: {escape(resource_id)}</p>"]
    lines += [
        f"<p><b>{escape(label)}</b>: {escape(str(value))}</p>" for label, value in rows if value not in (None, "")
    ]
    return {"status": "generated", "div": _XHTML + "".join(lines) + "</div>"}
