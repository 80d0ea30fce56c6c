"""`integration outbound resend` and `integration outbound pending` as an operator runs them, on the real broker."""

from __future__ import annotations

import os
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import orjson

from integration.adapters.sql.store import StoredOutput
from integration.adapters.sql.stores import open_audit_store
from integration.flows.dispatch import Pipeline, transform
from tests.cli_runs import run_integration
from tests.conftest import FIXED_NOW, GOLDEN
from tests.runtime.broker_helpers import collector, take_all
from tests.runtime.conftest import broker_url

EVENT = GOLDEN / "discharge" / "01-municipal-gop-general-sternotomy.event.json"


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_integration("outbound", *args, text=True, env=env, timeout=60)


def test_resend_then_flag_then_list(vhost: str, tmp_path: Path, pipeline: Pipeline) -> None:
    (out,) = transform(EVENT.read_bytes(), pipeline, FIXED_NOW).outgoing
    header = out.message["entry"][0]["resource"]["id"]
    dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    store = open_audit_store(dsn)
    sent = StoredOutput(out.route.exchange, out.route.routing_key, out.id, orjson.dumps(out.message), awaits_ack=header)
    store.record([], FIXED_NOW, processed=[("discharge", "event-1", "a" * 64, [sent])])
    store.close()
    referrals = collector(vhost, "rehab.referral")
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")} | {
        "INTEGRATION_AUDIT_DSN": dsn,
        "INTEGRATION_BROKER_URL": broker_url(vhost),
    }

    def at(minutes: int) -> str:
        return (FIXED_NOW + timedelta(minutes=minutes)).isoformat()

    done = _cli(env, "pending", "--at", at(10))
    assert done.returncode == 0 and "0 message(s) need manual follow-up; 1 awaiting an ack, 0 of them" in done.stdout
    done = _cli(env, "pending", "--at", at(45))
    assert done.returncode == 0 and "1 awaiting an ack, 1 of them past the ack timeout" in done.stdout
    assert f"{header}  awaiting  45 min since last sent" in done.stdout
    assert _cli(env, "resend", "--at", at(20)).stdout.strip() == "resent 0, flagged for manual follow-up 0"
    assert _cli(env, "resend", "--at", at(31)).stdout.strip() == "resent 1, flagged for manual follow-up 0"
    assert _cli(env, "resend", "--at", at(62)).stdout.strip() == "resent 1, flagged for manual follow-up 0"
    done = _cli(env, "resend", "--at", at(93))
    assert done.stdout.strip() == "resent 0, flagged for manual follow-up 1", done.stderr
    assert "2512489996" not in done.stderr
    resent = [orjson.loads(m.body) for m in take_all(vhost, referrals)]
    assert [m["entry"][0]["resource"]["id"] for m in resent] == [header, header]
    assert len({m["id"] for m in resent} | {out.message["id"]}) == 3
    done = _cli(env, "pending")
    assert done.returncode == 1
    assert f"{header}  gave-up  no ack after the last resend" in done.stdout and "resent 2x" in done.stdout
    bad = _cli(env, "resend", "--at", "2026-11-23T09:00:00")
    assert bad.returncode == 2 and "needs a time zone" in bad.stderr


def test_pending_is_clean_on_an_empty_store(tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    open_audit_store(dsn).close()  # the service creates the store; a command that reads never does (decision 15)
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")} | {"INTEGRATION_AUDIT_DSN": dsn}
    done = _cli(env, "pending", "--at", datetime.now().astimezone().isoformat())
    assert done.returncode == 0 and "0 message(s) need manual follow-up; 0 awaiting an ack" in done.stdout
