"""`integration demo` on the real broker sends one ADT^A03 over MLLP to a listener of its own (issue #15): the
ACK's MSA line is printed, and the A03's referral is among the outputs as the JSON samples' are."""

from __future__ import annotations

import os
from pathlib import Path

from tests.cli_runs import run_integration


def test_the_demo_sends_an_a03_over_mllp_prints_aa_and_shows_its_referral(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
    env.update(
        {
            "INTEGRATION_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672/%2F",
            "INTEGRATION_AUDIT_DSN": f"sqlite:///{tmp_path / 'audit.sqlite3'}",
            # the service's own listener settings: the demo must use neither (its vhost, plain TCP, a free port)
            "INTEGRATION_MLLP_BROKER_URL": "amqp://guest:guest@127.0.0.1:1/service",
            "INTEGRATION_MLLP_LISTEN": "127.0.0.1:1",
        }
    )
    done = run_integration("demo", env=env, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert lines[0].startswith("broker: ") and "of the demo's own" in lines[0]
    assert "MLLP ACK: MSA|AA|RHN-0001" in lines
    summary = [line.strip() for line in lines if "→" in line]
    hl7 = next(i for i, line in enumerate(summary) if "hl7-a03-01-municipal-gop-general-sternotomy" in line)
    assert summary[hl7].startswith("referral from hl7-a03-01") and summary[hl7].endswith(
        "→ referral.municipality.851 (new-referral)"
    )
    first_hotline = next(i for i, line in enumerate(summary) if line.startswith("hotline:"))
    assert "14-sks-diagnoses-primary-last" in summary[hl7 - 2] and hl7 < first_hotline  # with the discharges
    assert lines[-1].startswith("18 referrals and ")
    assert "2512489004" not in done.stdout.decode() and "2512489004" not in done.stderr.decode()
