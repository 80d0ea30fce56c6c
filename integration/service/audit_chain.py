"""The audit log's hash chain, pure: each record carries the hash of the one before it.

A record's hash covers its sequence number, time, step, flow, message id, patient and detail,
the digests of the state rows its transaction left (`state`, when it changed any), and the
previous record's hash, so changing, inserting or deleting any record breaks the chain from that
point; `verify` says where. A record may also carry an HMAC of its hash (`mac`, "key-id:hex",
made with a key kept outside the database): it is not part of the hash, it vouches for it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
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
    state: Mapping[str, Mapping[str, str]] | None = None  # table → key digest → row digest, as left
    mac: str | None = None  # "key-id:HMAC-SHA256(key, key-id:hash)", when a key was configured


def record_hash(
    seq: int, at: str, entry: AuditEntry, prev_hash: str, state: Mapping[str, Mapping[str, str]] | None = None
) -> str:
    content: dict[str, Any] = {
        "seq": seq,
        "at": at,
        "step": entry.step,
        "flow": entry.flow,
        "messageId": entry.message_id,
        "patient": entry.patient,
        "detail": entry.detail,
        "prev": prev_hash,
    }
    if state is not None:  # absent from records written before the state was covered: their hashes stand
        content["state"] = state
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()


def chain(
    entries: Sequence[AuditEntry],
    after_seq: int,
    after_hash: str,
    at: str,
    state: Mapping[str, Mapping[str, str]] | None = None,
    sign: Callable[[str], str] | None = None,
) -> list[AuditRecord]:
    """Records for `entries`, continuing the chain after the record (`after_seq`, `after_hash`).

    `state`, the digests of the rows the transaction left, goes with the last record; `sign`, when
    given, makes each record's HMAC from its hash."""
    records, prev = [], after_hash
    last = after_seq + len(entries)
    for seq, entry in enumerate(entries, start=after_seq + 1):
        rows = state if seq == last and state else None
        digest = record_hash(seq, at, entry, prev, rows)
        records.append(
            AuditRecord(
                seq,
                at,
                entry.step,
                entry.flow,
                entry.message_id,
                entry.patient,
                dict(entry.detail),
                prev,
                digest,
                rows,
                sign(digest) if sign else None,
            )
        )
        prev = digest
    return records


# The type of each column of a record (and of the head) as the service writes it: (field, accepted types,
# what the service writes there, as a finding says it). `detail` and `state` are JSON the store decodes.
_WHOLE_NUMBER = ((int,), "a whole number")
_TEXT = ((str,), "text")
_TEXT_OR_NULL = ((str, type(None)), "text or NULL")
RECORD_TYPES: tuple[tuple[str, tuple[type, ...], str], ...] = tuple(
    (name, *kind)
    for name, kind in (
        ("seq", _WHOLE_NUMBER),
        ("at", _TEXT),
        ("step", _TEXT),
        ("flow", _TEXT),
        ("message_id", _TEXT),
        ("patient", _TEXT_OR_NULL),
        ("prev_hash", _TEXT),
        ("hash", _TEXT),
        ("mac", _TEXT_OR_NULL),
    )
)
HEAD_TYPES = (("seq", *_WHOLE_NUMBER), ("hash", *_TEXT))
_HELD = {
    bytes: "a blob",
    bytearray: "a blob",
    memoryview: "a blob",
    str: "text",
    type(None): "NULL",
    float: "a real number",
}


def whole_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _held(value: Any) -> str:
    """What a column holds, as a finding names it; never the value itself (a patient's column holds a CPR number)."""
    if whole_number(value):
        return "a whole number"
    return _HELD.get(type(value), f"a value of type {type(value).__name__}")


def _wrong_type(values: Sequence[tuple[str, Any]], types: Sequence[tuple[str, tuple[type, ...], str]]) -> str | None:
    for (name, value), (_, accepted, written) in zip(values, types, strict=True):
        if not isinstance(value, accepted) or isinstance(value, bool):
            return f"its {name} holds {_held(value)}, not {written} (written outside the service)"
    return None


def malformed(record: AuditRecord) -> str | None:
    """Why the record cannot be one the service wrote, by the type of a column (`RECORD_TYPES`: the first
    column of another type), or None. Such a record is not hashed, replayed or anchored: it is a finding.
    Asked of every record `verify` reads (twice: the chain walk and the evidence), so the usual answer is the
    one quick test of `_as_written`."""
    if _as_written(record):
        return None
    return _wrong_type([(name, getattr(record, name)) for name, _, _ in RECORD_TYPES], RECORD_TYPES)


