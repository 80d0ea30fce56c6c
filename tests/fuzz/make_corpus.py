"""Writes the committed seed corpus: `python -m tests.fuzz.make_corpus` (tests/fuzz/corpus/<target>/).

Seeds are the golden inputs of each entry (tests/golden) and a few small hand-made ones that reach the
readers' edges: empty and wrong-typed documents, a byte order mark, duplicate keys, UTF-16, a DTD with an
entity. Nothing is copied from ../shared. libFuzzer adds what it finds to a work folder, not to these.
"""

from __future__ import annotations

import hashlib
import shutil

from tests.fuzz.harness import CORPUS, ENTRIES, golden_seeds

JSON_EDGES = [b"{}", b"[]", b"null", b'{"resourceType":"Bundle"}', b'{"a":1,"a":2}', b"\xef\xbb\xbf{}", b"1e400"]
XML_EDGES = [
    b"<a/>",
    b'<Bundle xmlns="http://hl7.org/fhir"/>',
    b'<!DOCTYPE a [<!ENTITY e "x">]><a>&e;</a>',
    b'<?xml version="1.0" encoding="UTF-16"?><a/>'.decode().encode("utf-16"),
    b"\xef\xbb\xbf<a/>",
]
ER7_EDGES = [
    b"MSH|^~\\&|",
    b"MSH|^~\\&|||||||ADT^A03|1|P|2.5\rPID|1||\\X\\",
    b'MSH|^~\\&|||||||ADT^A13|1|P|2.5|||||||8859/1\nPID|1||""',
    b"MSH#:*!@#####ADT:A03#1#P#2.5\r\nZRH#a!F!b*c",
    # escapes that merely begin like a defined one, malformed hex, counts beyond int()'s digit limit,
    # controls and bidirectional controls they decode to; envelopes and what may precede MSH
    b"MSH|^~\\&|||||||ADT^A03|1|P|2.5\rPID|1||||B\\Fxyz\\g^\\EE\\~\\X41ZZ\\&\\X414\\",
    b"MSH|^~\\&|||||||ADT^A03|1|P|2.5\rPID|1||||B\\.sp" + b"9" * 5000 + b"\\^\\.in+" + b"9" * 5000 + b"\\",
    b"MSH|^~\\&|||||||ADT^A03|1|P|2.5\rPID|1||||B\\X07\\\\X0D\\\\.br\\\xe2\x80\xae\xc2\x85",
    b"\xef\xbb\xbf\r\n MSH|^~\\&|||||||ADT^A03|1|P^A|2.5\rPID|1\rPID|2",
    b"FHS|^~\\&|\rBHS|^~\\&|\rMSH|^~\\&|||||||ADT^A03|1|P|2.5\rBTS|1\rFTS|1",
    b"EVN|A03\rMSH|^~\\&|||||||ADT^A11^ADT_A01|1|P|2.5",
]
CLOSING_EDGES = [b'<ClosingReport xmlns="urn:dk:hjerterehab:closing-report:1"/>']


def _variants(seed: bytes) -> list[bytes]:
    """A golden seed as it is, with a byte order mark, and (JSON) with its first key repeated."""
    found = [seed, b"\xef\xbb\xbf" + seed]
    if seed.lstrip()[:1] == b"{":
        body = seed.lstrip()[1:]
        first_pair = body.split(b",", 1)[0]
        found.append(b"{" + first_pair + b"," + body)
    elif seed.lstrip()[:1] == b"<":
        found.append(seed.decode("utf-8").replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16"))
    return found


def main() -> None:
    for name, entry in ENTRIES.items():
        folder = CORPUS / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        seeds = golden_seeds(entry)
        hand_made = [v for s in seeds[:1] for v in _variants(s)[1:]]
        if name in ("care_communication_xml", "closing_report"):
            hand_made += XML_EDGES + (CLOSING_EDGES if name == "closing_report" else [])
        elif name == "hl7_adt":
            hand_made += ER7_EDGES
        elif name == "validate":
            hand_made += JSON_EDGES + XML_EDGES + [b'{"resourceType":"Bundle","type":"message","entry":[{}]}']
        else:
            hand_made += JSON_EDGES
        for seed in seeds + hand_made:
            (folder / hashlib.sha1(seed).hexdigest()).write_bytes(seed)


if __name__ == "__main__":
    main()
