"""The audit store on both real databases: chain, tamper detection, trail, processed messages."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from integration.adapters.sql.store import StoredOutput
from integration.adapters.sql.stores import open_audit_store
from integration.service.audit_chain import AuditEntry, verify

AT = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path: Path):
    dsn = (
        f"sqlite:///{tmp_path / 'a.sqlite3'}" if request.param == "sqlite" else request.getfixturevalue("postgres_dsn")
    )
    opened = open_audit_store(dsn)
    yield opened
    opened.close()


def fill(store, n: int = 5) -> None:
    for i in range(n):
        store.record(
            [AuditEntry("received", "discharge", f"m-{i}", {"i": i}, patient="2512489996" if i % 2 else None)], AT
        )


def _tamper(store, sql: str) -> None:
    with store._transaction() as cursor:  # noqa: SLF001 - the test plays the attacker with direct SQL
        cursor.execute(sql)


def test_chain_verifies(store) -> None:
    fill(store)
    assert verify(store.records(), store.head()) is None
    assert store.head()[0] == 5


def test_changed_record_is_found(store) -> None:
    fill(store)
    _tamper(store, "UPDATE audit_log SET detail = '{\"i\": 99}' WHERE seq = 3")
    broken = verify(store.records(), store.head())
    assert broken is not None and broken.seq == 3 and "changed" in broken.problem


def test_deleted_record_is_found(store) -> None:
    fill(store)
    _tamper(store, "DELETE FROM audit_log WHERE seq = 2")
    broken = verify(store.records(), store.head())
    assert broken is not None and "record 2 is missing" in broken.problem


def test_cut_off_tail_is_found(store) -> None:
    fill(store)
    _tamper(store, "DELETE FROM audit_log WHERE seq = 5")
    broken = verify(store.records(), store.head())
    assert broken is not None and "ends at record 4" in broken.problem


def test_inserted_record_with_a_correct_hash_is_found(store) -> None:
    from integration.service.audit_chain import record_hash

    fill(store)
    last = list(store.records())[-1]
    forged = AuditEntry("published", "discharge", "m-forged", {})
    digest = record_hash(6, last.at, forged, last.hash)
    _tamper(
        store,
        "INSERT INTO audit_log (seq, at, step, flow, message_id, patient, detail, prev_hash, hash) "
        f"VALUES (6, '{last.at}', 'published', 'discharge', 'm-forged', NULL, '{{}}', '{last.hash}', '{digest}')",
    )
    broken = verify(store.records(), store.head())
    assert broken is not None and "ends at record 6, but record 5 was the last written" in broken.problem


def test_record_inserted_in_the_middle_is_found(store) -> None:
    fill(store)
    _tamper(store, "DELETE FROM audit_log WHERE seq = 3")
    _tamper(
        store,
        "INSERT INTO audit_log (seq, at, step, flow, message_id, patient, detail, prev_hash, hash) "
        "VALUES (3, '2026-01-01', 'forged', 'discharge', 'x', NULL, '{}', 'bad', 'bad')",
    )
    broken = verify(store.records(), store.head())
    assert broken is not None and broken.seq == 3


def test_trail_lists_a_patients_records(store) -> None:
    fill(store)
    assert [r.message_id for r in store.trail("2512489996")] == ["m-1", "m-3"]


def test_processed_outputs_round_trip_byte_for_byte(store) -> None:
    body = '{"resourceType":"Bundle","note":"Ærø ✓"}'.encode()
    store.record(
        [AuditEntry("transformed", "discharge", "m-1")],
        AT,
        [("discharge", "m-1", "a" * 64, [StoredOutput("rehab.referral", "referral.municipality.851", "h-1", body)])],
    )
    (output,) = store.processed("discharge", "m-1")
    assert output.body == body and output.routing_key == "referral.municipality.851"
    assert store.processed("discharge", "m-2") is None


def test_processed_twice_in_one_store_is_refused_not_an_outage(store) -> None:
    from integration.errors import StoreRefused

    store.record([], AT, [("discharge", "m-1", "a" * 64, [])])
    with pytest.raises(StoreRefused):
        store.record([AuditEntry("x", "discharge", "m-1")], AT, [("discharge", "m-1", "a" * 64, [])])
    assert verify(store.records(), store.head()) is None  # the failed transaction left nothing behind


def test_deliveries_know_the_body_hash_and_our_failures(store) -> None:
    from integration.adapters.sql.store import Failure

    store.record([], AT, [("discharge", "m-1", "a" * 64, [])])
    store.record([], AT, failures=[Failure("discharge", "m-2", "KeyError")])
    store.record([], AT, failures=[Failure("discharge", "m-2", "TypeError"), Failure("hotline", "m-1", "X")])
    found = store.deliveries([("discharge", "m-1"), ("discharge", "m-2"), ("discharge", "m-3"), ("hotline", "m-1")])
    assert found[("discharge", "m-1")].processed and found[("discharge", "m-1")].digest == "a" * 64
    assert found[("discharge", "m-1")].at and found[("discharge", "m-1")].failures == 0
    assert not found[("discharge", "m-2")].processed and found[("discharge", "m-2")].failures == 2
    assert found[("hotline", "m-1")].failures == 1 and ("discharge", "m-3") not in found


def test_unreachable_postgres_is_transient() -> None:
    from integration.errors import Transient

    with pytest.raises(Transient, match="unavailable"):
        open_audit_store("postgresql://postgres@127.0.0.1:1/test")


def test_open_requests_are_remembered_answered_by_thread_and_noted_overdue(store) -> None:
    from integration.domain.course import OpenRequest, StateChanges

    store.record(
        [],
        AT,
        changes=StateChanges(
            opened=(
                OpenRequest("r-1", "urn:uuid:t-1", "434751000016002", "715541000016001", "2512489996"),
                OpenRequest("r-2", None, "012345", None, "0107729995"),
            )
        ),
    )
    assert store.requester("urn:uuid:t-1") == "434751000016002" and store.requester("urn:uuid:none") is None
    assert [p.request.request_id for p in store.open_requests()] == ["r-1", "r-2"]
    store.record([], AT, changes=StateChanges(answered=("urn:uuid:t-1",)))
    (left,) = store.open_requests()
    assert left.request.request_id == "r-2" and not left.overdue_noted
    store.note_overdue(["r-2"], AT)
    assert store.open_requests()[0].overdue_noted


def test_courses_are_opened_and_closed(store) -> None:
    from integration.domain.course import Course, StateChanges

    opened = Course("2512489996", "715541000016001", "851", True, "hospital")
    store.record([], AT, changes=StateChanges(courses=(opened,)))
    assert store.course("2512489996").open
    store.record([], AT, changes=StateChanges(courses=(Course("2512489996", "715541000016001", "851", False, "gp"),)))
    assert store.course("2512489996") == Course("2512489996", "715541000016001", "851", False, "gp")
    assert store.course("0107729995") is None
