"""Benchmark on the local RabbitMQ: a raw relay against the real referral pipeline, same run, same machine.

(a) relay: a pika consumer (BlockingConnection, prefetch 20) that consumes each message, republishes it
    persistent and mandatory with a publisher confirm, and acks it: the transport's own cost.
(b) pipeline: `integration run` (its own process) with validation, transformation and the audit log
    (SQLite unless INTEGRATION_AUDIT_DSN says otherwise).
Both drain the same backlog of distinct discharge events. Then the pipeline gets a fixed offered load of
100 events/s for end-to-end latency, and a large backlog while its resident memory is sampled.
The last line printed is one JSON object. Needs `rabbitmqctl` (a vhost of its own, deleted at the end).

    python bench/pipeline.py [--events 5000] [--backlog 100000] [--rate 100] [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import orjson
import pika

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from integration.topology import SENDERS_BY_KIND  # noqa: E402 - after the path is set
from tests.support.events import distinct_referral_events as events  # noqa: E402 - after the path is set

# Discharge events come from the hospital, on its own exchange (decision 14).
HOSPITAL = SENDERS_BY_KIND["hospital"].exchange


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


class Broker:
    def __init__(self, url: str) -> None:
        self.url = url
        parameters = pika.URLParameters(url)
        self.user = parameters.credentials.username  # the AMQP user-id every inbound message must carry
        self.connection = pika.BlockingConnection(parameters)
        self.channel = self.connection.channel()

    def depth(self, queue: str) -> int:
        return int(self.channel.queue_declare(queue, passive=True).method.message_count)

    def load(self, exchange: str, key: str, items: list[tuple[str, bytes]]) -> None:
        """Fill a backlog quickly (no confirms needed to set up a benchmark)."""
        for message_id, body in items:
            self.channel.basic_publish(
                exchange,
                key,
                body,
                pika.BasicProperties(
                    delivery_mode=2, message_id=message_id, content_type="application/json", user_id=self.user
                ),
            )
        self.connection.process_data_events(0)

    def wait_depth(self, queue: str, at_least: int, timeout: float) -> float:
        start = time.perf_counter()
        while self.depth(queue) < at_least:
            if time.perf_counter() - start > timeout:
                raise TimeoutError(f"{queue} stayed below {at_least}")
            time.sleep(0.02)
        return time.perf_counter() - start

    def drain_rate(self, queue: str, count: int, timeout: float) -> float:
        """Messages per second arriving in `queue`, from the first to the `count`-th (process start-up excluded)."""
        self.wait_depth(queue, 1, timeout)
        first = time.perf_counter()
        self.wait_depth(queue, count, timeout)
        return (count - 1) / (time.perf_counter() - first)


def relay(url: str, source: str, target: str, count: int) -> None:
    """The raw relay, run in its own process."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.confirm_delivery()
    channel.basic_qos(prefetch_count=20)
    done = 0

    def on_message(ch, method, properties, body):  # type: ignore[no-untyped-def]
        nonlocal done
        ch.basic_publish(
            "", target, body, pika.BasicProperties(delivery_mode=2, message_id=properties.message_id), mandatory=True
        )
        ch.basic_ack(method.delivery_tag)
        done += 1
        if done >= count:
            ch.stop_consuming()

    channel.basic_consume(source, on_message)
    channel.start_consuming()
    connection.close()


