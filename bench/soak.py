"""Soak: `integration run` on the local RabbitMQ at a fixed offered load for a bounded time, latency and memory
watched minute by minute. A script for a person, outside CI (the issue asks for 30 minutes).

The default rate is ten times Region Nordjylland's daily volume of cardiac discharge events, per second: some
8–12 discharge events a weekday (../shared/domain/README.md §8 "Volumes for sizing", an estimate: no public
figure), at the upper end 12, so 120 events/s. Distinct discharge events (each makes one referral) are
published at that rate with a paced loop, persistent, as the hospital sender; the end-to-end latency of an
event runs from its publish to its referral arriving on an output queue bound to rehab.referral (as
bench/pipeline.py measures it). The consumers' resident memory (summed over --consumers processes, default
one) is read from /proc every second.

After a warm-up (not counted), one line per minute: the referrals that arrived in that minute, their p50, p99
and maximum latency, the inbound queue's depth, the consumers' RSS at the minute's end. Publishing stops after
--minutes; referrals still on their way arrive within --drain-seconds and count in the last minute. The last
line printed is one JSON object; "flat" is true when the last minute's p99 is within 1.5 × the first minute's
+ 5 ms and the RSS grew by less than 20 % from the end of the first minute to the end of the last.

The store is PostgreSQL when INTEGRATION_AUDIT_DSN is set (the DSN is used as given), else SQLite in a
temporary directory (≈27 kB per event: 30 minutes at 120/s is ≈6 GB; removed at the end). The vhost is made
with rabbitmqctl and deleted at the end, whatever happened. Exit status 0 when flat and no event was lost,
1 otherwise.

    python bench/soak.py [--minutes 30] [--rate 120] [--consumers 1] [--warmup-seconds 15] [--drain-seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pika

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.pipeline import HOSPITAL, Broker, family, rabbitmqctl, rss_mb, start_pipeline  # noqa: E402 - after the path
from tests.support.events import distinct_referral_events  # noqa: E402 - after the path is set

# Region Nordjylland: some 8-12 cardiac discharge events a weekday (../shared/domain/README.md §8, an estimate).
NORDJYLLAND_DISCHARGES_PER_DAY = 12  # the upper end
RATE_EPS = 10 * NORDJYLLAND_DISCHARGES_PER_DAY  # "ten times the region's daily volume, per second" (issue #16)
INBOUND = "rehab.discharge-events"
OUTPUTS = "soak.outputs"
# flat: the last minute's p99 within this factor of the first's plus this slack, and RSS growth below this
P99_FACTOR, P99_SLACK_MS, RSS_GROWTH = 1.5, 5.0, 0.20


# -- the figures (pure) -------------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of `values` (ms); 0.0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


@dataclass
class Minute:
    """One counted minute: the latencies (ms) of the referrals that arrived in it, RSS (MB) at its end."""

    latencies: list[float] = field(default_factory=list)
    published: int = 0
    rss_mb: float = 0.0
    backlog: int = 0

    def line(self, number: int) -> str:
        p50, p99 = statistics.median(self.latencies) if self.latencies else 0.0, percentile(self.latencies, 0.99)
        top = max(self.latencies, default=0.0)
        return (
            f"minute {number}: {self.published} published, {len(self.latencies)} referrals, "
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {top:.1f} ms, "
            f"inbound backlog {self.backlog}, RSS {self.rss_mb:.1f} MB"
        )


def is_flat(p99_first: float, p99_last: float, rss_first: float, rss_last: float) -> bool:
    """Latency and memory flat: p99 last ≤ 1.5 × p99 first + 5 ms, and RSS grown by less than 20 %."""
    return p99_last <= P99_FACTOR * p99_first + P99_SLACK_MS and rss_last < (1 + RSS_GROWTH) * rss_first


def summary(minutes: Sequence[Minute], rate: int, events: int, rss_samples: Sequence[float]) -> dict[str, Any]:
    """The soak's JSON line from its counted minutes (at least one). Raises ValueError for none."""
    if not minutes:
        raise ValueError("no counted minute: the soak did not get past its warm-up")
    first, last = minutes[0], minutes[-1]
    figures: dict[str, Any] = {
        "soak_minutes": len(minutes),
        "rate_eps": rate,
        "events": events,
        "p50_ms_first": round(statistics.median(first.latencies), 1) if first.latencies else 0.0,
        "p99_ms_first": round(percentile(first.latencies, 0.99), 1),
        "p50_ms_last": round(statistics.median(last.latencies), 1) if last.latencies else 0.0,
        "p99_ms_last": round(percentile(last.latencies, 0.99), 1),
        "rss_mb_first": round(first.rss_mb, 1),
        "rss_mb_last": round(last.rss_mb, 1),
        "rss_mb_max": round(max(rss_samples, default=0.0), 1),
    }
    figures["flat"] = is_flat(figures["p99_ms_first"], figures["p99_ms_last"], first.rss_mb, last.rss_mb)
    return figures


