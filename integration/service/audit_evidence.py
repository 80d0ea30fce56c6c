"""What `audit verify` examines beyond the hash chain, pure: HMAC keys, anchors of the chain head,
the state rows the chain covers; and the examination itself, one finding per line.

The chain alone proves only that the records agree with each other: whoever can rewrite the table
can recompute it, cut its tail off and fix the head, or append a record with a correct hash. Three
layers reach outside the database (`docs/decisions/0015-audit-evidence.md`):

- anchors: the chain head (seq, hash) as the service published it, in its log and an anchor file;
  a cut-off tail or a record rewritten with the chain recomputed after it no longer matches;
- HMAC: each record's hash signed with a key the database does not hold; a forged record or a
  recomputed chain cannot be signed without it;
- state digests: each transaction's last record carries the digests of the covered rows it left;
  a row changed, inserted or deleted by anyone else no longer matches the chain.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import orjson

from integration.service.audit_chain import (
    GENESIS,
    AuditRecord,
    ChainWalk,
    malformed,
    place,
    whole_number,
)

MASKED = "<cpr>"  # the log's CPR mask may hit ten digits in a row of a hash: they then match any ten digits
KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
MIN_KEY_BYTES = 32
SHOWN_PER_KIND = 5  # findings of one kind shown before "and N more"


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing wrong with the evidence, and where: a record, a table, an anchor, the log as a whole."""

    where: str
    problem: str

    def line(self) -> str:
        return f"audit log BROKEN at {self.where}: {self.problem}"


@dataclass(slots=True)
class Problems:
    """The first `SHOWN_PER_KIND` findings of one kind, and how many more there were."""

    shown: list[Finding] = field(default_factory=list)
    skipped: int = 0

    def add(self, where: str, problem: str) -> None:
        if len(self.shown) < SHOWN_PER_KIND:
            self.shown.append(Finding(where, problem))
        else:
            self.skipped += 1

    def findings(self, where: str, more: str) -> list[Finding]:
        return [*self.shown, *([Finding(where, f"{self.skipped} {more}")] if self.skipped else [])]


# -- HMAC ------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class MacKeys:
    """HMAC-SHA256 keys by id; `current` signs new records, every key verifies (rotation keeps old ones)."""

    keys: Mapping[str, bytes]
    current: str

    @classmethod
    def parse(cls, text: str, current: str | None = None) -> MacKeys:
        """Lines of `<key id> <secret as hex, at least 32 bytes>`; `#` starts a comment. Raises ValueError."""
        keys: dict[str, bytes] = {}
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 2 or not KEY_ID.fullmatch(parts[0]):
                raise ValueError(f"line {number}: expected '<key id> <hex secret>' (id of letters, digits, . _ -)")
            try:
                secret = bytes.fromhex(parts[1])
            except ValueError:
                raise ValueError(f"line {number}: the secret is not hex") from None
            if len(secret) < MIN_KEY_BYTES:
                raise ValueError(f"line {number}: the secret is shorter than {MIN_KEY_BYTES} bytes")
            if parts[0] in keys:
                raise ValueError(f"line {number}: key id {parts[0]!r} given twice")
            keys[parts[0]] = secret
        if not keys:
            raise ValueError("no key in it")
        if current is None:
            if len(keys) > 1:
                raise ValueError("it holds several keys: set audit_hmac_key_id to the one that signs")
            current = next(iter(keys))
        if current not in keys:
            raise ValueError(f"it holds no key with the id {current!r} (audit_hmac_key_id)")
        return cls(keys, current)

    def sign(self, digest: str) -> str:
        return f"{self.current}:{_mac(self.keys[self.current], self.current, digest)}"

    def problem(self, mac: str, digest: str) -> str | None:
        """Why `mac` does not vouch for a record with this hash; None when it does."""
        key_id, _, value = mac.partition(":")
        if key_id not in self.keys:
            return f"its HMAC names key id {key_id!r}, which the key file does not hold"
        if not hmac.compare_digest(value, _mac(self.keys[key_id], key_id, digest)):
            return "its HMAC does not match its hash (a forged record, or the chain recomputed without the key)"
        return None


def _mac(key: bytes, key_id: str, digest: str) -> str:
    return hmac.new(key, f"{key_id}:{digest}".encode(), hashlib.sha256).hexdigest()


