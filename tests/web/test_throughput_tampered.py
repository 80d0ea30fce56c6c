"""The throughput page counts from the audit records; a record whose `at` holds what the service never writes
(SQLite keeps a blob in a text column: tampering, or a tool writing beside us) is left out, not a server error —
`integration audit verify` is what names it."""

from __future__ import annotations

from datetime import UTC, datetime

from integration.service.audit_chain import AuditRecord
from integration.web.pages import throughput

AT = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def _record(seq: int, at: object) -> AuditRecord:
    return AuditRecord(seq, at, "received", "discharge", f"m-{seq}", None, {}, "0" * 64, "0" * 64)  # type: ignore[arg-type]


def test_a_record_whose_time_is_no_text_is_left_out_of_the_counts() -> None:
    records = [_record(1, "2026-12-02T11:30:00+00:00"), _record(2, b"\xff\x00"), _record(3, None)]
    counts = throughput(records, AT)
    assert counts["received-hour"] == counts["received-day"] == {"discharge": 1}
