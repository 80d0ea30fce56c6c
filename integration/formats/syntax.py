"""Which syntax inbound bytes are in, JSON or XML, and in which Unicode encoding: the one sniffer every reader uses.

The encoding is read from a byte order mark, else from the pattern of zero bytes in the first four (the
first character of a JSON or XML text is ASCII: RFC 8259 §8.1 (its 4627 predecessor, §3) and XML 1.0
Appendix F). The syntax is then the first character that is not white space, in that encoding: `<` is
XML, anything else is JSON (which its reader refuses when it is not).

What each reader then accepts: JSON only in UTF-8, a UTF-8 BOM tolerated (RFC 8259 §8.1;
`json_contract.decode_json` refuses UTF-16 and UTF-32 naming the encoding); XML in UTF-8 (BOM or
not) or UTF-16 with its BOM, the encoding declaration agreeing (XML 1.0 §4.3.3; `safe_xml.parse_xml`).
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from enum import Enum

_BOMS = (  # longest first: the UTF-32LE mark begins with the UTF-16LE one
    (codecs.BOM_UTF32_LE, "UTF-32LE"),
    (codecs.BOM_UTF32_BE, "UTF-32BE"),
    (codecs.BOM_UTF8, "UTF-8"),
    (codecs.BOM_UTF16_LE, "UTF-16LE"),
    (codecs.BOM_UTF16_BE, "UTF-16BE"),
)
_WHITE_SPACE = " \t\r\n"  # the same four in JSON (RFC 8259 §2) and XML (production S)
HEAD_BYTES = 4096  # enough for an XML declaration and a root element with its namespaces


class Syntax(Enum):
    JSON = "JSON"
    XML = "XML"


@dataclass(frozen=True, slots=True)
class Sniffed:
    """What the bytes are: `encoding` as Python's codec names it ('UTF-8', 'UTF-16LE', …), `bom` the byte
    order mark's length (0: none), `head` the first HEAD_BYTES decoded (for a root element's namespace)."""

    syntax: Syntax
    encoding: str
    bom: int
    head: str


def _encoding(raw: bytes) -> tuple[str, int]:
    for mark, name in _BOMS:
        if raw.startswith(mark):
            return name, len(mark)
    first = raw[:4]
    if len(first) == 4 and first[:3] == b"\0\0\0":
        return "UTF-32BE", 0
    if len(first) == 4 and first[1:] == b"\0\0\0":
        return "UTF-32LE", 0
    if len(first) >= 2 and first[0] == 0:
        return "UTF-16BE", 0
    if len(first) >= 2 and first[1] == 0:
        return "UTF-16LE", 0
    return "UTF-8", 0


def sniff(raw: bytes) -> Sniffed:
    """Classify `raw` as JSON or XML after any byte order mark and white space; never raises. Empty or blank
    input is JSON (its reader says what is wrong)."""
    encoding, bom = _encoding(raw)
    head = raw[bom : bom + HEAD_BYTES].decode(encoding, errors="replace")
    syntax = Syntax.XML if head.lstrip(_WHITE_SPACE)[:1] == "<" else Syntax.JSON
    return Sniffed(syntax, encoding, bom, head)