# -- the run (I/O) ------------------------------------------------------------------------------------------


class Clock:
    """Where a moment falls: the warm-up (-1), a counted minute (0, 1, …), past the end (the last minute)."""

    def __init__(self, start: float, warmup: float, minutes: int) -> None:
        self.start, self.warmup, self.minutes = start, warmup, minutes
        self.end = start + warmup + 60 * minutes  # publishing stops here

    def minute(self, at: float) -> int:
        if at < self.start + self.warmup:
            return -1
        return min(int((at - self.start - self.warmup) // 60), self.minutes - 1)

    def minute_end(self, index: int) -> float:
        return self.start + self.warmup + 60 * (index + 1)


class Book:
    """Publish times of the events in flight; an arriving referral's latency goes to its arrival's minute."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.minutes = [Minute() for _ in range(clock.minutes)]
        self.published = 0
        self._sent: dict[str, float] = {}
        self._lock = threading.Lock()

    def sent(self, event_id: str, at: float) -> None:
        minute = self.clock.minute(at)
        with self._lock:
            self._sent[event_id] = at
            self.published += 1
            if minute >= 0:
                self.minutes[minute].published += 1

    def arrived(self, event_id: str, at: float) -> None:
        with self._lock:
            sent = self._sent.pop(event_id, None)  # None: a second copy (a redelivery), counted once
        minute = self.clock.minute(at)
        if sent is not None and minute >= 0:
            self.minutes[minute].latencies.append((at - sent) * 1000)

    def in_flight(self) -> int:
        with self._lock:
            return len(self._sent)


def event_id_of(referral: bytes) -> str:
    """The discharge event a referral answers: its ServiceRequest's identifier (urn:uuid:<event id>)."""
    bundle = orjson.loads(referral)
    request = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest")
    return str(request["identifier"][0]["value"]).removeprefix("urn:uuid:")


def paced_events(rate: int) -> Iterator[tuple[str, bytes]]:
    """Distinct discharge events without end, made a second's worth at a time (never all in memory)."""
    while True:
        yield from distinct_referral_events(rate)


def publish(url: str, book: Book, rate: int, stop: threading.Event) -> None:
    """Publish at `rate` events/s until the clock's end (or `stop`); a late event is sent at once, not skipped."""
    publisher = Broker(url)
    try:
        for i, (event_id, body) in enumerate(paced_events(rate)):
            due = book.clock.start + i / rate
            if due >= book.clock.end or stop.is_set():
                return
            if (wait := due - time.perf_counter()) > 0:
                time.sleep(wait)
            properties = pika.BasicProperties(
                delivery_mode=2, message_id=event_id, content_type="application/json", user_id=publisher.user
            )
            book.sent(event_id, time.perf_counter())
            publisher.channel.basic_publish(HOSPITAL, "discharge", body, properties)
            publisher.connection.process_data_events(0)
    finally:
        publisher.connection.close()


def collect(url: str, book: Book, stop: threading.Event) -> None:
    """Take every referral from the output queue, stamp its arrival, ack it; until `stop`."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=500)
    try:
        for method, _properties, body in channel.consume(OUTPUTS, inactivity_timeout=0.2):
            if method is None:
                if stop.is_set():
                    return
                continue
            book.arrived(event_id_of(body), time.perf_counter())
            channel.basic_ack(method.delivery_tag)
    finally:
        connection.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (/proc/<pid>/stat), which other load does not inflate."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Consumers:
    """The `integration run` processes under test (separate processes competing for the same queues), with
    their memory and CPU summed: the service's, whatever its number of processes."""

    def __init__(self, url: str, count: int, workdir: Path) -> None:
        sqlite = f"sqlite:///{workdir / 'audit.sqlite3'}"  # unless INTEGRATION_AUDIT_DSN is set (start_pipeline)
        self.logs = [workdir / "consumers.log"]
        # `integration run --processes N`; the health ports off: another instance may hold the default ones
        self.processes = [start_pipeline(url, sqlite, self.logs[0], count, INTEGRATION_HEALTH_LISTEN="")]

    def _alive(self) -> list[int]:
        for process in self.processes:
            if process.poll() is not None:
                raise RuntimeError(f"a consumer exited with {process.returncode}")
        return [pid for process in self.processes for pid in family(process.pid)]

    def rss_mb(self) -> float:
        """Resident memory of all of them (MB). Raises RuntimeError if one has exited."""
        return sum(rss_mb(pid) for pid in self._alive())

    def cpu_seconds(self) -> float:
        """CPU time of all of them so far. Raises RuntimeError if one has exited."""
        return sum(cpu_seconds(pid) for pid in self._alive())

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(timeout=60)


def watch(book: Book, consumers: Consumers, depth: Broker, drain_seconds: float) -> list[float]:
    """Sample the consumers' RSS every second, print each minute as it ends; after the last, wait up to
    `drain_seconds` for the referrals still on their way. Returns the RSS samples of the counted minutes.
    Raises RuntimeError if a consumer exits."""
    clock, samples = book.clock, []
    for index, minute in enumerate(book.minutes):
        until = clock.minute_end(index)
        if index == clock.minutes - 1:
            until = max(until, time.perf_counter())  # then the stragglers, below
        while time.perf_counter() < until:
            rss = consumers.rss_mb()
            if clock.minute(time.perf_counter()) >= 0:
                samples.append(rss)
            time.sleep(1)
        if index == clock.minutes - 1:
            deadline = time.perf_counter() + drain_seconds
            while book.in_flight() and time.perf_counter() < deadline:
                samples.append(consumers.rss_mb())
                time.sleep(1)
        minute.rss_mb, minute.backlog = samples[-1], depth.depth(INBOUND)
        print(minute.line(index + 1), flush=True)
    return samples


def await_consumers(broker: Broker, consumers: Consumers, timeout: float = 60) -> None:
    """Wait until every consumer consumes the inbound queue. Raises RuntimeError if one exits or does not start."""
    deadline = time.perf_counter() + timeout
    while broker.channel.queue_declare(INBOUND, passive=True).method.consumer_count < len(consumers.processes):
        consumers.rss_mb()
        if time.perf_counter() > deadline:
            raise RuntimeError(f"the consumers did not start consuming within {timeout:.0f} s")
        time.sleep(0.5)


def soak(url: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Run the consumer and the load on the vhost at `url`; the summary with the events lost added."""
    from integration.adapters.rabbitmq import BrokerSettings, connected

    with connected(BrokerSettings(url)) as connection:
        connection.apply_topology()
    broker = Broker(url)
    broker.channel.queue_declare(OUTPUTS, durable=True, arguments={"x-queue-type": "quorum"})
    broker.channel.queue_bind(OUTPUTS, "rehab.referral", "#")
    consumers = Consumers(url, args.consumers, workdir)
    stop = threading.Event()
    try:
        await_consumers(broker, consumers)  # start-up (imports, store, topology) is no part of the figures
        book = Book(Clock(time.perf_counter(), args.warmup_seconds, args.minutes))
        collector = threading.Thread(target=collect, args=(url, book, stop), daemon=True)
        publisher = threading.Thread(target=publish, args=(url, book, args.rate, stop), daemon=True)
        cpu_before = consumers.cpu_seconds()
        collector.start()
        publisher.start()
        samples = watch(book, consumers, broker, args.drain_seconds)
        cpu = consumers.cpu_seconds() - cpu_before
        publisher.join(timeout=10)
        figures = summary(book.minutes, args.rate, book.published, samples)
        figures["lost"] = book.in_flight()
        answered = book.published - figures["lost"]
        figures["consumers"] = args.consumers
        figures["consumer_cpu_ms_per_event"] = round(1000 * cpu / answered, 2) if answered else None
        figures["loadavg_1m"] = round(os.getloadavg()[0], 2)  # the machine's load: the latencies depend on it
        return figures
    except BaseException:
        print(f"consumer logs: {' '.join(map(str, consumers.logs))}", file=sys.stderr)
        raise
    finally:
        stop.set()
        consumers.stop()


def bounded(low: int, high: int) -> Any:
    """An argparse type: an integer in low..high (the soak is bounded), else argparse's usage error."""

    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not in {low}..{high}")
        return value

    return parse


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=bounded(1, 240), default=30, help="counted minutes, 1..240 (default 30)")
    parser.add_argument("--rate", type=bounded(1, 5000), default=RATE_EPS, help=f"events/s (default {RATE_EPS})")
    parser.add_argument("--consumers", type=bounded(1, 8), default=1, help="`integration run` processes (default 1)")
    parser.add_argument("--warmup-seconds", type=float, default=15.0, help="published but not counted")
    parser.add_argument("--drain-seconds", type=float, default=60.0, help="how long to wait for the last referrals")
    parser.add_argument("--vhost", default=f"soak-{uuid.uuid4().hex[:8]}", help="made here, deleted at the end")
    return parser.parse_args()


def main() -> int:
    args = arguments()
    store = "postgresql" if os.environ.get("INTEGRATION_AUDIT_DSN") else "sqlite"
    print(
        f"soak: {args.minutes} min at {args.rate} events/s, {args.consumers} consumer process(es), "
        f"vhost {args.vhost}, store {store}",
        flush=True,
    )
    rabbitmqctl("add_vhost", args.vhost)  # fails if it exists: never a vhost of someone else's
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    try:
        rabbitmqctl("set_permissions", "-p", args.vhost, "guest", ".*", ".*", ".*")
        figures = soak(f"amqp://guest:guest@127.0.0.1:5672/{args.vhost}", args, workdir)
    finally:
        rabbitmqctl("delete_vhost", args.vhost)
    shutil.rmtree(workdir, ignore_errors=True)
    figures["store"] = store
    print(json.dumps(figures))
    return 0 if figures["flat"] and figures["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
