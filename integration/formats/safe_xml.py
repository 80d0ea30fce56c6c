"""Parsing XML from outside, hardened: no DTD, no entities, no network, a size cap; a DOCTYPE is refused.

Refusing any DOCTYPE before parsing defeats external entities (XXE) and entity bombs alike, in
bounded time and memory.
"""

from __future__ import annotations

from lxml import etree

from integration.errors import InvalidInput


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


def parse_xml(raw: bytes, max_bytes: int) -> etree._Element:
    if len(raw) > max_bytes:
        raise InvalidInput("", f"payload too large: {len(raw)} bytes, the limit is {max_bytes}")
    if b"<!doctype" in raw.lower():
        raise InvalidInput("", "a DOCTYPE is not allowed in a message")
    try:
        root = etree.fromstring(raw, _parser())
    except etree.XMLSyntaxError as exc:
        raise InvalidInput("", f"malformed XML: {exc.msg}") from None
    if root.getroottree().docinfo.doctype:
        raise InvalidInput("", "a DOCTYPE is not allowed in a message")
    return root
