"""The hash chain's pure check of what a database gave back: a column holding a value of a type the service
never writes (SQLite keeps any value in any column) is a broken record named with its field, never a crash
while hashing it, and never its value (the patient's column holds a CPR number)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from integration.service.audit_chain import AuditEntry, chain, first_malformed, malformed, verify

CPR = "2512489996"
RECORDS = chain([AuditEntry("received", "discharge", f"m-{n}", {"n": n}, CPR) for n in range(1, 6)], 0, "0" * 64, "t")
HEAD = (RECORDS[-1].seq, RECORDS[-1].hash)


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("seq", "3x", "its seq holds text, not a whole number"),
        ("seq", None, "its seq holds NULL, not a whole number"),
        ("seq", 3.5, "its seq holds a real number, not a whole number"),
        ("seq", True, "its seq holds a value of type bool, not a whole number"),
        ("at", b"\xff\x00", "its at holds a blob, not text"),
        ("patient", b"\xff", "its patient holds a blob, not text or NULL"),
        ("prev_hash", 7, "its prev_hash holds a whole number, not text"),
        ("hash", None, "its hash holds NULL, not text"),
        ("mac", b"k", "its mac holds a blob, not text or NULL"),
    ],
)
def test_a_column_of_another_type_breaks_the_chain_at_that_record(field: str, value: Any, said: str) -> None:
    records = [*RECORDS[:2], replace(RECORDS[2], **{field: value}), *RECORDS[3:]]
    assert malformed(records[2]) == f"{said} (written outside the service)"
    broken = verify(records, HEAD)
    assert broken is not None and broken.seq == 3 and broken.problem.startswith(said)
    where = "record 3" if field != "seq" else "the record read after record 2"
    assert broken.place() == where and first_malformed(records) == (where, broken.problem)
    assert CPR not in broken.problem


@pytest.mark.parametrize(
    ("head", "said"), [(("5", HEAD[1]), "its seq holds text"), ((5, b"\0"), "its hash holds a blob")]
)
def test_a_head_of_another_type_is_named(head: tuple[Any, Any], said: str) -> None:
    broken = verify(RECORDS, head)
    assert broken is not None and broken.place() == "the head" and broken.problem.startswith(said)


def test_records_as_the_service_writes_them_are_well_formed() -> None:
    assert [malformed(record) for record in RECORDS] == [None] * 5 and first_malformed(RECORDS) is None
    assert verify(RECORDS, HEAD) is None
