"""Decoding a JSON payload safely and checking it against its JSON Schema (2020-12).

Errors name the field and the problem in one line and never repeat a value from the payload
except an unknown code that looks like one of ours (lowercase words and hyphens): payloads carry
CPR numbers and names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import jsonschema_rs
import orjson

from integration.errors import InvalidInput
from integration.formats.syntax import sniff

DEFAULT_MAX_BYTES = 1024 * 1024
# No message we accept nests beyond about 15 levels; the schema validator gives up at 255, and the
# readers and FHIR rules recurse. Deeper input is refused where it is decoded, naming where.
MAX_DEPTH = 64
# The largest message we know (MedCom's examples, our golden messages and samples) holds 921 JSON values (objects,
# arrays, strings, numbers, …); an R4 StructureDefinition 7,700. Checking costs per value: a 1 MiB message of
# 330,000 empty extensions, or of 500,000 numbers, took 5-9 s to refuse (every schema error built, every rule run),
# a consumer held by one sender. More than this is refused before any check (at most ~0.4 s to get there).
MAX_VALUES = 20_000
_CODE_LIKE = re.compile(r"(?!.*\d(?:-?\d){5})[a-z][a-z0-9]*(-[a-z0-9]+)*")  # no six digits: a CPR is ten
# A key from the payload is repeated in an error only when it looks like a field name: letters, digits and
# underscores, and no run of six digits (a sender may put a CPR number into an unknown key).
_NAME_LIKE = re.compile(r"(?![A-Za-z0-9_]*\d{6})[A-Za-z_][A-Za-z0-9_]{0,63}")


class RefusedContent(InvalidInput):
    """Well-formed JSON refused for what it holds (a key twice, a forbidden character): `document` is what a
    lenient reader made of it, so that a MedCom sender can still be answered with a fatal-error ack."""

    def __init__(self, field: str, problem: str, document: Any) -> None:
        super().__init__(field, problem)
        self.document = document


def decode_json(raw: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """Bytes → JSON value: size-capped, UTF-8 (RFC 8259 §8.1; a UTF-8 BOM is tolerated), strict JSON, nested at
    most MAX_DEPTH deep, at most MAX_VALUES values in all (else RefusedContent: a MedCom sender is still
    answered), no object with a key twice (RFC 8259 §4 leaves it open; FHIR JSON and our contracts
    forbid it), no string with a character that no message may carry (`forbidden_character`).

    Every number written with a fraction or an exponent (`7.50`, `1e2`, `-0.0`) comes back as a
    `decimal.Decimal` holding the sender's digits (`Decimal('7.50')`), never a float, which would drop
    `7.50`'s precision (FHIR R4 Datatypes, `decimal`) and round `7.1234567890123456789`; a number without
    either is an int. `fhir_json.dumps` writes such a Decimal back digit for digit.

    Raises InvalidInput naming the JSON path (`entry[2].resource.identifier`) and never a value."""
    if len(raw) > max_bytes:
        raise InvalidInput("", f"payload too large: {len(raw)} bytes, the limit is {max_bytes}")
    sniffed = sniff(raw)
    if sniffed.encoding != "UTF-8":
        raise InvalidInput("", f"JSON must be UTF-8 (RFC 8259 §8.1); this is {sniffed.encoding}")
    raw = raw[sniffed.bom :]
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput("", f"payload is not valid UTF-8 (bad byte at offset {exc.start})") from None
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if exc.msg.startswith(_TOO_LARGE):
            raise InvalidInput(_field_of_huge_number(raw), "a number too large to read (beyond a double)") from None
        _refuse_forbidden_characters(_lenient(raw))  # orjson refuses them without saying where
        raise InvalidInput("", f"malformed JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    keys, depth, fractional, values = _shape(document)
    _refuse_beyond_limits(document, depth, values)
    if fractional or keys != _key_ends(raw):  # else no key can be there twice (see _key_ends)
        document = _exact(raw, document)
    if _may_hold_forbidden(raw):
        _refuse_forbidden_characters(document)
    return document


# -- duplicate keys -----------------------------------------------------------------------------------
# orjson keeps the last of two equal keys without a word. Counting settles most messages without a
# second parse: every key-value pair in the text ends its key with a quote followed by optional white
# space and a colon, so the number of such quote-colon sequences in the raw bytes is at least the
# number of pairs, which is at least the number of keys orjson kept. When the count equals the keys
# kept, no key was dropped. When not (a duplicate, or a string holding `":` or starting with `:`), the
# standard library's parser looks again, exactly, with a hook that sees every object's pairs.
_KEY_END_SPACED = re.compile(rb'"[ \t\r\n]+:')


def _key_ends(raw: bytes) -> int:
    """How many quotes in `raw` are followed by optional white space and a colon: at least one per key."""
    return raw.count(b'":') + len(_KEY_END_SPACED.findall(raw))


def check_limits(document: Any) -> None:
    """What `decode_json` checks of a document's shape, for one read from another syntax (FHIR XML): nested at
    most MAX_DEPTH deep (InvalidInput naming where), at most MAX_VALUES values in all (RefusedContent, with
    `document` for a MedCom sender's ack). One walk of the document."""
    _, depth, _, values = _shape(document)
    _refuse_beyond_limits(document, depth, values)


def _refuse_beyond_limits(document: Any, depth: int, values: int) -> None:
    if depth > MAX_DEPTH:
        check_depth(document)
    if values > MAX_VALUES:
        raise RefusedContent(
            "",
            f"{values} JSON values: at most {MAX_VALUES} are read (the largest message we know has under 1,000)",
            document,
        )


def _shape(document: Any) -> tuple[int, int, bool, int]:
    """(keys in every object, deepest nesting, whether any number is a float, how many values in all: the
    document, and every member and item below it) of a JSON value, level by level, without recursion."""
    keys = depth = 0
    values = 1
    fractional = type(document) is float
    level = [document] if isinstance(document, dict | list) else []
    while level:
        depth += 1
        below: list[Any] = []
        for container in level:
            children = container.values() if type(container) is dict else container
            if type(container) is dict:
                keys += len(container)
            values += len(container)
            for child in children:
                kind = type(child)
                if kind is dict or kind is list:
                    below.append(child)
                elif kind is float:
                    fractional = True
        level = below
    return keys, depth, fractional, values


class _Repeated(dict[str, Any]):
    """An object that had `key` more than once (the standard parser's hook marks it; never returned)."""

    key: str


def _exact(raw: bytes, document: Any) -> Any:
    """`raw` read again by the standard library's parser, exactly: every number with a fraction or an exponent
    as a Decimal of its digits, and refused (RefusedContent, with orjson's `document`) when an object has a
    key twice, naming the first such key's path. orjson read it first: it is valid JSON, at most MAX_DEPTH
    deep, with no number beyond a double."""
    repeats = 0

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal repeats
        kept = dict(items)
        if len(kept) == len(items):
            return kept
        repeats += 1
        repeated, seen = _Repeated(kept), set()
        for key, _ in items:
            if key in seen:
                repeated.key = key
                break
            seen.add(key)
        return repeated

    try:
        paired = json.loads(raw, parse_float=_decimal, object_pairs_hook=pairs)
    except _Unreadable:
        raise InvalidInput(_field_of_huge_number(raw), "a number too large or too finely written to read") from None
    if repeats:  # only then is the walk needed, to name the first one's path
        for path, value in _walk(paired):
            if isinstance(value, _Repeated):
                raise RefusedContent(
                    _safe_path([*path, value.key]),
                    "a key appears twice in one object (FHIR and our "
                    "contracts forbid it: which one counts would be a guess)",
                    document,
                )
    return paired


# -- characters no message may carry ------------------------------------------------------------------
# FHIR forbids the C0 controls but tab, CR and LF in every string (R4 datatypes, `string`), and XML 1.0
# cannot carry them at all, so a message with one would fail our own FHIR output (its narrative). Lone
# surrogates are not Unicode text (no UTF-8 can hold them); U+FFFE and U+FFFF are not XML characters, so
# no FHIR resource holding one can be written as FHIR XML or put in a narrative. That is exactly what XML
# 1.0 refuses itself, so JSON and XML inputs take the same characters. DEL and the C1 controls are
# accepted: FHIR strings and XML 1.0 allow them, and our outputs carry them unchanged.
FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# In the raw bytes each forbidden character is one of these escapes or U+FFFE/U+FFFF's bytes (raw C0 and
# lone surrogates orjson refuses itself): a message with none of them needs no look at its strings.
_FORBIDDEN_ESCAPES = (b"\\u000", b"\\u001", b"\\b", b"\\f")  # U+0000-U+001F, then \b and \f
_NONCHARACTERS = (b"\\ufffe", b"\\uffff", b"\xef\xbf\xbe", b"\xef\xbf\xbf")  # escaped (any case), or raw


def _may_hold_forbidden(raw: bytes) -> bool:
    """Whether `raw` may hold a forbidden character: plain substring searches, so cheap; an escaped backslash
    before `u0007` is a false alarm that the look at the strings clears."""
    if any(escape in raw for escape in _FORBIDDEN_ESCAPES):
        return True
    lowered = raw.lower() if b"\\u" in raw else raw
    return any(noncharacter in lowered for noncharacter in _NONCHARACTERS)


def forbidden_character(text: str) -> str | None:
    """What the first character of `text` that no message may carry is ("a control character (U+0007)"), if any."""
    found = FORBIDDEN.search(text)
    if found is None:
        return None
    point = ord(found.group())
    kind = (
        "a lone surrogate"
        if 0xD800 <= point <= 0xDFFF
        else "a noncharacter"
        if point >= 0xFFFE
        else "a control character"
    )
    return f"{kind} (U+{point:04X})"


def _refuse_forbidden_characters(document: Any) -> None:
    for path, value in _walk(document):
        if isinstance(value, dict):
            for key in value:
                if FORBIDDEN.search(key):
                    raise RefusedContent(_safe_path([*path, key]), f"a key holds {forbidden_character(key)}", document)
        elif isinstance(value, str) and (found := forbidden_character(value)):
            raise RefusedContent(_safe_path(path), f"holds {found}, which no message may carry", document)


def _lenient(raw: bytes) -> Any:
    """`raw` read by the standard library's parser, which takes raw control characters and lone surrogates
    (so that we can say where they are); None when it cannot read it either."""
    try:
        return json.loads(raw.decode("utf-8", errors="surrogatepass"), strict=False)
    except (ValueError, RecursionError):
        return None


def _walk(document: Any) -> Iterator[tuple[list[str | int], Any]]:
    """Every value in document order, with its path."""
    pending: list[tuple[Any, list[str | int]]] = [(document, [])]
    while pending:
        value, path = pending.pop()
        yield path, value
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        pending.extend((child, [*path, key]) for key, child in reversed(list(items)))


def _safe_path(path: Sequence[str | int]) -> str:
    """The path, with any key that does not look like a field name shown as `?` (keys may hold anything)."""
    return field_path([p if isinstance(p, int) or _NAME_LIKE.fullmatch(p) else "?" for p in path])


_TOO_LARGE = "number is infinity"  # orjson's words for a number beyond a double (1e400, or 400 digits)
_HUGE = object()


# A decimal's exponent beyond these is no measurement, and writing it positionally (`fhir_json`) would take as
# many digits: `1e999999999` is a gigabyte of zeros. A double's range, with room for its subnormals.
_LARGEST_EXPONENT = 308
_SMALLEST_EXPONENT = -400


class _Unreadable(ValueError):
    """A number Decimal cannot hold (`0e400111…`) or that we will not write out (see _LARGEST_EXPONENT)."""


def _decimal(text: str) -> Decimal:
    """A JSON number with a fraction or exponent as the Decimal of its digits; _Unreadable beyond our range."""
    try:
        value = Decimal(text)
    except InvalidOperation:  # an exponent beyond what Decimal holds at all
        raise _Unreadable(text) from None
    exponent = value.as_tuple().exponent
    if not isinstance(exponent, int) or not _SMALLEST_EXPONENT <= exponent <= _LARGEST_EXPONENT:
        raise _Unreadable(text)
    if not value.is_zero() and value.adjusted() > _LARGEST_EXPONENT:
        raise _Unreadable(text)
    return value


def _huge_float(text: str) -> Any:
    try:
        _decimal(text)
    except _Unreadable:
        return _HUGE
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