def start_pipeline(url: str, audit_dsn: str, log: Path, **settings: str) -> subprocess.Popen[bytes]:
    """`integration run` on `url`, with INTEGRATION_AUDIT_DSN from the environment or else `audit_dsn`, and any
    other INTEGRATION_* `settings` (nothing else of the caller's INTEGRATION_* environment)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
    env.update(
        {"INTEGRATION_BROKER_URL": url, "INTEGRATION_AUDIT_DSN": os.environ.get("INTEGRATION_AUDIT_DSN", audit_dsn)}
    )
    env.update(settings)
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "integration", "--log-level", "WARNING", "run"], env=env, stdout=sink, stderr=sink
        )


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def latency_run(broker_url: str, outputs: str, rate: int, seconds: int) -> list[float]:
    """Publish at a fixed rate; the latency of each event is from its publish to its referral's arrival."""
    sent: dict[str, float] = {}
    latencies: list[float] = []
    total = rate * seconds
    stop = threading.Event()

    def collect() -> None:
        connection = pika.BlockingConnection(pika.URLParameters(broker_url))
        channel = connection.channel()
        for method, _properties, body in channel.consume(outputs, inactivity_timeout=0.2):
            if method is None:
                if stop.is_set():
                    break
                continue
            arrived = time.perf_counter()
            bundle = orjson.loads(body)
            request = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest")
            event_id = request["identifier"][0]["value"].removeprefix("urn:uuid:")
            if event_id in sent:
                latencies.append((arrived - sent[event_id]) * 1000)
            channel.basic_ack(method.delivery_tag)
            if len(latencies) >= total:
                break
        connection.close()

    collector = threading.Thread(target=collect)
    collector.start()
    publisher = Broker(broker_url)
    start = time.perf_counter()
    for i, (event_id, body) in enumerate(events(total)):
        due = start + i / rate
        while (now := time.perf_counter()) < due:
            time.sleep(min(due - now, 0.002))
        sent[event_id] = time.perf_counter()
        publisher.channel.basic_publish(
            HOSPITAL,
            "discharge",
            body,
            pika.BasicProperties(
                delivery_mode=2, message_id=event_id, content_type="application/json", user_id=publisher.user
            ),
        )
        publisher.connection.process_data_events(0)
    collector.join(timeout=seconds + 60)
    stop.set()
    collector.join(timeout=10)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--drain-seconds", type=int, default=150, help="how long to watch memory while draining")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from integration.adapters.rabbitmq import BrokerSettings, connected

    vhost = f"bench-{uuid.uuid4().hex[:8]}"
    url = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    result: dict[str, float] = {}
    try:
        with connected(BrokerSettings(url)) as connection:
            connection.apply_topology()
        broker = Broker(url)
        for queue in ("bench.relay.in", "bench.relay.out", "bench.outputs"):
            broker.channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
        broker.channel.queue_bind("bench.outputs", "rehab.referral", "#")
        sample = events(args.events)

        # (a) the raw relay
        broker.load("", "bench.relay.in", sample)
        broker.wait_depth("bench.relay.in", args.events, 60)
        relay_process = subprocess.Popen([sys.executable, __file__, "--relay", url, str(args.events)])
        result["relay_eps"] = round(broker.drain_rate("bench.relay.out", args.events, 600), 1)
        relay_process.wait(timeout=60)
        print(f"relay: {args.events} events, {result['relay_eps']} events/s", flush=True)

        # (b) the pipeline, same backlog size
        broker.load(HOSPITAL, "discharge", sample)
        broker.wait_depth("rehab.discharge-events", args.events, 60)
        pipeline = start_pipeline(url, f"sqlite:///{workdir / 'audit.sqlite3'}", workdir / "pipeline.log")
        result["pipeline_eps"] = round(broker.drain_rate("bench.outputs", args.events, 900), 1)
        result["ratio"] = round(result["pipeline_eps"] / result["relay_eps"], 3)
        print(f"pipeline: {args.events} events, {result['pipeline_eps']} events/s; ratio {result['ratio']}", flush=True)
        broker.channel.queue_purge("bench.outputs")

        # latency at a fixed offered load
        latencies = latency_run(url, "bench.outputs", args.rate, args.seconds)
        latencies.sort()
        result["p50_ms"] = round(statistics.median(latencies), 1)
        result["p99_ms"] = round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 1)
        print(
            f"latency at {args.rate} events/s for {args.seconds} s: {len(latencies)} referrals, "
            f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms",
            flush=True,
        )

        # resident memory while a large backlog drains
        broker.channel.queue_unbind("bench.outputs", "rehab.referral", "#")
        broker.load(HOSPITAL, "discharge", events(args.backlog))
        samples = []
        deadline = time.perf_counter() + args.drain_seconds
        while time.perf_counter() < deadline and broker.depth("rehab.discharge-events") > 0:
            samples.append(rss_mb(pipeline.pid))
            time.sleep(1)
        drained = args.backlog - broker.depth("rehab.discharge-events")
        result["rss_mb_max"] = round(max(samples), 1)
        half = samples[len(samples) // 2 :]
        print(
            f"memory while draining a {args.backlog}-event backlog for {len(samples)} s ({drained} drained): "
            f"RSS first {samples[0]:.1f} MB, at half-time {half[0]:.1f} MB, last {samples[-1]:.1f} MB, "
            f"max {result['rss_mb_max']} MB",
            flush=True,
        )
        pipeline.terminate()
        pipeline.wait(timeout=60)
    finally:
        rabbitmqctl("delete_vhost", vhost)
    print(json.dumps(result))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--relay":
        relay(sys.argv[2], "bench.relay.in", "bench.relay.out", int(sys.argv[3]))
    else:
        main()
