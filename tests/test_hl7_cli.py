"""`integration transform` reads an ER7 file as the discharge queue does (no extension check), exit 2 naming
the HL7 field when it refuses, and never a CPR number in its output."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli_runs import run_integration

A03 = Path(__file__).parent / "hl7" / "01-municipal-gop-general-sternotomy.a03.er7"


def test_transform_reads_an_er7_a03() -> None:
    done = run_integration("transform", str(A03), timeout=60)
    assert done.returncode == 0, done.stderr
    (item,) = json.loads(done.stdout)
    assert item["route"] == {"exchange": "rehab.referral", "routingKey": "referral.municipality.851"}
    assert done.stderr == b""


def test_transform_refuses_a_bad_er7_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.hl7"
    bad.write_bytes(A03.read_bytes().replace(b"19481225", b"19481226"))
    done = run_integration("transform", str(bad), timeout=60)
    assert done.returncode == 2
    assert b"PID-7.1" in done.stderr and b"2512489996" not in done.stderr + done.stdout
    assert b"Traceback" not in done.stderr


def test_transform_reads_an_er7_in_its_mllp_frame_as_captured_from_the_wire(tmp_path: Path) -> None:
    framed = tmp_path / "captured.hl7"
    framed.write_bytes(b"\x0b" + A03.read_bytes() + b"\x1c\x0d")
    at = ("--at", "2026-11-21T10:00:00+01:00")
    done = run_integration("transform", *at, str(framed), timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == json.loads(run_integration("transform", *at, str(A03), timeout=60).stdout)


def test_transform_help_says_an_mllp_frame_is_read_without_it() -> None:
    done = run_integration("transform", "--help", timeout=60)
    assert b"MLLP frame" in done.stdout