def _as_written(record: AuditRecord) -> bool:
    """`RECORD_TYPES` in one expression (`type(…) is`: a bool is no whole number, a str subclass no text)."""
    return (
        type(record.seq) is int
        and type(record.at) is str
        and type(record.step) is str
        and type(record.flow) is str
        and type(record.message_id) is str
        and (record.patient is None or type(record.patient) is str)
        and type(record.prev_hash) is str
        and type(record.hash) is str
        and (record.mac is None or type(record.mac) is str)
    )


def malformed_head(head: tuple[Any, Any]) -> str | None:
    """Why the chain's head (seq, hash) cannot be one the service wrote (`HEAD_TYPES`), or None."""
    return _wrong_type(list(zip(("seq", "hash"), head, strict=True)), HEAD_TYPES)


def place(seq: Any, after: int) -> str:
    """How a finding names a record: by its seq, or, when that is no whole number, by where it was read
    (after record `after`, the last whole seq read before it)."""
    if whole_number(seq):
        return f"record {seq}"
    return f"the record read after record {after}" if after else "the first record read"


def first_malformed(records: Iterable[AuditRecord]) -> tuple[str, str] | None:
    """(where, why) of the first `malformed` record, in the order given; None when every record has its types."""
    after = 0
    for record in records:
        if (problem := malformed(record)) is not None:
            return place(record.seq, after), problem
        after = record.seq
    return None


@dataclass(frozen=True, slots=True)
class ChainBreak:
    seq: int  # the record's; for a record whose seq is no whole number, the one expected where it was read
    problem: str
    where: str = ""  # how a finding names the record, when not "record <seq>"

    def place(self) -> str:
        return self.where or f"record {self.seq}"


class ChainWalk:
    """`verify` one record at a time, for a log read as a stream (its memory does not grow with the log):
    `add` each record in chain order, then `end` with the head."""

    def __init__(self) -> None:
        self.expected_seq, self.prev = 1, GENESIS
        self.broken: ChainBreak | None = None

    def add(self, record: AuditRecord) -> None:
        """Check the next record; after the first break the rest are not checked (they follow a broken chain)."""
        if self.broken is None:
            self.broken = _break(record, self.expected_seq, self.prev)
        if self.broken is None:
            self.expected_seq, self.prev = record.seq + 1, record.hash

    def end(self, head: tuple[int, str] | None = None) -> ChainBreak | None:
        """The first break, or where the head says records were cut off the end (or the head itself, when it
        is `malformed_head`), or None when whole."""
        if self.broken is not None or head is None or head == (self.expected_seq - 1, self.prev):
            return self.broken
        if (problem := malformed_head(head)) is not None:
            return ChainBreak(self.expected_seq - 1, problem, "the head")
        last = self.expected_seq - 1
        return ChainBreak(head[0], f"the log ends at record {last}, but record {head[0]} was the last written")


def _break(record: AuditRecord, expected_seq: int, prev: str) -> ChainBreak | None:
    if (problem := malformed(record)) is not None:
        seq = record.seq if whole_number(record.seq) else expected_seq
        return ChainBreak(seq, problem, place(record.seq, expected_seq - 1))
    if record.seq != expected_seq:
        return ChainBreak(record.seq, f"record {expected_seq} is missing (found {record.seq} next)")
    if record.prev_hash != prev:
        return ChainBreak(record.seq, "does not follow the record before it (inserted, or one before was deleted)")
    entry = AuditEntry(record.step, record.flow, record.message_id, record.detail, record.patient)
    if record_hash(record.seq, record.at, entry, record.prev_hash, record.state) != record.hash:
        return ChainBreak(record.seq, "its content was changed after it was written")
    return None


def verify(records: Iterable[AuditRecord], head: tuple[int, str] | None = None) -> ChainBreak | None:
    """The first place where the stored chain is broken, or None when it is whole.

    `head` is the (seq, hash) the store keeps of its last record; it reveals records cut off the end.
    Reads `records` once, in order, holding none of them.
    """
    walk = ChainWalk()
    for record in records:
        walk.add(record)
        if walk.broken is not None:
            return walk.broken
    return walk.end(head)
