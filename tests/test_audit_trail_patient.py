"""`audit trail --patient` finds a patient known only by a replacement number (docs/decisions/0017: the audit
files them as `system|value`; attack on issue 11, F9): typed as SYSTEM|VALUE, or an X-eCPR alone. A bare
D-eCPR is refused (six systems issue that shape), and no error repeats what was typed."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from integration.adapters.sql.stores import open_audit_store
from integration.service.audit_chain import AuditEntry
from tests.cli_runs import run_integration

X_ECPR = "urn:oid:1.2.208.176.1.6.1.1"
D_ECPR_NORDJYLLAND = "urn:oid:1.2.208.176.1.6.1.3.179"
D_ECPR_SJAELLAND = "urn:oid:1.2.208.176.1.6.1.3.177"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    store = open_audit_store(dsn)
    patients = {
        "x-ecpr-event": f"{X_ECPR}|0101701TT2",
        "d-ecpr-nordjylland": f"{D_ECPR_NORDJYLLAND}|0101705AB3",
        "d-ecpr-sjaelland": f"{D_ECPR_SJAELLAND}|0101705AB3",  # the same value from another region
        "cpr-event": "2512489996",
    }
    store.record(
        [AuditEntry("received", "hotline", message, {}, patient=key) for message, key in patients.items()],
        datetime.now(UTC),
    )
    store.close()
    return {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")} | {"INTEGRATION_AUDIT_DSN": dsn}


@pytest.mark.parametrize(
    ("typed", "found"),
    [
        (f"{X_ECPR}|0101701TT2", "x-ecpr-event"),
        ("0101701TT2", "x-ecpr-event"),  # an X-eCPR alone: no other system issues its shape
        (f"{D_ECPR_NORDJYLLAND}|0101705AB3", "d-ecpr-nordjylland"),
        (f"{D_ECPR_SJAELLAND}|0101705AB3", "d-ecpr-sjaelland"),
        ("urn:oid:1.2.208.176.1.2|2512489996", "cpr-event"),
        ("251248-9996", "cpr-event"),
    ],
)
def test_a_patient_is_found_by_a_replacement_number_as_the_audit_files_it(
    env: dict[str, str], typed: str, found: str
) -> None:
    done = run_integration("audit", "trail", "--patient", typed, env=env, timeout=60, text=True)
    assert done.returncode == 0, done.stderr
    events = [line for line in done.stdout.splitlines() if "received" in line]
    assert len(events) == 1 and found in events[0], done.stdout
    assert done.stdout.splitlines()[-1] == "2 record(s) about the patient, 1 of them look-ups of this trail"


@pytest.mark.parametrize(
    ("typed", "says"),
    [
        ("0101705AB3", "a D-eCPR names its patient only with its system"),
        (f"{X_ECPR}|0101705AB3", "X-eCPR does not have its format"),
        (f"{D_ECPR_NORDJYLLAND}|0101701TT2", "does not have its format"),
        ("urn:oid:9.9|0101701TT2", "not a CPR number"),
        ("3201701TT2", "not a CPR number"),
        ("urn:oid:1.2.208.176.1.2|0101701TT2", "not a CPR number"),
    ],
)
def test_what_names_no_patient_is_a_usage_error_that_never_repeats_it(
    env: dict[str, str], typed: str, says: str
) -> None:
    done = run_integration("audit", "trail", "--patient", typed, env=env, timeout=60, text=True)
    assert done.returncode == 2 and done.stdout == "", done.stdout + done.stderr
    assert says in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert typed.rpartition("|")[2] not in done.stderr
