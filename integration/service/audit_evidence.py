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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import orjson

from integration.service.audit_chain import GENESIS, AuditRecord, verify

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


def check_macs(records: Sequence[AuditRecord], keys: MacKeys) -> tuple[list[Finding], str]:
    """Every record from the first signed one on must carry a valid HMAC; (findings, a summary)."""
    problems: list[tuple[int, str]] = []
    first_signed: int | None = None
    used: set[str] = set()
    for record in records:
        if record.mac is None:
            if first_signed is not None:
                problems.append(
                    (record.seq, "it carries no HMAC, though records before it do (written without the key)")
                )
            continue
        first_signed = record.seq if first_signed is None else first_signed
        used.add(record.mac.partition(":")[0])
        if (problem := keys.problem(record.mac, record.hash)) is not None:
            problems.append((record.seq, problem))
    findings = [Finding(f"record {seq}", problem) for seq, problem in problems[:SHOWN_PER_KIND]]
    if len(problems) > SHOWN_PER_KIND:
        findings.append(Finding("HMAC", f"{len(problems) - SHOWN_PER_KIND} more records fail their HMAC check"))
    if records and first_signed is None:
        findings.append(
            Finding("HMAC", "no record carries an HMAC, though a key is configured (the chain rewritten without it?)")
        )
    summary = f"HMAC: records from {first_signed} on signed (key ids {', '.join(sorted(used))})" if used else ""
    return findings, summary


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


def check_anchors(records: Sequence[AuditRecord], anchors: Sequence[Anchor]) -> tuple[list[Finding], str]:
    """Every anchored (seq, hash) must still be in the chain: (findings, a summary)."""
    hashes = {record.seq: record.hash for record in records}
    last = records[-1].seq if records else 0
    problems = []
    for anchor in anchors:
        if anchor.seq == 0 and anchor.matches(GENESIS):
            continue
        digest = hashes.get(anchor.seq)
        if digest is None and anchor.seq > last:
            problems.append(
                Finding(
                    f"anchor {anchor.source}",
                    f"record {anchor.seq} was anchored, but the log ends at record {last} (records cut off the end)",
                )
            )
        elif digest is None:
            problems.append(Finding(f"anchor {anchor.source}", f"record {anchor.seq} was anchored and is gone"))
        elif not anchor.matches(digest):
            problems.append(
                Finding(
                    f"record {anchor.seq}",
                    f"its hash differs from the anchor at {anchor.source} (rewritten after it was anchored)",
                )
            )
    findings = problems[:SHOWN_PER_KIND]
    if len(problems) > SHOWN_PER_KIND:
        findings.append(Finding("anchors", f"{len(problems) - SHOWN_PER_KIND} more anchors disagree with the log"))
    latest = max((a.seq for a in anchors), default=0)
    return findings, f"{len(anchors)} anchor(s) checked, the latest at record {latest}"


# -- state rows ------------------------------------------------------------------------------------
Rows = Mapping[str, Mapping[str, tuple[str, str]]]  # table → key digest → (row digest, the key as shown)


def expected_state(records: Iterable[AuditRecord]) -> dict[tuple[str, str], tuple[str, int]]:
    """(table, key digest) → (row digest, seq of the record that last wrote it), replayed from the chain."""
    expected: dict[tuple[str, str], tuple[str, int]] = {}
    for record in records:
        if not isinstance(record.state, Mapping):
            continue
        for table, rows in record.state.items():
            if isinstance(rows, Mapping):
                expected.update({(table, key): (str(digest), record.seq) for key, digest in rows.items()})
    return expected


def check_state(records: Sequence[AuditRecord], rows: Rows) -> tuple[list[Finding], str]:
    """Every covered row must be as the chain last recorded it: (findings, a summary)."""
    expected = expected_state(records)
    findings, total = [], 0
    for table, actual in rows.items():
        problems = []
        for key, (digest, shown) in actual.items():
            total += 1
            recorded = expected.pop((table, key), None)
            if recorded is None:
                problems.append(f"row {shown} was inserted outside the service (no record wrote it)")
            elif recorded[0] != digest:
                problems.append(f"row {shown} was changed outside the service (last written at record {recorded[1]})")
        gone = sorted(seq for (t, _), (_, seq) in expected.items() if t == table)
        problems += [f"a row last written at record {seq} is gone (deleted outside the service)" for seq in gone]
        findings += [Finding(f"table {table}", p) for p in problems[:SHOWN_PER_KIND]]
        if len(problems) > SHOWN_PER_KIND:
            findings.append(Finding(f"table {table}", f"{len(problems) - SHOWN_PER_KIND} more rows differ"))
    return findings, f"{total} state row(s) in {len(rows)} tables as the chain recorded them"


# -- the examination -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Examination:
    findings: list[Finding]
    summary: list[str]

    @property
    def intact(self) -> bool:
        return not self.findings


def examine(
    head: tuple[int, str],
    records: Sequence[AuditRecord],
    rows: Rows,
    keys: MacKeys | None = None,
    anchors: Sequence[Anchor] = (),
    allow_empty: bool = False,
    foreign_objects: Sequence[str] = (),
) -> Examination:
    """Every check `audit verify` makes: the chain, the state rows, the anchors given, the HMACs, and the
    schema: a trigger, rule or policy (`foreign_objects`; the service creates none) could change the rows
    the service writes and reads back, so that their changes were chained as the service's own."""
    findings, summary = [], [f"{len(records)} records, head {head[0]} {head[1]}"]
    if not records and head == (0, GENESIS) and not allow_empty:
        findings.append(
            Finding("the log", "it is empty (emptied, or a fresh store: --allow-empty accepts a fresh deployment)")
        )
    findings += [
        Finding("the schema", f"{name}: the service creates none; it can change rows under the chain")
        for name in foreign_objects
    ]
    broken = verify(records, head)
    if broken is not None:
        findings.append(Finding(f"record {broken.seq}", broken.problem))
    checks = [check_state(records, rows)]
    if anchors:
        checks.append(check_anchors(records, anchors))
    if keys is not None:
        checks.append(check_macs(records, keys))
    for found, said in checks:
        findings += found
        summary += [said] if said else []
    return Examination(findings, summary)
