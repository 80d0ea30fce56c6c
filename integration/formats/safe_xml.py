"""Parsing XML from outside, hardened: no DTD, no entities, no network, a size cap; a DOCTYPE is refused.

Refusing any DOCTYPE before parsing defeats external entities (XXE) and entity bombs alike, in
bounded time and memory.

Encodings: UTF-8, with or without a byte order mark, and UTF-16 (little- or big-endian) with its byte
order mark, the two every XML processor must read (XML 1.0 §4.3.3). An encoding declaration, if any,
must name the encoding the bytes are in; UTF-16 without its mark, UTF-32 and every other encoding are
refused, naming it. Characters: XML 1.0 itself refuses the C0 controls but tab, CR and LF, lone
surrogates and U+FFFE/U+FFFF, written or as a character reference (`&#7;`: libxml2's "invalid xmlChar
value"): the same characters JSON inputs may not carry (`json_contract.FORBIDDEN`).
"""

from __future__ import annotations

import re

from lxml import etree

from integration.errors import InvalidInput
from integration.formats.syntax import sniff
from integration.log import mask_cpr, one_line

_DECLARED = re.compile(r"""\A<\?xml\s[^>]*?\bencoding\s*=\s*["']([A-Za-z][A-Za-z0-9._-]*)["']""")
# What a declaration may name for the encoding the bytes are in (XML 1.0 §4.3.3: "UTF-16" with its mark).
_MAY_DECLARE = {
    "UTF-8": {"utf-8", "utf8"},
    "UTF-16LE": {"utf-16", "utf-16le"},
    "UTF-16BE": {"utf-16", "utf-16be"},
}


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


def _check_encoding(raw: bytes) -> tuple[str, int]:
    """(encoding, length of its byte order mark); InvalidInput when it is not one we read or not the one declared."""
    sniffed = sniff(raw)
    allowed = _MAY_DECLARE.get(sniffed.encoding)
    if allowed is None or (sniffed.encoding != "UTF-8" and not sniffed.bom):
        shown = sniffed.encoding + ("" if sniffed.bom else " without a byte order mark")
        raise InvalidInput("", f"XML must be UTF-8, or UTF-16 with a byte order mark; this is {shown}")
    declared = _DECLARED.match(sniffed.head)
    if declared and not any(declared.group(1).lower() in names for names in _MAY_DECLARE.values()):
        shown = one_line(declared.group(1), 24)  # masked before it is cut: a cut never leaves part of a CPR
        raise InvalidInput("", f"XML must be UTF-8, or UTF-16 with a byte order mark; the declaration names {shown}")
    if declared and declared.group(1).lower() not in allowed:
        shown = one_line(declared.group(1), 24)
        raise InvalidInput("", f"the XML declaration names encoding {shown}, but the bytes are {sniffed.encoding}")
    return sniffed.encoding, sniffed.bom


def _has_doctype(raw: bytes, encoding: str, bom: int) -> bool:
    if encoding == "UTF-8":
        return b"<!doctype" in raw.lower()
    return "<!doctype" in raw[bom:].decode(encoding, errors="replace").lower()


def _parser_message(exc: etree.XMLSyntaxError) -> str:
    """libxml2's message on one line, with anything CPR-shaped masked: it quotes element and attribute names
    from the input, which a sender may have filled with anything."""
    return one_line(mask_cpr(str(exc.msg)), 200)


def parse_xml(raw: bytes, max_bytes: int) -> etree._Element:
    """Bytes → the root element (InvalidInput: too large, an encoding we do not read, a DOCTYPE, malformed)."""
    if len(raw) > max_bytes:
        raise InvalidInput("", f"payload too large: {len(raw)} bytes, the limit is {max_bytes}")
    encoding, bom = _check_encoding(raw)
    if _has_doctype(raw, encoding, bom):
        raise InvalidInput("", "a DOCTYPE is not allowed in a message")
    try:
        root = etree.fromstring(raw, _parser())
    except etree.XMLSyntaxError as exc:
        raise InvalidInput("", f"malformed XML: {_parser_message(exc)}") from None
    if root.getroottree().docinfo.doctype:
        raise InvalidInput("", "a DOCTYPE is not allowed in a message")
    return root
