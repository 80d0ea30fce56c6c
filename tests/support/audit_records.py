"""An audit store of any number of records, written quickly through the store's own `record` (so every state
digest is the service's), shaped like the referral path's: per event seven records of the sizes the pipeline
writes, the event processed with its outgoing Bundle, tracked for its ack. For the tests that show `audit
verify` reads in constant memory and for bench/audit_verify_bench.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson

from integration.adapters.sql.store import AuditStore, StoredOutput
from integration.service.audit_chain import AuditEntry
from tests.support.events import TEST_CPRS

GOLDEN_DISCHARGE = Path(__file__).resolve().parent.parent / "golden" / "discharge"
RECORDS_PER_EVENT = 7
AT = datetime(2026, 11, 20, 13, 30, tzinfo=UTC)


def referral_bundle() -> bytes:
    """A golden referral Bundle as the service sends it: compact JSON, about 10 kB."""
    golden = orjson.loads((GOLDEN_DISCHARGE / "01-municipal-gop-general-sternotomy.expected.json").read_bytes())
    return orjson.dumps(golden["outgoing"][0]["message"])


def event_entries(n: int) -> list[AuditEntry]:
    """The records of one referral event, with details of the sizes the pipeline writes (≈100–300 bytes)."""
    message, patient = f"event-{n:09d}", TEST_CPRS[n % len(TEST_CPRS)]
    built = {"bundle": f"urn:uuid:{n:032x}", "municipality": "851", "pathway": "municipal", "risk": "moderate"}
    return [
        AuditEntry("received", "discharge", message, {"bytes": 4_211, "sender": "hospital-nord", "n": n}, patient),
        AuditEntry("validated", "discharge", message),
        AuditEntry("transformed", "discharge", message, {"outputs": 1, "kind": "referral"}),
        AuditEntry("fact:referral-built", "discharge", message, built | {"elements": ["gop", "exercise"]}, patient),
        AuditEntry("fact:course-stage", "discharge", message, {"from": None, "to": "referred"}, patient),
        AuditEntry("published", "discharge", message, {"exchange": "rehab.referral", "messageId": built["bundle"]}),
        AuditEntry("acked", "discharge", message),
    ]


def events(
    first: int, count: int, body: bytes
) -> Iterator[tuple[list[AuditEntry], tuple[str, str, str, list[StoredOutput]]]]:
    """`count` events: (their records, what `record` marks processed: one output awaiting its ack)."""
    for n in range(first, first + count):
        sent = b'{"n":%d,' % n + body[1:]  # a Bundle of its own: nothing is stored once for two events
        output = StoredOutput("rehab.referral", "referral.municipality.851", f"out-{n}", sent, awaits_ack=f"h-{n}")
        yield event_entries(n), ("discharge", f"event-{n:09d}", f"{n:064x}", [output])


def fill_log(
    store: AuditStore, records: int, first: int = 0, events_per_transaction: int = 1_000, body: bytes = b"{}"
) -> int:
    """Append at least `records` records: whole events of `RECORDS_PER_EVENT`, numbered from `first` (a store
    filled again goes on from where it stopped), `events_per_transaction` events per transaction. The number of
    records written."""
    batch: list[tuple[list[AuditEntry], tuple[str, str, str, list[StoredOutput]]]] = []
    written = 0
    for event in events(first, -(-records // RECORDS_PER_EVENT), body):
        batch.append(event)
        if len(batch) == events_per_transaction:
            written += _write(store, batch)
            batch = []
    return written + (_write(store, batch) if batch else 0)


def _write(store: AuditStore, batch: list[tuple[list[AuditEntry], tuple[str, str, str, list[StoredOutput]]]]) -> int:
    entries = [entry for records, _ in batch for entry in records]
    store.record(entries, AT, processed=[processed for _, processed in batch])
    return len(entries)
