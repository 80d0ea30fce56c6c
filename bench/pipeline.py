"""Benchmark on the local RabbitMQ: the transport's ceiling against the real referral pipeline, same run, same
machine (issue #16). CPU is read from /proc (utime + stime of the consumer processes and of the broker's beam
process), so the shared machine's load distorts rates but not CPU per event.

(a) async relay: consumes each batch, republishes it persistent and mandatory in one confirm window (confirms
    in flight), acks the batch with one `multiple` ack — the transport's ceiling for this work.
(b) relay: the same with pika's blocking confirm per message and an ack per message.
(c) pipeline: `integration run --processes N` (N = 1, 2, 3) with validation, transformation and the audit log
    (SQLite unless INTEGRATION_AUDIT_DSN says otherwise), draining the same backlog of distinct discharge events.
Then end-to-end latency at a fixed offered load of 100 events/s with the best N (and with one process,
`p50_ms_n1`/`p99_ms_n1`, when the best is more); resident memory (the largest process) while a 100k backlog
drains; and `integration audit verify` on 1 M records (bench/audit_verify_bench.py).
The last line printed is one JSON object with at least: async_relay_eps, relay_eps, pipeline_eps (best N),
best_n, ratio_async, cpu_us_per_event (consumer + broker, best N), p50_ms, p99_ms, rss_mb_max, verify_1m_s,
verify_1m_mb. Needs `rabbitmqctl` (a vhost of its own, deleted at the end).

    python bench/pipeline.py [--events 5000] [--backlog 100000] [--rate 100] [--seconds 20] [--verify-records 1000000]
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

    def wait_consumers(self, queue: str, count: int, timeout: float) -> None:
        """Until `count` consumers take from `queue` (the pipeline has started, warmed up and connected)."""
        deadline = time.perf_counter() + timeout
        while self.channel.queue_declare(queue, passive=True).method.consumer_count < count:
            if time.perf_counter() > deadline:
                raise SystemExit(f"the pipeline did not start consuming {queue} within {timeout:.0f} s")
            time.sleep(0.1)

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


def async_relay(url: str, source: str, target: str, count: int) -> None:
    """The relay with confirms in flight, run in its own process: each batch taken is published in one confirm
    window and acked with one `multiple` ack (the project's RabbitMQ adapter, which does exactly that)."""
    from integration.adapters.rabbitmq import BrokerSettings, RabbitConnection
    from integration.service.ports import Publication

    connection = RabbitConnection(BrokerSettings(url, prefetch=100))
    batch: list = []
    connection.consume(source, batch.append)
    done = 0
    while done < count:
        connection.process_events(0 if batch else 0.05)
        if not batch:
            continue
        taken, batch[:] = list(batch), []
        connection.publish_all([Publication("", target, m.body, m.message_id or "x") for m in taken])
        connection.ack(max(m.delivery_tag for m in taken), multiple=True)
        done += len(taken)
    connection.close()


def start_pipeline(url: str, audit_dsn: str, log: Path, processes: int = 1, **settings: str) -> subprocess.Popen[bytes]:
    """`integration run --processes N` on `url`, with INTEGRATION_AUDIT_DSN from the environment or else
    `audit_dsn`, and any other INTEGRATION_* `settings` (nothing else of the caller's INTEGRATION_* environment)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
    env.update(
        {"INTEGRATION_BROKER_URL": url, "INTEGRATION_AUDIT_DSN": os.environ.get("INTEGRATION_AUDIT_DSN", audit_dsn)}
    )
    env.update(settings)
    command = [sys.executable, "-m", "integration", "--log-level", "WARNING", "run", "--processes", str(processes)]
    with log.open("ab") as sink:
        return subprocess.Popen(command, env=env, stdout=sink, stderr=sink)


def family(pid: int) -> list[int]:
    """`pid` and its descendants (a supervisor's workers)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            children = (task / "children").read_text().split() if (task / "children").exists() else []
            todo += [int(c) for c in children]
    return found


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (and of their reaped children), in seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return total / ticks


def broker_pid() -> int:
    return int(
        subprocess.run(
            ["rabbitmqctl", "eval", "list_to_integer(os:getpid())."],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()
    )


class CpuMeter:
    """CPU seconds spent by the consumer processes and by the broker between `start` and `stop`."""

    def __init__(self, consumer_pids: list[int], broker: int) -> None:
        self.consumer_pids, self.broker = consumer_pids, broker

    def start(self) -> CpuMeter:
        self.consumer0, self.broker0 = cpu_seconds(self.consumer_pids), cpu_seconds([self.broker])
        return self

    def stop(self, events: int) -> tuple[float, float]:
        """(consumer µs per event, broker µs per event)."""
        consumer = cpu_seconds(self.consumer_pids) - self.consumer0
        broker = cpu_seconds([self.broker]) - self.broker0
        return consumer / events * 1e6, broker / events * 1e6


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class FsyncProbe:
    """The disk's own latency floor during the latency run: an 8 kB write and fsync every 50 ms in the store's
    directory, as SQLite's commit does (synchronous=FULL), timed. A batch is acked only after its commit's fsync,
    so no event's latency can beat a slow fsync met on its way."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "fsync-probe.bin"
        self.times_ms: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> FsyncProbe:
        self._thread.start()
        return self

    def stop(self) -> tuple[float, float]:
        """(p99, max) of the fsyncs timed, in milliseconds."""
        self._stop.set()
        self._thread.join()
        self.path.unlink(missing_ok=True)
        ordered = sorted(self.times_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], ordered[-1]

    def _run(self) -> None:
        descriptor = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
        try:
            while not self._stop.wait(0.05):
                os.write(descriptor, b"\0" * 8192)
                started = time.perf_counter()
                os.fsync(descriptor)
                self.times_ms.append((time.perf_counter() - started) * 1000)
        finally:
            os.close(descriptor)


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


def drain_measured(broker: Broker, queue: str, count: int, root: int, beam: int) -> tuple[float, float, float]:
    """(events/s, consumer µs per event, broker µs per event) while `count` events arrive in `queue`; the rate from
    the first to the last arrival (start-up excluded), CPU over the same span, of process `root` and its
    descendants (read once the first event has arrived: a supervisor's workers are up by then)."""
    broker.wait_depth(queue, 1, 600)
    meter = CpuMeter(family(root), beam).start()
    first = time.perf_counter()
    broker.wait_depth(queue, count, 900)
    elapsed = time.perf_counter() - first
    consumer_us, broker_us = meter.stop(count)
    return (count - 1) / elapsed, consumer_us, broker_us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--drain-seconds", type=int, default=150, help="how long to watch memory while draining")
    parser.add_argument("--processes", default="1,2,3", help="the pipeline's consumer processes to try")
    parser.add_argument("--verify-records", type=int, default=1_000_000, help="0: skip audit verify")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from integration.adapters.rabbitmq import BrokerSettings, connected

    vhost = f"bench-{uuid.uuid4().hex[:8]}"
    url = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    beam = broker_pid()
    result: dict[str, float] = {}
    try:
        with connected(BrokerSettings(url)) as connection:
            connection.apply_topology()
        broker = Broker(url)
        for queue in ("bench.relay.in", "bench.relay.out", "bench.outputs"):
            broker.channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
        broker.channel.queue_bind("bench.outputs", "rehab.referral", "#")
        sample = events(args.events)

        # (a) the async relay, (b) the blocking relay: the same backlog each
        for name, mode in (("async_relay", "--async-relay"), ("relay", "--relay")):
            broker.load("", "bench.relay.in", sample)
            broker.wait_depth("bench.relay.in", args.events, 60)
            process = subprocess.Popen([sys.executable, __file__, mode, url, str(args.events)])
            eps, consumer_us, broker_us = drain_measured(broker, "bench.relay.out", args.events, process.pid, beam)
            process.wait(timeout=120)
            broker.channel.queue_purge("bench.relay.out")
            result[f"{name}_eps"] = round(eps, 1)
            result[f"{name}_cpu_us_per_event"] = round(consumer_us + broker_us)
            print(
                f"{name}: {args.events} events, {eps:.0f} events/s, CPU {consumer_us:.0f} µs relay + "
                f"{broker_us:.0f} µs broker per event",
                flush=True,
            )

        # (c) the pipeline with N consumer processes, a fresh store each time
        runs: dict[int, tuple[float, float, float]] = {}
        for n in [int(n) for n in args.processes.split(",")]:
            broker.load(HOSPITAL, "discharge", events(args.events))
            broker.wait_depth("rehab.discharge-events", args.events, 60)
            dsn = f"sqlite:///{workdir / f'audit-{n}.sqlite3'}"
            pipeline = start_pipeline(url, dsn, workdir / f"pipeline-{n}.log", n)
            time.sleep(0.5)
            runs[n] = drain_measured(broker, "bench.outputs", args.events, pipeline.pid, beam)
            pipeline.terminate()
            pipeline.wait(timeout=120)
            broker.channel.queue_purge("bench.outputs")
            eps, consumer_us, broker_us = runs[n]
            result[f"pipeline_{n}_eps"] = round(eps, 1)
            result[f"pipeline_{n}_cpu_us_per_event"] = round(consumer_us + broker_us)
            print(
                f"pipeline N={n}: {args.events} events, {eps:.0f} events/s, CPU {consumer_us:.0f} µs consumer + "
                f"{broker_us:.0f} µs broker per event",
                flush=True,
            )
        best_n = max(runs, key=lambda n: runs[n][0])
        eps, consumer_us, broker_us = runs[best_n]
        result.update(
            best_n=best_n,
            pipeline_eps=round(eps, 1),
            ratio_async=round(eps / result["async_relay_eps"], 3),
            ratio=round(eps / result["relay_eps"], 3),
            consumer_cpu_us_per_event=round(consumer_us),
            broker_cpu_us_per_event=round(broker_us),
            cpu_us_per_event=round(consumer_us + broker_us),
        )
        print(f"best N={best_n}: {eps:.0f} events/s, {result['ratio_async']} of the async relay", flush=True)

        # latency at a fixed offered load: one process, and the best N when that is more
        for n in sorted({1, best_n}, reverse=True):
            if n != best_n:
                pipeline.terminate()
                pipeline.wait(timeout=120)
            pipeline = start_pipeline(url, f"sqlite:///{workdir / f'audit-latency-{n}.sqlite3'}", workdir / "l.log", n)
            broker.wait_consumers("rehab.discharge-events", n, 60)
            probe = FsyncProbe(workdir).start()
            latencies = sorted(latency_run(url, "bench.outputs", args.rate, args.seconds))
            fsync_p99, fsync_max = probe.stop()
            p50, p99 = statistics.median(latencies), latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
            suffix = "" if n == best_n else f"_n{n}"
            result[f"p50_ms{suffix}"], result[f"p99_ms{suffix}"] = round(p50, 1), round(p99, 1)
            result[f"fsync_p99_ms{suffix}"], result[f"fsync_max_ms{suffix}"] = round(fsync_p99, 1), round(fsync_max, 1)
            print(
                f"latency at {args.rate} events/s for {args.seconds} s (N={n}): {len(latencies)} referrals, "
                f"p50 {p50:.1f} ms, p99 {p99:.1f} ms; the disk's fsync meanwhile: p99 {fsync_p99:.1f} ms, "
                f"max {fsync_max:.1f} ms",
                flush=True,
            )

        # resident memory while a large backlog drains (the largest process)
        broker.channel.queue_unbind("bench.outputs", "rehab.referral", "#")
        broker.load(HOSPITAL, "discharge", events(args.backlog))
        samples = []
        deadline = time.perf_counter() + args.drain_seconds
        while time.perf_counter() < deadline and broker.depth("rehab.discharge-events") > 0:
            samples.append(max(rss_mb(pid) for pid in family(pipeline.pid)))
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
        pipeline.wait(timeout=120)
    finally:
        rabbitmqctl("delete_vhost", vhost)
    if args.verify_records:
        # In a process of its own: a child forked from this one (large by now) would count this one's pages in its
        # peak RSS before it runs verify (464 MB instead of 107 MB at 1 M records in one run).
        script = str(ROOT / "bench" / "audit_verify_bench.py")
        verify_bench = [sys.executable, script, "--records", str(args.verify_records)]
        done = subprocess.run(verify_bench, capture_output=True, text=True, check=True, timeout=3600)
        verified = json.loads(done.stdout.strip().splitlines()[-1])
        result["verify_1m_s"], result["verify_1m_mb"] = verified["verify_1m_s"], verified["verify_1m_mb"]
        result["verify_records"] = args.verify_records
        print(
            f"audit verify of {args.verify_records} records: {result['verify_1m_s']} s, {result['verify_1m_mb']} MB",
            flush=True,
        )
    print(json.dumps(result))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--relay":
        relay(sys.argv[2], "bench.relay.in", "bench.relay.out", int(sys.argv[3]))
    elif len(sys.argv) == 4 and sys.argv[1] == "--async-relay":
        async_relay(sys.argv[2], "bench.relay.in", "bench.relay.out", int(sys.argv[3]))
    else:
        main()
