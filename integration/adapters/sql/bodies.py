"""The outgoing messages' bodies (`output_body`, schema 8): each stored once, as bytes, keyed by its SHA-256,
zlib-compressed when that saves at least a quarter (docs/decisions/0032-outputs-stored-once.md).

A processed message's outputs (`processed_message.outputs`) and our messages awaiting an ack
(`outbound_message.output`) name their body by that digest (`bodySha256`) instead of holding it as escaped
JSON text, so a Bundle is stored once where it was stored twice. Rows written before schema 8 hold their
bodies inline (`body`) and are read as they are. A body is given back exactly as it was published (decision
6): one whose bytes do not hash to its key, or whose encoding the service does not write, is StoreDamaged.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from integration.adapters.sql.audit_state import StateDigests
from integration.adapters.sql.unit_of_work import UnitOfWork
from integration.errors import StoreDamaged
from integration.flows.results import FHIR_JSON
from integration.service.ports import StoredOutput

COMPRESS_LEVEL = 1  # a referral Bundle (≈11 kB): ≈2.9 kB in ≈70 µs; level 6 saves 0.3 kB more in ≈3× the time
WORTH_IT = 0.75  # compressed when it is at most this share of the body
DECODERS: Mapping[str, Callable[[bytes], bytes]] = {"identity": bytes, "zlib": zlib.decompress}
READ_CHUNK = 500  # digests per SELECT


def body_sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def encode(body: bytes) -> tuple[str, bytes]:
    """(encoding, stored bytes): zlib when it pays (`WORTH_IT`), the body itself otherwise."""
    packed = zlib.compress(body, COMPRESS_LEVEL)
    return ("zlib", packed) if len(packed) <= WORTH_IT * len(body) else ("identity", body)


def decode(digest: str, encoding: str, stored: bytes) -> bytes:
    """The body as published; StoreDamaged when the row is not one the service wrote."""
    decoder = DECODERS.get(encoding)
    if decoder is None:
        raise StoreDamaged(f"an outgoing body in the audit store has an encoding the service does not write: {digest}")
    try:
        body = decoder(bytes(stored))
    except zlib.error:
        body = b""
    if body_sha256(body) != digest:
        raise StoreDamaged(f"an outgoing body in the audit store does not match its digest (changed?): {digest}")
    return body


def reference(output: StoredOutput) -> dict[str, Any]:
    """An output as the tables hold it from schema 8: its body named by digest (stored in `output_body`)."""
    doc = output.as_json()
    del doc["body"]
    return doc | {"bodySha256": body_sha256(output.body)}


def wanted(docs: Iterable[Mapping[str, Any]]) -> set[str]:
    """The digests of the bodies these stored outputs name (those with their body inline name none)."""
    return {str(doc["bodySha256"]) for doc in docs if "body" not in doc}


def stored_output(doc: Mapping[str, Any], bodies: Mapping[str, bytes]) -> StoredOutput:
    """A stored output, inline (before schema 8) or by reference, its body from `bodies` (by digest);
    StoreDamaged when the body it names is not there."""
    if "body" in doc:
        return StoredOutput.from_json(dict(doc))
    digest = str(doc["bodySha256"])
    if digest not in bodies:
        raise StoreDamaged(f"an outgoing body named in the audit store is not there (deleted?): {digest}")
    return StoredOutput(
        doc["exchange"],
        doc["routingKey"],
        doc["messageId"],
        bodies[digest],
        doc.get("contentType", FHIR_JSON),
        doc.get("awaitsAck"),
        doc.get("patient"),
    )


class OutputBodies:
    def __init__(self, unit: UnitOfWork) -> None:
        self._unit = unit

    def save(self, cursor: Any, bodies: Iterable[bytes]) -> StateDigests:
        """Store the bodies not stored yet; the digests of the rows inserted."""
        rows = [(body_sha256(body), *encode(body)) for body in bodies]
        return {"output_body": self._unit.insert_new(cursor, "output_body", rows)} if rows else {}

    def load(self, cursor: Any, digests: Collection[str]) -> dict[str, bytes]:
        """The bodies with these digests, as published (absent ones left out)."""
        found: dict[str, bytes] = {}
        ordered = sorted(digests)
        for start in range(0, len(ordered), READ_CHUNK):
            chunk = ordered[start : start + READ_CHUNK]
            marks = ", ".join("?" * len(chunk))
            query = f"SELECT body_sha256, encoding, body FROM output_body WHERE body_sha256 IN ({marks})"
            cursor.execute(self._unit.sql(query), tuple(chunk))
            found.update((digest, decode(digest, encoding, stored)) for digest, encoding, stored in cursor.fetchall())
        return found
