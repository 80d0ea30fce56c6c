"""One content digest of an HL7 v2 ER7 message: equal for two copies that say the same, whatever a sender's
engine changed when it sent the message again.

A resend is not always byte for byte the first copy: engines end segments with CR (HL7 v2.5 §2.7), CRLF or
LF; they drop or keep trailing delimiters (an empty trailing field, component, repetition or sub-component
means the same as an absent one: §2.5.3, "trailing delimiters may be omitted"); and some re-stamp MSH-7 (the
date/time of the message) on every send. `content_digest` is the SHA-256 of the message with the segment
terminators made CR, blank lines dropped, every trailing delimiter stripped at each level, and MSH-7 emptied;
everything else, MSH-10 and every patient field among it, must match. Bytes are read as ISO-8859-1, so the
digest is the same whatever the message's charset (MSH-18) and never fails to decode.

A body that does not begin with a readable MSH has no ER7 digest (`content_digest` is None); the callers
then keep the raw SHA-256.
"""

from __future__ import annotations

import hashlib
import re

CHARSET = "latin-1"
_TERMINATOR = re.compile(r"\r\n|\n|\r")
MSH_7 = 7


def content_digest(raw: bytes) -> str | None:
    """The hex SHA-256 of the normalised message (see the module), or None when `raw` is not ER7 beginning
    with an MSH whose separator and encoding characters can be read."""
    text = raw.removeprefix(b"\xef\xbb\xbf").decode(CHARSET).strip("\r\n")
    segments = [s for s in _TERMINATOR.split(text) if s]
    if not segments or not segments[0].startswith("MSH") or len(segments[0]) < 8:
        return None
    separator, rest = segments[0][3], segments[0][4:]
    encoding, _, _ = rest.partition(separator)
    if len(encoding) < 4 or separator.isalnum() or len(set(encoding[:4] + separator)) < 5:
        return None
    delimiters = (separator, encoding[1], encoding[0], encoding[3])  # field, repetition, component, sub
    normalised = [_msh(segments[0], separator, encoding, delimiters)]
    normalised += [_stripped(segment, delimiters) for segment in segments[1:]]
    return hashlib.sha256("\r".join(normalised).encode(CHARSET)).hexdigest()


def _msh(segment: str, separator: str, encoding: str, delimiters: tuple[str, ...]) -> str:
    """The MSH with MSH-7 emptied; MSH-1 and MSH-2 (the delimiters themselves) are kept as they are."""
    fields = segment[4 + len(encoding) :].split(separator)  # fields[1] is MSH-3
    if len(fields) > MSH_7 - 2:
        fields[MSH_7 - 2] = ""
    body = _stripped(separator.join(fields), delimiters)
    return f"MSH{separator}{encoding}{body}"


def _stripped(text: str, delimiters: tuple[str, ...]) -> str:
    """`text` with trailing empty parts removed at every level (fields, repetitions, components,
    sub-components)."""
    if not delimiters:
        return text
    first, deeper = delimiters[0], delimiters[1:]
    parts = [_stripped(part, deeper) for part in text.split(first)]
    while len(parts) > 1 and parts[-1] == "":
        parts.pop()
    return first.join(parts)
