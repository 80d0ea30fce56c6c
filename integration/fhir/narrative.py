"""Human-readable narrative (`text`) for every resource but the Bundle, as MedCom requires.

A plain `<p><b>label</b>: value</p>` list in Danish, showing the resource's id and the ids of
what it references; values are escaped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from html import escape

_XHTML = '<div xmlns="http://www.w3.org/1999/xhtml">'
_MARKUP = re.compile(r"[&<>]")


def _text(value: object) -> str:
    text = str(value)
    return escape(text, quote=False) if _MARKUP.search(text) else text


def narrative(resource_type: str, resource_id: str, rows: Iterable[tuple[str, object]]) -> dict[str, str]:
    lines = [f"<p><b>{resource_type}</b>: {resource_id}</p>"]
    lines += [f"<p><b>{_text(label)}</b>: {_text(value)}</p>" for label, value in rows if value not in (None, "")]
    return {"status": "generated", "div": _XHTML + "".join(lines) + "</div>"}
