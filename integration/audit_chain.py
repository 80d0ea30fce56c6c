"""The audit log's hash chain, pure: each record carries the hash of the one before it.

A record's hash covers its sequence number, time, step, flow, message id, patient and detail,
and the previous record's hash, so changing, inserting or deleting any record breaks the chain
from that point; `verify` says where.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

GENESIS = "0" * 64


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One step to record. `patient` is the CPR number, or None: the audit log is the one place that holds it."""

    step: str
    flow: str
    message_id: str
    detail: Mapping[str, Any] = field(default_factory=dict)
    patient: str | None = None


@dataclass(frozen=True, slots=True)
class AuditRecord:
    seq: int
    at: str
    step: str
    flow: str
    message_id: str
    patient: str | None
    detail: Mapping[str, Any]
    prev_hash: str
    hash: str


def record_hash(seq: int, at: str, entry: AuditEntry, prev_hash: str) -> str:
    content = orjson.dumps(
        {
            "seq": seq,
            "at": at,
            "step": entry.step,
            "flow": entry.flow,
            "messageId": entry.message_id,
            "patient": entry.patient,
            "detail": entry.detail,
            "prev": prev_hash,
        },
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(content).hexdigest()


def chain(entries: Iterable[AuditEntry], after_seq: int, after_hash: str, at: str) -> list[AuditRecord]:
    """Records for `entries`, continuing the chain after the record (`after_seq`, `after_hash`)."""
    records, prev = [], after_hash
    for seq, entry in enumerate(entries, start=after_seq + 1):
        digest = record_hash(seq, at, entry, prev)
        records.append(
            AuditRecord(
                seq, at, entry.step, entry.flow, entry.message_id, entry.patient, dict(entry.detail), prev, digest
            )
        )
        prev = digest
    return records


@dataclass(frozen=True, slots=True)
class ChainBreak:
    seq: int
    problem: str


def verify(records: Iterable[AuditRecord], head: tuple[int, str] | None = None) -> ChainBreak | None:
    """The first place where the stored chain is broken, or None when it is whole.

    `head` is the (seq, hash) the store keeps of its last record; it reveals records cut off the end.
    """
    expected_seq, prev = 1, GENESIS
    for record in records:
        if record.seq != expected_seq:
            return ChainBreak(record.seq, f"record {expected_seq} is missing (found {record.seq} next)")
        if record.prev_hash != prev:
            return ChainBreak(record.seq, "does not follow the record before it (inserted, or one before was deleted)")
        entry = AuditEntry(record.step, record.flow, record.message_id, record.detail, record.patient)
        if record_hash(record.seq, record.at, entry, record.prev_hash) != record.hash:
            return ChainBreak(record.seq, "its content was changed after it was written")
        expected_seq, prev = record.seq + 1, record.hash
    if head is not None and head != (expected_seq - 1, prev):
        return ChainBreak(
            head[0], f"the log ends at record {expected_seq - 1}, but record {head[0]} was the last written"
        )
    return None