class MacCheck:
    """Every record from the first signed one on must carry a valid HMAC; one record at a time (`add`), then
    `result`. Holds the first problems only, and counts the rest."""

    def __init__(self, keys: MacKeys) -> None:
        self._keys = keys
        self._problems = Problems()
        self._first_signed: int | None = None
        self._used: set[str] = set()  # key ids that vouched for a record: only the file's, so few
        self._records = 0

    def add(self, record: AuditRecord) -> None:
        self._records += 1
        if record.mac is None:
            if self._first_signed is not None:
                self._problems.add(
                    f"record {record.seq}", "it carries no HMAC, though records before it do (written without the key)"
                )
            return
        self._first_signed = record.seq if self._first_signed is None else self._first_signed
        if (problem := self._keys.problem(record.mac, record.hash)) is not None:
            self._problems.add(f"record {record.seq}", problem)
        else:
            self._used.add(record.mac.partition(":")[0])

    def result(self) -> tuple[list[Finding], str]:
        """(findings, a summary)."""
        findings = self._problems.findings("HMAC", "more records fail their HMAC check")
        if self._records and self._first_signed is None:
            findings.append(
                Finding(
                    "HMAC", "no record carries an HMAC, though a key is configured (the chain rewritten without it?)"
                )
            )
        used = ", ".join(sorted(self._used))
        return findings, f"HMAC: records from {self._first_signed} on signed (key ids {used})" if used else ""


def check_macs(records: Iterable[AuditRecord], keys: MacKeys) -> tuple[list[Finding], str]:
    """`MacCheck` over every record: (findings, a summary)."""
    check = MacCheck(keys)
    for record in records:
        check.add(record)
    return check.result()


# -- anchors ---------------------------------------------------------------------------------------
ANCHOR_EVENT = "audit anchor"  # the structured log line's event
ANCHOR_KIND = "audit-head"  # the anchor file's lines: {"anchor": "audit-head", "seq": …, "hash": …, "at": …}
_HASH_TEXT = re.compile(r"(?:[0-9a-f]|<cpr>)+")
# structlog's console rendering: a time stamp and a level open every line; the first such opening is the
# line's own (a journal prefix has no ISO time stamp, and a sender's value comes after it). Only a line
# whose own event is the anchor, with exactly its two fields, is one: a message-id quoting an anchor line
# sits inside another event's line and cannot match.
_CONSOLE_OPENING = re.compile(r"\d{4}-\d\d-\d\dT[0-9:.]+Z? \[\w+\s*\] ")
_CONSOLE_ANCHOR = re.compile(re.escape(ANCHOR_EVENT) + r" +hash='?([0-9a-f<>cpr]{64,})'? seq=(\d+)\s*")


@dataclass(frozen=True, slots=True)
class Anchor:
    seq: int
    hash: str  # may hold MASKED where the log masked ten digits
    source: str  # "file:line"

    def matches(self, digest: str) -> bool:
        if MASKED not in self.hash:
            return hmac.compare_digest(self.hash, digest)
        pattern = "[0-9]{10}".join(re.escape(part) for part in self.hash.split(MASKED))
        return re.fullmatch(pattern, digest) is not None


def anchor_line(seq: int, digest: str, at: str) -> bytes:
    """One line of the anchor file."""
    return orjson.dumps({"anchor": ANCHOR_KIND, "seq": seq, "hash": digest, "at": at}) + b"\n"


def parse_anchors(text: str, name: str) -> list[Anchor]:
    """The anchors in a file: the anchor file's lines, and the service's `audit anchor` log lines
    (JSON, possibly after a journal prefix, or the console format); every other line is skipped."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        if ANCHOR_KIND not in line and ANCHOR_EVENT not in line:
            continue
        anchor = _json_anchor(line) or _console_anchor(line)
        if anchor is not None and _HASH_TEXT.fullmatch(anchor[1]) and len(anchor[1].replace(MASKED, "0" * 10)) == 64:
            found.append(Anchor(anchor[0], anchor[1], f"{name}:{number}"))
    return found


def _json_anchor(line: str) -> tuple[int, str] | None:
    """The line's JSON object (after any journal prefix) when it is an anchor itself; a quoted anchor in
    some other event's field is not one."""
    start = line.find("{")
    if start < 0:
        return None
    try:
        doc = orjson.loads(line[start:])
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or not (doc.get("anchor") == ANCHOR_KIND or doc.get("event") == ANCHOR_EVENT):
        return None
    seq, digest = doc.get("seq"), doc.get("hash")
    return (seq, digest) if isinstance(seq, int) and isinstance(digest, str) else None


