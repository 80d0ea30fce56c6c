"""The `integration` command as an integrator uses it: real process, real files, exit codes and stderr."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.cli_runs import run_integration
from tests.conftest import GOLDEN

EVENT = GOLDEN / "discharge" / "01-municipal-gop-general-sternotomy.event.json"


def run_cli(*args: str, stdin: bytes | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    return run_integration(*args, input=stdin, timeout=60, cwd=cwd)


def test_transform_file_prints_route_and_message() -> None:
    done = run_cli("transform", str(EVENT))
    assert done.returncode == 0, done.stderr
    (item,) = json.loads(done.stdout)
    assert item["route"] == {"exchange": "rehab.referral", "routingKey": "referral.municipality.851"}
    assert item["message"]["resourceType"] == "Bundle"
    assert done.stderr == b""


def test_transform_stdin() -> None:
    done = run_cli("transform", "-", stdin=EVENT.read_bytes())
    assert done.returncode == 0 and json.loads(done.stdout)[0]["route"]["routingKey"] == "referral.municipality.851"


def test_no_referral_prints_empty_array() -> None:
    done = run_cli("transform", str(GOLDEN / "discharge" / "07-no-referral.event.json"))
    assert (done.returncode, json.loads(done.stdout)) == (0, [])


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"{not json", b"error: malformed JSON"),
        (EVENT.read_bytes().replace(b'"2512489996"', b'"3212489996"'), b"error: patient.cpr: the date part"),
        (
            EVENT.read_bytes().replace(b'"851"', b'"999"'),
            b"error: patient.municipalityCode: unknown municipality code '999'",
        ),
        (b"\xff\xfe{}", "error: JSON must be UTF-8 (RFC 8259 §8.1); this is UTF-16LE".encode()),
    ],
    ids=["malformed", "cpr-date", "municipality", "non-utf8"],
)
def test_invalid_input_exits_2_with_one_line_and_no_traceback(payload: bytes, expected: bytes) -> None:
    done = run_cli("transform", "-", stdin=payload)
    assert done.returncode == 2
    assert done.stdout == b""
    assert done.stderr.startswith(expected)
    assert done.stderr.count(b"\n") == 1 and b"Traceback" not in done.stderr
    assert b"3212489996" not in done.stderr


def test_twenty_megabyte_payload_exits_2() -> None:
    done = run_cli("transform", "-", stdin=b"{" + b" " * (20 * 1024 * 1024) + b"}")
    assert done.returncode == 2 and b"payload too large" in done.stderr


def test_missing_endpoint_exits_3() -> None:
    done = run_cli("transform", "-", stdin=EVENT.read_bytes().replace(b'"851"', b'"101"'))
    assert done.returncode == 3
    assert b"municipality 101" in done.stderr and done.stderr.count(b"\n") == 1


def test_broken_mappings_exit_3(tmp_path: Path) -> None:
    done = run_integration(
        "transform", str(EVENT), env={"INTEGRATION_MAPPINGS_DIR": str(tmp_path), "PATH": ""}, timeout=60
    )
    assert done.returncode == 3 and b"configuration" in done.stderr


def test_demo_without_a_broker_runs_on_the_in_memory_bus_and_says_so(tmp_path: Path) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
    env.update(
        {
            "INTEGRATION_BROKER_URL": "amqp://guest:guest@127.0.0.1:1/none",
            "INTEGRATION_AUDIT_DSN": f"sqlite:///{tmp_path / 'audit.sqlite3'}",
        }
    )
    done = run_integration("demo", env=env, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert lines[0].startswith("no broker at amqp://guest:***@127.0.0.1:1/none") and "in-memory bus" in lines[0]
    assert "guest:guest" not in done.stdout.decode()
    assert sum("referral from" in line for line in lines) == 18  # 14 patients; four re-routed (cancel + new)
    assert "MLLP ACK: MSA|AA|RHN-0001" in lines  # the ADT^A03 over MLLP, published to the in-memory bus
    assert any(
        "referral from hl7-a03-01-municipal-gop-general-sternotomy" in line and "referral.municipality.851" in line
        for line in lines
    )
    assert any(
        "dead-lettered: bad-unknown-municipality" in line and "unknown municipality code '999'" in line
        for line in lines
    )
    assert any("hotline: municipality-acute" in line and "hotline.oncall.715541000016001" in line for line in lines)
    assert any("hotline: patient-without-course" in line and "hotline.unmatched" in line for line in lines)
    assert any(
        "ack: municipality-routine.carecommunication" in line and "ack.434751000016002" in line for line in lines
    )
    assert lines[-1].startswith("18 referrals and ") and "1 MedCom acks received downstream" in lines[-1]
    assert any("status: closing-report" in line and "gp.status.012345" in line for line in lines)
    assert any("no output: 07-no-referral" in line and "nothing to send" in line for line in lines)
    assert not (tmp_path / "audit.sqlite3").exists()  # the configured store is not touched: the demo has its own


def test_an_invalid_built_message_is_refused_and_prints_nothing(tmp_path: Path) -> None:
    import shutil

    from integration.config import PROJECT_ROOT

    mappings = tmp_path / "mappings"
    shutil.copytree(PROJECT_ROOT / "mappings", mappings)
    terminology = mappings / "terminology.yaml"
    terminology.write_text(
        terminology.read_text(encoding="utf-8").replace('code: "new-referral"', 'code: ""'), encoding="utf-8"
    )
    done = run_integration(
        "transform", str(EVENT), env={"INTEGRATION_MAPPINGS_DIR": str(mappings), "PATH": ""}, timeout=60
    )
    # It never leaves; the input is refused naming the element (issue #11, point 4), replayable after the fix.
    assert done.returncode == 2
    assert done.stdout == b""
    assert done.stderr.startswith(b"error: MessageHeader.eventCoding.code")
    assert b"would fail our own checks" in done.stderr and b"2512489996" not in done.stderr


def test_hotline_pending_lists_overdue_requests_and_audits_each_once(tmp_path: Path) -> None:
    import os
    from datetime import datetime, timedelta

    from integration.adapters.sql.stores import open_audit_store
    from integration.domain.course import OpenRequest, StateChanges

    dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    store = open_audit_store(dsn)
    long_ago = datetime.now(UTC) - timedelta(days=10)
    old = OpenRequest("r-old", None, "434751000016002", "715541000016001", "2512489996")
    store.record([], long_ago, changes=StateChanges(opened=(old,)))
    new = OpenRequest("r-new", None, "012345", None, "0107729995")
    store.record([], datetime.now(UTC), changes=StateChanges(opened=(new,)))
    store.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")} | {"INTEGRATION_AUDIT_DSN": dsn}
    for _ in range(2):
        done = run_integration("hotline", "pending", env=env, timeout=60, text=True)
        assert done.returncode == 0, done.stderr
        assert "1 unanswered request(s) older than 8 opening hour(s)" in done.stdout and "r-old" in done.stdout
        assert "r-new" not in done.stdout
    store = open_audit_store(dsn)
    overdue = [r for r in store.records() if r.step == "hotline-overdue"]
    store.close()
    assert len(overdue) == 1 and overdue[0].message_id == "r-old" and overdue[0].patient == "2512489996"
    assert "2512489996" not in done.stderr  # the log line names the request, never the patient


def test_audit_trail_reads_the_cpr_number_as_it_is_typed_and_refuses_what_is_none(tmp_path: Path) -> None:
    import os

    from integration.adapters.sql.stores import open_audit_store
    from integration.service.audit_chain import AuditEntry

    dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    store = open_audit_store(dsn)
    store.record([AuditEntry("received", "discharge", "event-1", {"x": 1}, patient="2512489996")], datetime.now(UTC))
    store.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")} | {"INTEGRATION_AUDIT_DSN": dsn}
    for n, typed in enumerate(("251248-9996", "251248 9996", "2512489996"), start=1):
        done = run_integration("audit", "trail", "--patient", typed, env=env, timeout=60, text=True)
        assert done.returncode == 0, done.stderr
        assert "event-1" in done.stdout and "2512489996" not in done.stdout
        assert (
            done.stdout.splitlines()[-1] == f"{n + 1} record(s) about the patient, {n} of them look-ups of this trail"
        )
    for wrong in ("251248-999", "3212489996", "2512489996x", "251248--9996"):
        done = run_integration("audit", "trail", "--patient", wrong, env=env, timeout=60, text=True)
        assert done.returncode == 2 and done.stdout == ""
        assert done.stderr.startswith("error: Invalid value for '--patient': not a CPR number")
        assert wrong not in done.stderr and "2512489996" not in done.stderr and done.stderr.count("\n") == 1


def test_demo_that_cannot_make_a_vhost_of_its_own_runs_in_memory_and_says_why(tmp_path: Path) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")} | {"PATH": ""}  # no rabbitmqctl
    env["INTEGRATION_AUDIT_DSN"] = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    done = run_integration("demo", env=env, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert (
        lines[0] == "rabbitmqctl is not installed; running on the in-memory bus instead (never in the service's vhost)"
    )
    assert sum("referral from" in line for line in lines) == 18  # 14 patients; four re-routed (cancel + new)
    assert "MLLP ACK: MSA|AA|RHN-0001" in lines  # the ADT^A03 over MLLP, published to the in-memory bus
    assert any(
        "referral from hl7-a03-01-municipal-gop-general-sternotomy" in line and "referral.municipality.851" in line
        for line in lines
    )


def test_a_refused_medcom_message_prints_the_fatal_error_ack_it_would_be_answered_with() -> None:
    """`transform` shows what the sender would be told, so a vendor can try its messages offline (exit 2 still)."""
    message = json.loads((GOLDEN / "hotline" / "municipality-routine.carecommunication.json").read_text())
    patient = next(e["resource"] for e in message["entry"] if e["resource"]["resourceType"] == "Patient")
    patient["identifier"].append(dict(patient["identifier"][0], value="0101701234"))  # a second patient
    done = run_cli("transform", "-", "--at", "2026-11-23T10:00:00+01:00", stdin=json.dumps(message).encode())
    assert done.returncode == 2
    assert done.stderr.decode().startswith("error: Patient.identifier: ")
    (ack,) = json.loads(done.stdout)
    assert ack["route"]["routingKey"].startswith("ack.")
    assert ack["message"]["entry"][0]["resource"]["response"]["code"] == "fatal-error"


def test_a_refused_event_prints_nothing_on_stdout() -> None:
    event = json.loads(EVENT.read_text())
    event["schemaVersion"] = "9"
    done = run_cli("transform", "-", stdin=json.dumps(event).encode())
    assert done.returncode == 2 and done.stdout == b""
