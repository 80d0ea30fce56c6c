"""Benchmark of the HL7 v2 listener on the local RabbitMQ: what an ADT^A03 over MLLP costs before its AA.

An interface engine sends one message and waits for its ACK before the next (HL7 v2 original mode), so the
figure a hospital feels is the time to the AA, and one connection's rate is its inverse. Same run, same
machine, one vhost of its own (deleted at the end) and a temporary SQLite audit store:

(a) confirm only: the same ER7 bytes published with a publisher confirm by the listener's own publisher
    (`ConfirmedPublisher`), one at a time: the floor the broker sets.
(b) the listener: `integration mllp`'s code path (read as the consumer reads it, publish with a confirm,
    the receipt's row and audit record in one transaction, the ACK) over TCP from a client in this process,
    one connection, one message in flight, as an engine does; then `--connections` clients at once.

CPU is this process's (client, listener and store all run in it; the broker's is not counted), per message.
The last line printed is one JSON object.

    python bench/mllp_bench.py [--messages 2000] [--connections 4]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hl7.mllp.streams import CARRIAGE_RETURN, END_BLOCK, START_BLOCK  # type: ignore[import-untyped]  # noqa: E402

from integration.adapters.rabbitmq import ConfirmedPublisher  # noqa: E402 - after the path is set
from integration.bootstrap import broker_settings, build_pipeline  # noqa: E402
from integration.cli.demo_mllp import a03, listening, msa_line  # noqa: E402
from integration.config import Settings  # noqa: E402
from integration.log import configure_logging  # noqa: E402
from integration.service import hl7_intake  # noqa: E402
from integration.topology import SENDERS_BY_KIND  # noqa: E402


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


def messages(count: int) -> list[bytes]:
    """`count` ADT^A03s, each under its own MSH-10 (the listener would answer a repeated one from its table)."""
    _, _, raw = a03()
    return [raw.replace(b"|RHN-0001|", f"|BENCH-{i:07d}|".encode(), 1) for i in range(count)]


def cpu() -> float:
    times = os.times()
    return times.user + times.system


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def confirm_only(settings: Settings, bodies: list[bytes]) -> dict[str, float]:
    publisher = ConfirmedPublisher(broker_settings(settings), SENDERS_BY_KIND["hospital"].exchange, "discharge")
    latencies = []
    start_cpu, start = cpu(), time.perf_counter()
    for body in bodies:
        sent = time.perf_counter()
        publisher.publish(body, str(uuid.uuid4()), hl7_intake.ER7_CONTENT_TYPE)
        latencies.append(time.perf_counter() - sent)
    elapsed, used = time.perf_counter() - start, cpu() - start_cpu
    publisher.close()
    return {
        "per_s": len(bodies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "cpu_us_per_message": used / len(bodies) * 1e6,
    }


def over_mllp(port: int, bodies: list[bytes]) -> tuple[list[float], list[str]]:
    """Each message framed on one connection kept open, the next sent when the ACK is in (as an engine does)."""
    latencies, codes = [], []
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        for body in bodies:
            sent = time.perf_counter()
            connection.sendall(START_BLOCK + body + END_BLOCK + CARRIAGE_RETURN)
            answer = b""
            while not answer.endswith(END_BLOCK + CARRIAGE_RETURN):
                chunk = connection.recv(65536)
                if not chunk:
                    raise ConnectionError("the listener closed the connection without an ACK")
                answer += chunk
            latencies.append(time.perf_counter() - sent)
            codes.append(msa_line(answer.lstrip(START_BLOCK)).split("|")[1])
    return latencies, codes


def listener_run(settings: Settings, dsn: str, bodies: list[bytes], connections: int) -> dict[str, float]:
    pipeline = build_pipeline(settings)
    with listening(settings, pipeline, dsn) as listener:
        over_mllp(listener.port, bodies[:20])  # warm up: the broker connection, the store's first transaction
        one = bodies[20 : len(bodies) // 2]
        start_cpu, start = cpu(), time.perf_counter()
        latencies, codes = over_mllp(listener.port, one)
        elapsed, used = time.perf_counter() - start, cpu() - start_cpu
        if set(codes) != {"AA"}:
            raise SystemExit(f"the listener did not accept every message: {sorted(set(codes))}")
        rest = bodies[len(bodies) // 2 :]
        shares = [rest[i::connections] for i in range(connections)]
        results: list[list[str]] = []
        threads = [threading.Thread(target=lambda s=s: results.append(over_mllp(listener.port, s)[1])) for s in shares]
        parallel_start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        parallel = time.perf_counter() - parallel_start
        if {c for r in results for c in r} != {"AA"}:
            raise SystemExit("the listener did not accept every message sent in parallel")
    return {
        "per_s": len(one) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "cpu_us_per_message": used / len(one) * 1e6,
        "parallel_per_s": len(rest) / parallel,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()
    configure_logging("WARNING")  # the listener logs each message at info: not what is measured
    vhost = f"hjerterehab-bench-mllp-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            dsn = f"sqlite:///{Path(tmp) / 'audit.sqlite3'}"
            settings = Settings.from_env(
                {"INTEGRATION_BROKER_URL": f"amqp://guest:guest@127.0.0.1:5672/{vhost}", "INTEGRATION_AUDIT_DSN": dsn}
            )
            subprocess.run(
                [sys.executable, "-c", "from integration.cli.main import main; main()", "topology", "apply"],
                check=True,
                capture_output=True,
                env={**os.environ, "INTEGRATION_BROKER_URL": settings.broker_url, "INTEGRATION_AUDIT_DSN": dsn},
                cwd=ROOT,
            )
            bodies = messages(args.messages)
            floor = confirm_only(settings, bodies[:500])
            listener = listener_run(settings, dsn, bodies, args.connections)
    finally:
        rabbitmqctl("delete_vhost", vhost)
    figures = {
        "confirm_only_per_s": round(floor["per_s"]),
        "confirm_only_p50_ms": round(floor["p50_ms"], 2),
        "mllp_per_s": round(listener["per_s"]),
        "mllp_p50_ms": round(listener["p50_ms"], 2),
        "mllp_p99_ms": round(listener["p99_ms"], 2),
        "mllp_cpu_us_per_message": round(listener["cpu_us_per_message"]),
        "mllp_parallel_per_s": round(listener["parallel_per_s"]),
        "connections": args.connections,
        "ratio_to_confirm_only": round(listener["per_s"] / floor["per_s"], 2),
    }
    print(
        f"confirm only: {figures['confirm_only_per_s']}/s (p50 {figures['confirm_only_p50_ms']} ms); "
        f"MLLP, one connection: {figures['mllp_per_s']}/s, AA after p50 {figures['mllp_p50_ms']} ms, "
        f"p99 {figures['mllp_p99_ms']} ms, {figures['mllp_cpu_us_per_message']} µs CPU per message; "
        f"{args.connections} connections: {figures['mllp_parallel_per_s']}/s"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