def _console_anchor(line: str) -> tuple[int, str] | None:
    opening = _CONSOLE_OPENING.search(line)
    found = _CONSOLE_ANCHOR.fullmatch(line, opening.end()) if opening else None
    return (int(found.group(2)), found.group(1)) if found else None


class AnchorCheck:
    """Every anchored (seq, hash) must still be in the chain; one record at a time (`add`), then `result`.
    Keeps the hashes of the anchored records only."""

    def __init__(self, anchors: Sequence[Anchor]) -> None:
        self._anchors = anchors
        self._wanted = {anchor.seq for anchor in anchors}
        self._hashes: dict[int, str] = {}
        self._last = 0

    def add(self, record: AuditRecord) -> None:
        """The next record; its seq must be a whole number. A hash that is not text (a `malformed` record's)
        matches no anchor."""
        if record.seq in self._wanted:
            self._hashes[record.seq] = record.hash if isinstance(record.hash, str) else ""
        self._last = record.seq

    def result(self) -> tuple[list[Finding], str]:
        """(findings, a summary)."""
        problems = Problems()
        for anchor in self._anchors:
            if anchor.seq == 0 and anchor.matches(GENESIS):
                continue
            digest = self._hashes.get(anchor.seq)
            where = f"anchor {anchor.source}"
            if digest is None and anchor.seq > self._last:
                problems.add(
                    where,
                    f"record {anchor.seq} was anchored, but the log ends at record {self._last} "
                    "(records cut off the end)",
                )
            elif digest is None:
                problems.add(where, f"record {anchor.seq} was anchored and is gone")
            elif not anchor.matches(digest):
                problems.add(
                    f"record {anchor.seq}",
                    f"its hash differs from the anchor at {anchor.source} (rewritten after it was anchored)",
                )
        latest = max((a.seq for a in self._anchors), default=0)
        summary = f"{len(self._anchors)} anchor(s) checked, the latest at record {latest}"
        return problems.findings("anchors", "more anchors disagree with the log"), summary


def check_anchors(records: Iterable[AuditRecord], anchors: Sequence[Anchor]) -> tuple[list[Finding], str]:
    """`AnchorCheck` over every record: (findings, a summary)."""
    check = AnchorCheck(anchors)
    for record in records:
        check.add(record)
    return check.result()


# -- state rows ------------------------------------------------------------------------------------
# a covered row as verify reads it: (key digest, row digest, the key as it may be shown, made when asked)
Row = tuple[str, str, Callable[[], str]]
ROWS_PER_LOOKUP = 500  # rows of a table compared with the replayed state at a time


class StateReplay(Protocol):
    """The state the chain says the covered tables hold, replayed record by record: (table, key digest) →
    (row digest, seq of the record that last wrote it). The store's reader keeps it in a scratch file, so that
    verifying a log of any length takes the same memory."""

    def write(self, seq: int, state: Mapping[str, Mapping[str, str]]) -> None:
        """The digests a record carries; they replace what earlier records said of the same keys."""

    def take(self, table: str, keys: Sequence[str]) -> dict[str, tuple[str, int]]:
        """What was replayed of these keys (those never written left out), removed from the replay."""
        ...

    def left(self, table: str, first: int) -> tuple[int, list[int]]:
        """(how many of the table's keys were never taken, the seqs that last wrote the `first` earliest of them)."""
        ...


class Evidence(Protocol):
    """What `audit verify` examines, read from one snapshot: the head, the records in chain order, every row of
    each covered table, and the schema's foreign objects; `replay` holds the replayed state meanwhile."""

    @property
    def head(self) -> tuple[int, str]:
        """(seq, hash) as the store holds them: of other types when someone else wrote them (`malformed_head`)."""
        ...

    @property
    def tables(self) -> Sequence[str]: ...

    @property
    def foreign_objects(self) -> Sequence[str]: ...

    @property
    def replay(self) -> StateReplay: ...

    def records(self) -> Iterable[AuditRecord]: ...

    def rows(self, table: str) -> Iterable[Row]: ...


