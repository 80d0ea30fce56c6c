"""HL7 v2 ER7 (the pipe-and-hat encoding) read into a typed message: the first step of an inbound ADT.

Splitting and escape decoding are python-hl7's (`hl7.parse`, `Message.unescape`); this module adds what a
service that must never lose or misread a message needs around it:

- the bytes are bounded, their character set is MSH-18's (HL7 v2.5 Table 0211: `UNICODE UTF-8` and empty
  → UTF-8, `8859/1` → ISO 8859-1, `ASCII`), and undecodable bytes are a refusal, not a guess;
- the segment terminator may be CR (the standard, HL7 v2.5 §2.5.2), CRLF or LF (what files and some
  interface engines carry); empty lines and trailing separators are ignored;
- every escape sequence (HL7 v2.5 §2.7: `\\F\\ \\S\\ \\T\\ \\R\\ \\E\\`, `\\Xhh..\\`, `\\H\\ \\N\\`, `\\.br\\`
  and the other formatting commands) is checked before python-hl7 decodes it, because python-hl7 logs a
  sequence it cannot read together with the whole field (a CPR number in a log line): an unknown or
  malformed sequence is refused naming the field. `\\Xhh..\\` bytes are decoded in MSH-18's character set
  (so `\\XC3A6\\` is `æ` in UTF-8), formatting line breaks become `\\n`, highlighting is dropped;
- a field that is exactly `""` is HL7's null ("delete the value", §2.5.3); `Er7Field.is_null` tells it
  from an empty field, and `Er7Field.text()` answers None for both.

Errors: `Hl7Problem` (an `InvalidInput`) with the segment, field, component, repetition and the HL7
Table 0357 error code as data, so an MLLP acknowledgement's ERR segment is built from it; its text names
the place (`PID-3.1`), never a value.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

# python-hl7 ships no type information; its containers are lists of lists of str, typed Any here
import hl7  # type: ignore[import-untyped]
import hl7.containers  # type: ignore[import-untyped]
import hl7.util  # type: ignore[import-untyped]
from hl7.exceptions import ParseException  # type: ignore[import-untyped]

from integration.errors import InvalidInput


def _drop(_record: logging.LogRecord) -> bool:
    return False


# python-hl7 logs what it cannot read together with the whole field or line ("Error decoding value [..],
# field [<a name>]"), under loggers named by its files' paths. Nothing of a message may reach a log line,
# whatever python-hl7 decodes: a filter on its loggers drops every record (a filter survives a later
# logging.config.dictConfig, which resets `disabled`). Escapes are decoded here, not by python-hl7.
for _logger in {hl7.util.logger, hl7.containers.logger}:
    _logger.addFilter(_drop)
    _logger.propagate = False


class ErrorCode(StrEnum):
    """HL7 v2.5 Table 0357 (message error condition codes) used by this service: the reader's refusals and the
    MLLP listener's ERR segments (`text` is the table's description, ERR-3.2)."""

    SEGMENT_SEQUENCE = "100"
    REQUIRED_FIELD_MISSING = "101"
    DATA_TYPE = "102"
    TABLE_VALUE_NOT_FOUND = "103"
    VALUE_TOO_LONG = "104"
    UNSUPPORTED_MESSAGE_TYPE = "200"
    UNSUPPORTED_EVENT_CODE = "201"
    UNSUPPORTED_PROCESSING_ID = "202"
    UNSUPPORTED_VERSION_ID = "203"
    DUPLICATE_KEY = "205"
    APPLICATION_INTERNAL_ERROR = "207"

    @property
    def text(self) -> str:
        return _TABLE_0357_TEXT[self]

    @classmethod
    def of(cls, code: str) -> ErrorCode:
        """The entry for a Table 0357 code; DATA_TYPE for a code we do not know (the content is wrong)."""
        return next((entry for entry in cls if entry.value == code), cls.DATA_TYPE)


_TABLE_0357_TEXT = {
    ErrorCode.SEGMENT_SEQUENCE: "Segment sequence error",
    ErrorCode.REQUIRED_FIELD_MISSING: "Required field missing",
    ErrorCode.DATA_TYPE: "Data type error",
    ErrorCode.TABLE_VALUE_NOT_FOUND: "Table value not found",
    ErrorCode.VALUE_TOO_LONG: "Value too long",
    ErrorCode.UNSUPPORTED_MESSAGE_TYPE: "Unsupported message type",
    ErrorCode.UNSUPPORTED_EVENT_CODE: "Unsupported event code",
    ErrorCode.UNSUPPORTED_PROCESSING_ID: "Unsupported processing id",
    ErrorCode.UNSUPPORTED_VERSION_ID: "Unsupported version id",
    ErrorCode.DUPLICATE_KEY: "Duplicate key identifier",
    ErrorCode.APPLICATION_INTERNAL_ERROR: "Application internal error",
}


def location(
    segment: str,
    field: int | None = None,
    component: int | None = None,
    repetition: int | None = None,
    segment_sequence: int = 1,
) -> str:
    """The text naming a place in a message: `PID-3.1`; `PID-3[2].1` for the second repetition;
    `DG1(2)-3.1` for the second DG1 segment; `MSH` for a whole segment; "" for the whole message."""
    if not segment:
        return ""
    text = segment if segment_sequence <= 1 else f"{segment}({segment_sequence})"
    if field is None:
        return text
    text += f"-{field}"
    if repetition is not None and repetition > 1:
        text += f"[{repetition}]"
    if component is not None:
        text += f".{component}"
    return text


class Hl7Problem(InvalidInput):
    """An HL7 v2 message breaks the standard or our profile, at a place given as data.

    `segment` ("" when the whole message is at fault), `field_number`/`component`/`repetition` (1-based,
    None when not that precise; the field *number* is `field_number` because `field` is InvalidInput's
    text naming the place, `PID-3.1`, which acknowledgements and dead-letter headers already report),
    `segment_sequence` (1-based occurrence of the segment), `code` (HL7 Table 0357,
    an `ErrorCode` value as a string).
    The problem text never contains a value of the message.
    """

    def __init__(
        self,
        problem: str,
        *,
        segment: str = "",
        field: int | None = None,
        component: int | None = None,
        repetition: int | None = None,
        segment_sequence: int = 1,
        code: ErrorCode | str = ErrorCode.DATA_TYPE,
    ) -> None:
        super().__init__(location(segment, field, component, repetition, segment_sequence), problem)
        self.segment = segment
        self.field_number = field
        self.component = component
        self.repetition = repetition
        self.segment_sequence = segment_sequence
        self.code = ErrorCode(code).value


HL7_NULL = '""'
# No ADT message we read comes near these (an A03: some 10-40 segments, a few hundred delimiters); past them the
# message is refused before it is split (each costs per segment and per field).
MAX_SEGMENTS = 1_000
MAX_DELIMITERS = 20_000
_ENVELOPE = frozenset({"MSH", "BHS", "BTS", "FHS", "FTS"})  # a second header, or a batch or file around the message
_CHARSETS = {"": "utf-8", "UNICODE UTF-8": "utf-8", "8859/1": "latin-1", "ASCII": "ascii"}
_SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{2}\Z")
_BOM = b"\xef\xbb\xbf"
_LEADING = b" \t\r\n"
_SEPARATOR = rb"[!-/:-@\[-`{-~]"  # a printable character that is no letter, digit or space
_BATCH_START = re.compile(rb"(?:FHS|BHS)" + _SEPARATOR)
_A_SEGMENT = re.compile(rb"[A-Z][A-Z0-9]{2}(" + _SEPARATOR + rb")")
# HL7 v2.5 §2.7: what may stand between two escape characters, the whole of it (fullmatch). Counts of the
# formatting commands are bounded (a number of lines or spaces, not a number beyond int()'s digit limit);
# `\Xhh..\` is whole bytes, an even number of hex digits.
_ESCAPE = re.compile(
    r"[FSTREHN]|X(?:[0-9A-Fa-f]{2})+|\.(?:br|fi|nf|ce|sp[0-9]{0,3}|sk[0-9]{0,3}|(?:in|ti)[+-]?[0-9]{0,3})"
)
_FORMATTING = {".br": "\n", ".sp": "\n", ".ce": "\n", ".fi": "", ".nf": "", "H": "", "N": ""}
# Characters no name, code or identifier may hold: controls (C0, DEL, C1), line and paragraph separators,
# and the Unicode bidirectional controls (U+202E right-to-left override shows a name reversed).
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
FREE_TEXT_BREAKS = frozenset("\n\r\t")


def unsafe_character(text: str, free_text: bool = False) -> bool:
    """Whether `text` holds a control character, a line/paragraph separator or a bidirectional control
    (free text — a note, a conclusion — may hold line breaks and tabs)."""
    for character in text:
        if free_text and character in FREE_TEXT_BREAKS:
            continue
        if character in _BIDI_CONTROLS or unicodedata.category(character) in _UNSAFE_CATEGORIES:
            return True
    return False


@dataclass(frozen=True, slots=True)
class Er7Field:
    """One field: its repetitions, each a tuple of components, each a tuple of decoded subcomponents.
    `is_null` is True when the field was exactly `""` (HL7 null)."""

    repetitions: tuple[tuple[tuple[str, ...], ...], ...] = ()
    is_null: bool = False

    @property
    def is_empty(self) -> bool:
        return not self.is_null and not any(any(any(s for s in c) for c in r) for r in self.repetitions)

    def component(self, component: int = 1, repetition: int = 1, subcomponent: int = 1) -> str:
        """The decoded value at that place ("" when absent; `""` when HL7 null)."""
        if self.is_null:
            return HL7_NULL
        try:
            return self.repetitions[repetition - 1][component - 1][subcomponent - 1]
        except IndexError:
            return ""

    def text(self, component: int = 1, repetition: int = 1, subcomponent: int = 1) -> str | None:
        """The value at that place, None when empty or HL7 null."""
        value = self.component(component, repetition, subcomponent)
        return None if value in ("", HL7_NULL) else value

    def components(self, repetition: int = 1) -> tuple[str, ...]:
        """The first subcomponent of each component of a repetition."""
        if self.is_null or repetition > len(self.repetitions):
            return ()
        return tuple(c[0] if c else "" for c in self.repetitions[repetition - 1])


_NO_FIELD = Er7Field()


@dataclass(frozen=True, slots=True)
class Er7Segment:
    """One segment: `id` ('PID'), `sequence` (1-based occurrence of this id), `index` (0-based position in
    the message) and its fields, where `fields[0]` is field 1 (for MSH, MSH-1 the field separator)."""

    id: str
    sequence: int
    index: int
    fields: tuple[Er7Field, ...]

    def field(self, number: int) -> Er7Field:
        if 1 <= number <= len(self.fields):
            return self.fields[number - 1]
        return _NO_FIELD

    def problem(
        self,
        problem: str,
        field: int | None = None,
        component: int | None = None,
        repetition: int | None = None,
        code: ErrorCode | str = ErrorCode.DATA_TYPE,
    ) -> Hl7Problem:
        return Hl7Problem(
            problem,
            segment=self.id,
            field=field,
            component=component,
            repetition=repetition,
            segment_sequence=self.sequence,
            code=code,
        )


@dataclass(frozen=True, slots=True)
class Er7Message:
    """A message read from ER7: its header's meaning, its segments, and the bytes it came from."""

    raw: bytes
    charset: str
    field_separator: str
    encoding_characters: str  # MSH-2: component, repetition, escape, subcomponent (and truncation in v2.7)
    segments_in_order: tuple[Er7Segment, ...]
    control_id: str  # MSH-10
    message_type: str  # MSH-9.1
    trigger: str  # MSH-9.2
    structure: str  # MSH-9.3
    version: str  # MSH-12.1
    processing_id: str  # MSH-11.1
    sending_application: str  # MSH-3.1
    sending_facility: str  # MSH-4.1
    receiving_application: str  # MSH-5.1
    receiving_facility: str  # MSH-6.1
    accept_ack_type: str  # MSH-15
    application_ack_type: str  # MSH-16
    _by_id: dict[str, tuple[Er7Segment, ...]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def msh(self) -> Er7Segment:
        return self.segments_in_order[0]

    def segments(self, segment_id: str) -> tuple[Er7Segment, ...]:
        return self._by_id.get(segment_id, ())

    def segment(self, segment_id: str) -> Er7Segment | None:
        found = self._by_id.get(segment_id, ())
        return found[0] if found else None


def looks_like_er7(raw: bytes) -> bool:
    """Whether bytes are meant as ER7: after an optional UTF-8 byte order mark and leading white space, `MSH`
    (or a batch's `FHS`/`BHS`) and a field separator (a printable character that is no letter, digit or
    space), or a first segment of that shape with an `MSH` of the same separator on a later line. No JSON or
    XML text begins so; an MLLP frame's start block is the listener's to remove."""
    head = _without_bom(raw).lstrip(_LEADING)
    found = _A_SEGMENT.match(head)
    if found is None:
        return False
    if head.startswith(b"MSH") or _BATCH_START.match(head):
        return True
    return re.search(rb"[\r\n]MSH" + re.escape(found[1]), head) is not None


def _without_bom(raw: bytes) -> bytes:
    return raw[len(_BOM) :] if raw.startswith(_BOM) else raw


def parse_er7(raw: bytes, max_bytes: int) -> Er7Message:
    """Read one HL7 v2 message in ER7 from `raw` (at most `max_bytes`).

    A UTF-8 byte order mark (when MSH-18 names UTF-8) and white space or empty lines before MSH are
    tolerated (what files and editors add); a batch or file envelope (FHS/BHS/BTS/FTS), a second MSH or a
    first segment that is not MSH is refused naming MSH (Table 0357 code 100).

    Raises Hl7Problem: too large, not an ER7 message (no `MSH` + field separator + encoding characters),
    an unsupported MSH-18 character set, bytes not in that set, a malformed segment id, a bad escape
    sequence, a batch (more than one MSH), or a header without MSH-9/MSH-10/MSH-12, or a header value with a
    control character.
    """
    if len(raw) > max_bytes:
        raise Hl7Problem(f"the message is larger than {max_bytes} bytes", code=ErrorCode.DATA_TYPE)
    body = _without_bom(raw)
    with_bom = len(body) != len(raw)
    separator, encoding_characters = _delimiters(body)
    charset = _charset(body, separator)
    if with_bom and charset != "utf-8":
        raise Hl7Problem("a UTF-8 byte order mark, but MSH-18 names another character set", segment="MSH", field=18)
    text = _decoded(body, charset)
    lines = [line for line in re.split(r"\r\n|\r|\n", text) if line.strip(" \t")]
    _refuse_sprawl(lines, separator + encoding_characters)
    if not lines[0].startswith("MSH") or any(line[:3] in _ENVELOPE for line in lines[1:]):
        raise Hl7Problem("one message, beginning with its only MSH segment, no batch", segment="MSH", code="100")
    try:
        parsed = hl7.parse("\r".join(lines))
    except (ParseException, ValueError, IndexError, AssertionError) as error:  # python-hl7's refusals
        raise Hl7Problem(f"not a readable ER7 message ({type(error).__name__})") from None
    segments = _segments(parsed, charset)
    return _message(raw, charset, separator, encoding_characters, segments)


def _refuse_sprawl(lines: list[str], delimiters: str) -> None:
    """Refuse a message of more segments or delimiters than any message we read: an A03 has some 10-40 segments
    and a few hundred delimiters; 166,000 segments took 114 s to read and 1 MB of `|` 5 s (Hl7Problem, 102)."""
    if len(lines) > MAX_SEGMENTS:
        raise Hl7Problem(f"{len(lines)} segments: at most {MAX_SEGMENTS} are read", code=ErrorCode.DATA_TYPE)
    marks = set(delimiters)
    count = sum(text.count(mark) for text in lines for mark in marks)
    if count > MAX_DELIMITERS:
        raise Hl7Problem(
            f"{count} delimiters (| ^ ~ \\ &): at most {MAX_DELIMITERS} are read", code=ErrorCode.DATA_TYPE
        )


def _delimiters(raw: bytes) -> tuple[str, str]:
    head = raw.lstrip(_LEADING)
    if _BATCH_START.match(head):
        raise Hl7Problem(
            "a batch or file (FHS/BHS) is not one message: send each message alone",
            segment="MSH",
            code=ErrorCode.SEGMENT_SEQUENCE,
        )
    if not head.startswith(b"MSH") and _A_SEGMENT.match(head):
        raise Hl7Problem("the first segment must be MSH", segment="MSH", code=ErrorCode.SEGMENT_SEQUENCE)
    head = head[:9]
    if not head.startswith(b"MSH") or len(head) < 8:
        raise Hl7Problem("not an HL7 v2 message in ER7: it must begin with MSH", code=ErrorCode.SEGMENT_SEQUENCE)
    separator = chr(head[3])
    end = head.find(head[3:4], 4)
    encoding = head[4:end].decode("latin-1") if end > 0 else ""
    chars = separator + encoding
    if (
        not 4 <= len(encoding) <= 5
        or not all(0x20 < ord(c) < 0x7F and not c.isalnum() for c in chars)
        or len(set(chars)) != len(chars)
    ):
        raise Hl7Problem("the field separator and encoding characters are not valid", segment="MSH", field=2)
    return separator, encoding


def _charset(raw: bytes, separator: str) -> str:
    header = re.split(rb"\r|\n", raw.lstrip(_LEADING), maxsplit=1)[0]
    fields = header.split(separator.encode("latin-1"))
    declared = fields[17].decode("latin-1").split("~")[0].strip() if len(fields) > 17 else ""
    if declared not in _CHARSETS:
        raise Hl7Problem("this character set is not accepted", segment="MSH", field=18, code="103")
    return _CHARSETS[declared]


def _decoded(raw: bytes, charset: str) -> str:
    try:
        text = raw.decode(charset)
    except UnicodeDecodeError:
        raise Hl7Problem("bytes not in the character set MSH-18 names", segment="MSH", field=18) from None
    if "\x00" in text or "\x0b" in text or "\x1c" in text:
        raise Hl7Problem("control characters (NUL or MLLP framing) in the message")
    return text.lstrip(" \t\r\n")


def _segments(parsed: Any, charset: str) -> tuple[Er7Segment, ...]:
    seen: dict[str, int] = {}
    result = []
    for index, segment in enumerate(parsed):
        segment_id = str(segment[0])
        if not _SEGMENT_ID.match(segment_id):
            raise Hl7Problem(f"segment {index + 1} has no valid segment id", code=ErrorCode.SEGMENT_SEQUENCE)
        seen[segment_id] = seen.get(segment_id, 0) + 1
        sequence = seen[segment_id]
        raw_fields = list(segment[1:])
        if segment_id == "MSH":  # MSH-1 and MSH-2 are the delimiters themselves, not to be split or decoded
            fields = [_literal(str(raw_fields[0])), _literal(str(raw_fields[1]))]
            rest, first = raw_fields[2:], 3
        else:
            fields, rest, first = [], raw_fields, 1
        for offset, value in enumerate(rest):
            where = (segment_id, first + offset, sequence)
            fields.append(_field(parsed, value, charset, where))
        while fields and fields[-1].is_empty and not fields[-1].is_null:  # trailing separators
            fields.pop()
        result.append(Er7Segment(segment_id, sequence, index, tuple(fields)))
    return tuple(result)


def _literal(value: str) -> Er7Field:
    return Er7Field((((value,),),))


def _field(message: Any, value: Any, charset: str, where: tuple[str, int, int]) -> Er7Field:
    if str(value) == HL7_NULL:
        return Er7Field(is_null=True)
    repetitions = value if isinstance(value, hl7.Field) else [value]
    return Er7Field(
        tuple(
            tuple(
                tuple(
                    _decode(message, sub, charset, where, r + 1, c + 1) for sub in _children(component, hl7.Component)
                )
                for c, component in enumerate(_children(repetition, hl7.Repetition))
            )
            for r, repetition in enumerate(repetitions)
        )
    )


def _children(node: Any, container: Any) -> list[Any]:
    return list(node) if isinstance(node, container) else [node]


def _decode(message: Any, value: Any, charset: str, where: tuple[str, int, int], rep: int, comp: int) -> str:
    """One subcomponent with its escape sequences decoded; every sequence is checked whole first and decoded
    here (python-hl7's `unescape` drops what it cannot read and logs the field)."""
    text = str(value)
    esc = message.esc
    if esc not in text:
        return text
    parts = text.split(esc)
    segment, number, sequence = where

    def refused(problem: str) -> Hl7Problem:
        return Hl7Problem(
            problem, segment=segment, field=number, component=comp, repetition=rep, segment_sequence=sequence
        )

    if len(parts) % 2 == 0:
        raise refused("an escape sequence is not closed")
    separators = message.separators  # segment, field, repetition, component, subcomponent
    delimiters = {"F": separators[1], "R": separators[2], "S": separators[3], "T": separators[4], "E": esc}
    decoded = [parts[0]]
    for sequence_text, after in zip(parts[1::2], parts[2::2], strict=True):
        if not _ESCAPE.fullmatch(sequence_text):
            raise refused("an escape sequence HL7 v2 does not define")
        if sequence_text in delimiters:
            decoded.append(delimiters[sequence_text])
        elif sequence_text.startswith("X"):
            try:
                decoded.append(bytes.fromhex(sequence_text[1:]).decode(charset))
            except UnicodeDecodeError:
                raise refused("a hexadecimal escape is not text in MSH-18's character set") from None
        else:
            decoded.append(_formatting(sequence_text))
        decoded.append(after)
    return "".join(decoded)


def _formatting(command: str) -> str:
    """`.br` is a line break, `.sp n` n line breaks, `.sk n` n spaces; highlighting and indents become
    nothing (text, not layout). `command` has passed `_ESCAPE`, so a count has at most 3 digits."""
    if command in _FORMATTING:
        return _FORMATTING[command]
    count = command[3:].lstrip("+-")
    times = int(count) if count else 1
    if command.startswith(".sp"):
        return "\n" * min(times, 100)
    if command.startswith(".sk"):
        return " " * min(times, 100)
    return ""


_HEADER_FIELDS = (3, 4, 5, 6, 7, 9, 10, 11, 12, 15, 16, 18)  # what the service reads or answers with


def _header_value(msh: Er7Segment, number: int, component: int = 1) -> str:
    return msh.field(number).text(component) or ""


def _message(raw: bytes, charset: str, separator: str, encoding: str, segments: tuple[Er7Segment, ...]) -> Er7Message:
    msh = segments[0]
    for number, name in ((9, "message type"), (10, "message control id"), (12, "version id")):
        if not _header_value(msh, number):
            raise msh.problem(f"the {name} is missing", field=number, code=ErrorCode.REQUIRED_FIELD_MISSING)
    for number in _HEADER_FIELDS:
        for repetition, components in enumerate(msh.field(number).repetitions, 1):
            for component, subcomponents in enumerate(components, 1):
                if any(unsafe_character(sub) for sub in subcomponents):
                    problem = "a control or bidirectional character in the header"
                    raise msh.problem(problem, number, component, repetition)
    grouped: dict[str, list[Er7Segment]] = {}
    for segment in segments:
        grouped.setdefault(segment.id, []).append(segment)  # a tuple rebuilt per segment was quadratic
    by_id = {segment_id: tuple(group) for segment_id, group in grouped.items()}
    return Er7Message(
        raw=raw,
        charset=charset,
        field_separator=separator,
        encoding_characters=encoding,
        segments_in_order=segments,
        control_id=_header_value(msh, 10),
        message_type=_header_value(msh, 9, 1),
        trigger=_header_value(msh, 9, 2),
        structure=_header_value(msh, 9, 3),
        version=_header_value(msh, 12),
        processing_id=_header_value(msh, 11),
        sending_application=_header_value(msh, 3),
        sending_facility=_header_value(msh, 4),
        receiving_application=_header_value(msh, 5),
        receiving_facility=_header_value(msh, 6),
        accept_ack_type=_header_value(msh, 15),
        application_ack_type=_header_value(msh, 16),
        _by_id=by_id,
    )
