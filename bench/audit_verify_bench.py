"""Benchmark of `integration audit verify` on a long log: its wall time and the most memory it takes (issue #16:
1 M records in constant memory, under 200 MB).

A temporary SQLite audit store (or `--dsn`'s) is filled through the store's own `record`, a thousand events
per transaction, shaped like the referral path's: seven records per event of the sizes the pipeline writes,
each event processed with a referral Bundle of its own (≈10 kB, stored once, compressed) tracked for its ack
(tests/support/audit_records.py); so the state check compares two covered rows and a body per event. Then
`integration audit verify` runs as an operator runs it, in a process of its own: wall seconds, and its peak
RSS from the kernel (wait4). The last line printed is one JSON object:

    {"verify_records": …, "verify_1m_s": …, "verify_1m_mb": …}

    python bench/audit_verify_bench.py [--records 1000000] [--dsn sqlite:///path | postgresql://…]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from integration.adapters.sql.stores import open_audit_store  # noqa: E402 - after the path is set
from tests.support.audit_records import fill_log, referral_bundle  # noqa: E402


def build_store(dsn: str, records: int) -> tuple[int, float]:
    """Fill the store at `dsn` with at least `records` records: (records written, seconds it took)."""
    started = time.perf_counter()
    store = open_audit_store(dsn)
    try:
        written = fill_log(store, records, body=referral_bundle())
    finally:
        store.close()
    return written, time.perf_counter() - started


def run_verify(dsn: str) -> dict[str, Any]:
    """`integration audit verify` on `dsn` in a process of its own: its wall seconds, peak RSS (from wait4, the
    child's own) and what it printed."""
    env = {**os.environ, "INTEGRATION_AUDIT_DSN": dsn, "INTEGRATION_CONFIG": "", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "integration", "audit", "verify"]
    with tempfile.TemporaryFile() as said:
        started = time.perf_counter()
        child = subprocess.Popen(command, env=env, cwd=ROOT, stdout=said, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, for its usage: Popen must not wait
        said.seek(0)
        text = said.read().decode("utf-8", "replace")
    return {"seconds": seconds, "rss_mb": usage.ru_maxrss / 1024, "exit": child.returncode, "said": text[:300]}


def measure_verify(records: int = 1_000_000, dsn: str | None = None) -> dict[str, Any]:
    """Build a log of `records` records (in a temporary SQLite file unless `dsn`), verify it in a process of its
    own: {"verify_records", "verify_1m_s" (wall seconds), "verify_1m_mb" (peak RSS, MiB)}, and how long the log
    took to build. Raises RuntimeError when verify does not find the log intact."""
    with tempfile.TemporaryDirectory(prefix="audit-verify-bench-") as scratch:
        target = dsn or f"sqlite:///{Path(scratch) / 'audit.sqlite3'}"
        written, built = build_store(target, records)
        print(f"built {written} records in {built:.1f} s", file=sys.stderr)
        verified = run_verify(target)
    if verified["exit"] != 0:
        raise RuntimeError(f"audit verify exited {verified['exit']}: {verified['said']}")
    print(verified["said"].strip()[:200], file=sys.stderr)
    return {
        "verify_records": written,
        "verify_1m_s": round(verified["seconds"], 1),
        "verify_1m_mb": round(verified["rss_mb"], 1),
        "build_s": round(built, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--dsn", default=None, help="an empty store to fill (default: a temporary SQLite file)")
    args = parser.parse_args()
    print(json.dumps(measure_verify(args.records, args.dsn)))


if __name__ == "__main__":
    main()
