"""Decoding a JSON payload safely and checking it against its JSON Schema (2020-12).

Errors name the field and the problem in one line and never repeat a value from the
payload except an unknown code: payloads carry CPR numbers and names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jsonschema_rs
import orjson

from integration.errors import InvalidInput

DEFAULT_MAX_BYTES = 1024 * 1024
_UTF8_BOM = b"\xef\xbb\xbf"


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
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput("", f"malformed JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None


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
            return InvalidInput(_join(path, detail["unexpected"][0]), "unknown field")
        case "enum":
            allowed = ", ".join(str(option) for option in detail["options"])
            return InvalidInput(path, f"unknown value {error.instance!r}; expected one of: {allowed}")
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
