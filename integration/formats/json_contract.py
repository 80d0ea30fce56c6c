"""Decoding a JSON payload safely and checking it against its JSON Schema (2020-12).

Errors name the field and the problem in one line and never repeat a value from the payload
except an unknown code that looks like one of ours (lowercase words and hyphens): payloads carry
CPR numbers and names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import jsonschema_rs
import orjson

from integration.errors import InvalidInput

DEFAULT_MAX_BYTES = 1024 * 1024
# No message we accept nests beyond about 15 levels; the schema validator gives up at 255, and the
# readers and FHIR rules recurse. Deeper input is refused where it is decoded, naming where.
MAX_DEPTH = 64
_UTF8_BOM = b"\xef\xbb\xbf"
_CODE_LIKE = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
_NAME_LIKE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def decode_json(raw: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """Bytes → JSON value: size-capped, strict UTF-8, strict JSON."""
    if len(raw) > max_bytes:
        raise InvalidInput("", f"payload too large: {len(raw)} bytes, the limit is {max_bytes}")
    if raw.startswith(_UTF8_BOM):
        raw = raw[len(_UTF8_BOM) :]
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput("", f"payload is not valid UTF-8 (bad byte at offset {exc.start})") from None
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if exc.msg.startswith(_TOO_LARGE):
            raise InvalidInput(_field_of_huge_number(raw), "a number too large to read (beyond a double)") from None
        raise InvalidInput("", f"malformed JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH:  # else it cannot nest that deep: no need to look
        check_depth(document)
    return document


_TOO_LARGE = "number is infinity"  # orjson's words for a number beyond a double (1e400, or 400 digits)
_HUGE = object()


def _huge_float(text: str) -> Any:
    return _HUGE if float(text) in (float("inf"), float("-inf")) else 0.0


def _huge_int(text: str) -> Any:
    return _HUGE if len(text.lstrip("-")) > 308 else 0  # beyond a double, as orjson reads it


def _field_of_huge_number(raw: bytes) -> str:
    """Where the first number beyond a double is, found with the standard library's parser (which
    reads any number); "" when even that cannot tell."""
    try:
        document = json.loads(raw, parse_float=_huge_float, parse_int=_huge_int)
    except (ValueError, RecursionError):
        return ""
    pending: list[tuple[Any, list[str | int]]] = [(document, [])]
    while pending:
        value, path = pending.pop()
        if value is _HUGE:
            return field_path([p if isinstance(p, int) or _NAME_LIKE.fullmatch(p) else "?" for p in path])
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        pending.extend((child, [*path, key]) for key, child in reversed(list(items)))
    return ""


def _too_deep(document: Any) -> list[str | int] | None:
    """The path to the first array or object nested deeper than MAX_DEPTH, if any."""
    pending: list[tuple[Any, list[str | int]]] = [(document, [])]
    while pending:
        value, path = pending.pop()
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, child in items:
            if isinstance(child, dict | list):
                if len(path) >= MAX_DEPTH:
                    return [*path, key]
                pending.append((child, [*path, key]))
    return None


def _where_nesting_starts(path: list[str | int]) -> list[str | int]:
    """`path` without the tail that repeats itself: referral.note[0][0][0]… → referral.note[0]."""
    for period in (1, 2):
        tail = path[-period:]
        start = len(path) - period
        while start >= period and path[start - period : start] == tail:
            start -= period
        if start < len(path) - period:
            return path[: start + period]
    return path[:8]


def check_depth(document: Any) -> None:
    """Refuse a JSON value that nests deeper than MAX_DEPTH, naming where the nesting starts."""
    path = _too_deep(document)
    if path is not None:
        field = field_path(
            [p if isinstance(p, int) or _NAME_LIKE.fullmatch(p) else "?" for p in _where_nesting_starts(path)]
        )
        raise InvalidInput(field or "", f"nested more than {MAX_DEPTH} levels deep")


def field_path(parts: Sequence[str | int]) -> str:
    """['diagnoses', 0, 'code'] → 'diagnoses[0].code'."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _describe(error: jsonschema_rs.ValidationError) -> InvalidInput:
    kind, detail = error.kind.name, error.kind.as_dict()
    path = field_path(error.instance_path)
    match kind:
        case "required":
            return InvalidInput(_join(path, detail["property"]), "required field is missing")
        case "additionalProperties":
            name = detail["unexpected"][0]
            return InvalidInput(_join(path, name if _NAME_LIKE.fullmatch(name) else "?"), "unknown field")
        case "enum":
            allowed = ", ".join(str(option) for option in detail["options"])
            value = error.instance
            shown = f" {value!r}" if isinstance(value, str) and _CODE_LIKE.fullmatch(value) else ""
            return InvalidInput(path, f"unknown value{shown}; expected one of: {allowed}")
        case "const":
            return InvalidInput(path, f"must be {detail['expected_value']!r}")
        case "type":
            return InvalidInput(path, f"wrong type: expected {' or '.join(detail['types'])}")
        case "pattern" | "minLength":
            return InvalidInput(path, "does not have the required format")
        case "maxLength":
            return InvalidInput(path, f"longer than {detail['limit']} characters")
        case "minimum" | "maximum":
            return InvalidInput(path, f"out of range (the {kind} is {detail['limit']})")
        case "minItems":
            return InvalidInput(path, f"needs at least {detail['limit']} item(s)")
        case "maxItems":
            return InvalidInput(path, f"has more than {detail['limit']} items")
        case "uniqueItems":
            return InvalidInput(path, "repeats an item")
        case "minProperties":
            return InvalidInput(path, f"needs at least {detail['limit']} field(s)")
        case "maxProperties":
            return InvalidInput(path, "has fields that are not allowed here")
        case _:
            return InvalidInput(path, f"violates the schema ({kind})")


class JsonContract:
    """A compiled JSON Schema; `check` raises InvalidInput describing the first violation."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self._validator = jsonschema_rs.Draft202012Validator(schema)

    def check(self, document: Any) -> None:
        if self._validator.is_valid(document):
            return
        errors = list(self._validator.iter_errors(document))
        first = _describe(errors[0])
        if len(errors) > 1:
            raise InvalidInput(first.field, f"{first.problem} (and {len(errors) - 1} more problem(s))")
        raise first
