"""HL7 v2 acknowledgements in ER7: the received message's MSH as the ACK needs it (`read_header`), and the
ACK itself (`build_ack`: MSH, MSA, and an ERR when something was wrong).

The rules are HL7 v2.5 chapter 2 (2.9 message processing rules, 2.15 segment definitions):
- the ACK's MSH is built anew: MSH-3/4 ← the message's MSH-5/6 and MSH-5/6 ← its MSH-3/4, MSH-7 now,
  MSH-9 `ACK^<trigger>^ACK` (to v2.3, whose MSH-9 has no message structure, `ACK^<trigger>`), MSH-10 a
  control id of our own, MSH-11 and MSH-12 echoed; the encoding characters are the received message's;
- MSA-1 the acknowledgement code (table 0008), MSA-2 the message's MSH-10;
- ERR-2 the error location (ERL: segment ^ sequence ^ field ^ repetition ^ component ^ sub-component),
  ERR-3 the HL7 error code (table 0357, coded with its text and `HL70357`), ERR-4 the severity (table 0516:
  E), ERR-8 the user message: what is wrong, naming the field, never a value;
- but to a v2.3/v2.3.1/v2.4 message, whose ERR has only ERR-1 (v2.3 2.16.5.1 "error code and location", CM;
  v2.4 ELD: segment ID ^ sequence ^ field position ^ code identifying the error, a CE whose parts are
  sub-components: `PID^1^3^102&Data type error&HL70357`), the ERR is that ERR-1, and the user message goes in
  MSA-3 (text message, at most 80 characters in v2.3), the one place those versions give it: cut at a word
  boundary with an ellipsis when longer.

The header is read from the first bytes of a message only (`HEADER_BYTES`): enough to answer even a message
too large to be read, without holding it. Bytes are read as ISO-8859-1, so every byte maps to one character
and the fields echoed into the ACK come back byte for byte, whatever the message's own charset (MSH-18).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from integration.formats.er7 import ErrorCode

HEADER_BYTES = 4096  # the first segment must end within these: an MSH is far shorter
CHARSET = "latin-1"  # byte-transparent: see the module's docstring
ERR_1_VERSIONS = frozenset({"2.3", "2.3.1", "2.4"})  # ERR-1 only (ERR-2..12 came in v2.5)
MSA_3_LENGTH = 80  # MSA-3's length in v2.3 and v2.4
TWO_COMPONENT_MSH_9 = frozenset({"2.3"})  # MSH-9 is type ^ trigger; the message structure came in v2.3.1
ELLIPSIS = "..."  # ASCII: the ACK is ISO-8859-1, and MSA-3's length counts characters


class AckCode(enum.StrEnum):
    """HL7 table 0008: original mode (application acks) and enhanced mode (accept acks)."""

    AA = "AA"  # application accept
    AE = "AE"  # application error: the content is wrong
    AR = "AR"  # application reject: unsupported type/version/processing id, or a failure unrelated to content
    CA = "CA"  # commit accept
    CE = "CE"  # commit error
    CR = "CR"  # commit reject: unsupported type/version/processing id


@dataclass(frozen=True, slots=True)
class ErrorLocation:
    """ERR-2 (ERL): where in the message the problem is; 0 or "" for a part not known."""

    segment: str
    sequence: int = 1
    field: int = 0
    repetition: int = 0
    component: int = 0
    subcomponent: int = 0


@dataclass(frozen=True, slots=True)
class AckError:
    """One ERR segment: the location (None when it is the whole message), the 0357 code, the user message."""

    code: ErrorCode
    message: str
    location: ErrorLocation | None = None


@dataclass(frozen=True, slots=True)
class MshHeader:
    """The received MSH as the ACK and the listener need it: every field as sent (ISO-8859-1 text)."""

    field_separator: str
    encoding_characters: str
    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    message_type: str  # MSH-9.1
    trigger: str  # MSH-9.2
    control_id: str  # MSH-10
    processing_id: str  # MSH-11 as sent (its first component is the processing id)
    version: str  # MSH-12 as sent (its first component is the version id)
    accept_ack_type: str  # MSH-15
    application_ack_type: str  # MSH-16

    @property
    def component_separator(self) -> str:
        return self.encoding_characters[0]

    @property
    def version_id(self) -> str:
        return self.version.split(self.component_separator, 1)[0]

    @property
    def processing(self) -> str:
        return self.processing_id.split(self.component_separator, 1)[0]

    @property
    def enhanced_mode(self) -> bool:
        """HL7 v2.5 2.9.3: enhanced acknowledgement when MSH-15 or MSH-16 is valued; original otherwise."""
        return bool(self.accept_ack_type or self.application_ack_type)


def read_header(head: bytes) -> MshHeader | None:
    """The MSH of a message from its first bytes (at most HEADER_BYTES are looked at), or None when they do
    not begin with an MSH segment that ends within them: no ACK can be addressed then."""
    text = bytes(head[:HEADER_BYTES]).decode(CHARSET)
    text = text.lstrip("\r\n")
    ends = [i for i in (text.find("\r"), text.find("\n")) if i >= 0]
    if not text.startswith("MSH") or not ends or len(text) < 8:
        return None
    segment = text[: min(ends)]
    if len(segment) < 8:  # MSH, the field separator and four encoding characters at least
        return None
    separator = segment[3]
    if separator.isalnum() or separator in " \r\n":
        return None
    fields = segment.split(separator)
    encoding = fields[1] if len(fields) > 1 else ""
    if len(encoding) < 4 or separator in encoding or len(set(encoding[:4])) < 4:
        return None

    def msh(n: int) -> str:  # MSH-n: MSH-1 is the separator itself, so MSH-n is fields[n - 1]
        return fields[n - 1] if len(fields) > n - 1 else ""

    message_type = msh(9).split(encoding[0])
    return MshHeader(
        field_separator=separator,
        encoding_characters=encoding,
        sending_application=msh(3),
        sending_facility=msh(4),
        receiving_application=msh(5),
        receiving_facility=msh(6),
        message_type=message_type[0],
        trigger=message_type[1] if len(message_type) > 1 else "",
        control_id=msh(10),
        processing_id=msh(11),
        version=msh(12),
        accept_ack_type=msh(15),
        application_ack_type=msh(16),
    )


def escape(text: str, header: MshHeader) -> str:
    """Text made safe for an ER7 field with the message's delimiters (HL7 v2.5 2.7.4: \\F\\ \\S\\ \\T\\ \\R\\
    \\E\\); line breaks become spaces (a segment ends at one)."""
    separator = header.field_separator
    component, repetition, escape_char, subcomponent = tuple(header.encoding_characters[:4])
    swaps = {
        escape_char: f"{escape_char}E{escape_char}",
        separator: f"{escape_char}F{escape_char}",
        component: f"{escape_char}S{escape_char}",
        subcomponent: f"{escape_char}T{escape_char}",
        repetition: f"{escape_char}R{escape_char}",
        "\r": " ",
        "\n": " ",
    }
    return "".join(swaps.get(char, char) for char in text)


def cut_at_a_word(text: str, limit: int, header: MshHeader) -> str:
    """`text` escaped (`escape`) in at most `limit` characters: whole if it fits, else cut at the last word
    boundary that leaves room for an ellipsis (a single word longer than that is cut inside it)."""
    whole = escape(text, header)
    if len(whole) <= limit:
        return whole
    words = text.split(" ")
    for count in range(len(words) - 1, 0, -1):
        shorter = escape(" ".join(words[:count]).rstrip(" ,;:("), header) + ELLIPSIS
        if len(shorter) <= limit:
            return shorter
    room = limit - len(ELLIPSIS)
    while len(escaped := escape(text[:room], header)) > limit - len(ELLIPSIS):
        room -= 1
    return escaped + ELLIPSIS


def _timestamp(now: datetime) -> str:
    """DTM with seconds and the zone offset: YYYYMMDDHHMMSS+ZZZZ."""
    return now.strftime("%Y%m%d%H%M%S%z")


def _err(error: AckError, header: MshHeader) -> str:
    f, c = header.field_separator, header.component_separator
    where = error.location
    location = ""
    if where is not None:
        parts = [where.segment, where.sequence, where.field, where.repetition, where.component, where.subcomponent]
        location = c.join("" if not p else str(p) for p in parts).rstrip(c)
    code, text = error.code.value, error.code.text
    user_message = escape(error.message, header)
    return f"ERR{f}{f}{location}{f}{code}{c}{text}{c}HL70357{f}E{f}{f}{f}{f}{user_message}"


def _err_1(error: AckError, header: MshHeader) -> str:
    """The v2.3/v2.4 ERR: ERR-1 alone (segment ^ sequence ^ field ^ code&text&HL70357)."""
    f, c = header.field_separator, header.component_separator
    sub = header.encoding_characters[3]
    where = error.location
    place = [where.segment, str(where.sequence or 1), str(where.field or "")] if where else ["", "", ""]
    code, text = error.code.value, error.code.text
    return f"ERR{f}{c.join([*place, sub.join([code, text, 'HL70357'])])}"


def build_ack(
    header: MshHeader, code: AckCode, control_id: str, now: datetime, errors: tuple[AckError, ...] = ()
) -> bytes:
    """The ACK of a message in ER7 (segments ended by CR, as HL7 v2 says), ISO-8859-1 bytes. `control_id` is
    the ACK's own MSH-10; MSA-2 is the message's."""
    f, c = header.field_separator, header.component_separator
    msh = f.join(
        [
            "MSH",
            header.encoding_characters,
            header.receiving_application,
            header.receiving_facility,
            header.sending_application,
            header.sending_facility,
            _timestamp(now),
            "",
            f"ACK{c}{header.trigger}" if header.version_id in TWO_COMPONENT_MSH_9 else f"ACK{c}{header.trigger}{c}ACK",
            control_id,
            header.processing_id,
            header.version,
        ]
    )
    msa = f"MSA{f}{code.value}{f}{header.control_id}"
    if header.version_id in ERR_1_VERSIONS:
        if errors:
            msa += f + cut_at_a_word(errors[0].message, MSA_3_LENGTH, header)
        segments = [msh, msa, *(_err_1(e, header) for e in errors)]
    else:
        segments = [msh, msa, *(_err(e, header) for e in errors)]
    return ("\r".join(segments) + "\r").encode(CHARSET, errors="replace")