def replay_state(replay: StateReplay, record: AuditRecord) -> None:
    """Replay the digests a record carries (a value that is no mapping, written by someone else, carries none)."""
    if isinstance(record.state, Mapping):
        state = {t: rows for t, rows in record.state.items() if isinstance(rows, Mapping)}
        if state:
            replay.write(record.seq, {t: {k: str(d) for k, d in rows.items()} for t, rows in state.items()})


def check_table(table: str, rows: Iterable[Row], replay: StateReplay) -> tuple[list[Finding], int]:
    """Every row of the table as the chain last recorded it, and no row the chain recorded gone: (findings,
    how many rows), reading the rows `ROWS_PER_LOOKUP` at a time."""
    problems, total, chunk = Problems(), 0, []
    for row in rows:
        chunk.append(row)
        if len(chunk) == ROWS_PER_LOOKUP:
            total += _compare(table, chunk, replay, problems)
            chunk = []
    total += _compare(table, chunk, replay, problems)
    gone, seqs = replay.left(table, SHOWN_PER_KIND)
    for seq in seqs:
        problems.add(f"table {table}", f"a row last written at record {seq} is gone (deleted outside the service)")
    problems.skipped += gone - len(seqs)
    return problems.findings(f"table {table}", "more rows differ"), total


def _compare(table: str, rows: Sequence[Row], replay: StateReplay, problems: Problems) -> int:
    expected = replay.take(table, [key for key, _, _ in rows]) if rows else {}
    for key, digest, shown in rows:
        recorded = expected.pop(key, None)
        if recorded is None:
            problems.add(f"table {table}", f"row {shown()} was inserted outside the service (no record wrote it)")
        elif recorded[0] != digest:
            problems.add(
                f"table {table}",
                f"row {shown()} was changed outside the service (last written at record {recorded[1]})",
            )
    return len(rows)


# -- the examination -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Examination:
    findings: list[Finding]
    summary: list[str]
    records: int = 0

    @property
    def intact(self) -> bool:
        return not self.findings


def examine(
    evidence: Evidence,
    keys: MacKeys | None = None,
    anchors: Sequence[Anchor] = (),
    allow_empty: bool = False,
) -> Examination:
    """Every check `audit verify` makes: the chain, the state rows, the anchors given, the HMACs, and the
    schema: a trigger, rule or policy (`foreign_objects`; the service creates none) could change the rows
    the service writes and reads back, so that their changes were chained as the service's own.

    One pass over the records and one over each covered table; what it holds meanwhile does not grow with
    the log (the replayed state is the evidence's `replay`)."""
    head, walk, anchored = evidence.head, ChainWalk(), AnchorCheck(anchors)
    macs = MacCheck(keys) if keys is not None else None
    unreadable, count, last_seq = Problems(), 0, 0
    for record in evidence.records():
        count += 1
        walk.add(record)
        if (problem := malformed(record)) is not None:  # a finding; its HMAC cannot be checked
            unreadable.add(place(record.seq, last_seq), problem)
        elif macs is not None:
            macs.add(record)
        if whole_number(record.seq):  # its state replayed as a changed record's is: the tables name only their own
            last_seq = record.seq
            anchored.add(record)
            replay_state(evidence.replay, record)
    findings = [
        Finding("the schema", f"{name}: the service creates none; it can change rows under the chain")
        for name in evidence.foreign_objects
    ]
    if not count and head == (0, GENESIS) and not allow_empty:
        findings.insert(
            0, Finding("the log", "it is empty (emptied, or a fresh store: --allow-empty accepts a fresh deployment)")
        )
    if (broken := walk.end(head)) is not None:
        findings.append(Finding(broken.place(), broken.problem))
    more = unreadable.findings("the log", "more records hold a value of a type the service never writes")
    findings += [finding for finding in more if finding not in findings]  # the walk's break may be the first
    rows = 0
    for table in evidence.tables:
        found, counted = check_table(table, evidence.rows(table), evidence.replay)
        findings, rows = findings + found, rows + counted
    summary = [f"{count} records, head {head[0]} {head[1]}"]
    summary.append(f"{rows} state row(s) in {len(evidence.tables)} tables as the chain recorded them")
    for found, said in [anchored.result()] * bool(anchors) + ([macs.result()] if macs is not None else []):
        findings += found
        summary += [said] if said else []
    return Examination(findings, summary, count)
