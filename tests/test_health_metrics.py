"""The consumer's metrics and health endpoints without a broker: what a batch on the in-memory bus counts, the
gauges the refresher reads from the store (and keeps when it cannot), /livez, /readyz naming the mappings
until they have loaded, and a health port already in use."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from integration import bootstrap
from integration.adapters import health
from integration.adapters.consumer import ConsumerService
from integration.adapters.health import MAPPINGS, Health, serve
from integration.adapters.memory import InMemoryBroker, drain_in_memory
from integration.adapters.rabbitmq import BrokerSettings
from integration.adapters.sql.sqlite import SqliteAuditStore
from integration.bootstrap import build
from integration.config import Settings
from integration.domain.course import OutboundState
from integration.errors import ConfigurationError, ConnectionLost, Transient
from integration.flows.dispatch import Pipeline
from integration.service import metrics
from integration.service.audit_chain import AuditEntry
from integration.service.metrics_refresh import PATHWAY_RULES, PATHWAY_SHARE, GaugeRefresher
from integration.service.processor import RetryPolicy
from integration.topology import FLOWS_BY_NAME, SENDERS_BY_KIND
from tests.conftest import FIXED_NOW, GOLDEN

EVENT = GOLDEN / "discharge" / "01-municipal-gop-general-sternotomy.event.json"
DISCHARGE = FLOWS_BY_NAME["discharge"]
FAST = RetryPolicy(attempts=2, seconds=1, initial_wait=0.001, max_wait=0.01)


def value(name: str, **labels: str) -> float:
    """A sample's value in the default registry; 0 for a labelled child not created yet."""
    found = REGISTRY.get_sample_value(name, labels)
    return 0.0 if found is None else found


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()


@pytest.fixture
def served() -> Iterator[tuple[Health, int, list[float]]]:
    now = [1000.0]
    health = Health(clock=lambda: now[0])
    server = serve(health, "127.0.0.1:0")
    assert server is not None
    try:
        yield health, server.server_port, now
    finally:
        server.shutdown()
        server.server_close()


# -- counted on the in-memory bus ------------------------------------------------------------------------
def test_a_batch_on_the_in_memory_bus_counts_received_settled_time_and_batch_size(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    broker = InMemoryBroker()
    broker.bind("rehab.referral", "sink", "#")
    hospital = SENDERS_BY_KIND["hospital"].exchange
    broker.publish(hospital, "discharge", EVENT.read_bytes(), "m-1", content_type="application/json")
    broker.publish(hospital, "discharge", b"{not json", "m-2", content_type="application/json")
    store = SqliteAuditStore(str(tmp_path / "audit.sqlite3"))
    processor = build(
        Settings.from_env({}), bus=broker, store=store, clock=lambda: FIXED_NOW, pipeline=pipeline, retry=FAST
    ).processor
    before = {
        "received": value("rehab_messages_received_total", flow="discharge"),
        "processed": value("rehab_messages_total", flow="discharge", outcome="processed"),
        "dead": value("rehab_messages_total", flow="discharge", outcome="dead-lettered"),
        "timed": value("rehab_processing_seconds_count", flow="discharge"),
        "batches": value("rehab_batch_size_count"),
        "records": value("rehab_audit_records_total"),
    }
    assert drain_in_memory(broker, processor, [DISCHARGE]) == 2
    assert value("rehab_messages_received_total", flow="discharge") == before["received"] + 2
    assert value("rehab_messages_total", flow="discharge", outcome="processed") == before["processed"] + 1
    assert value("rehab_messages_total", flow="discharge", outcome="dead-lettered") == before["dead"] + 1
    assert value("rehab_processing_seconds_count", flow="discharge") == before["timed"] + 2
    assert value("rehab_processing_seconds_sum", flow="discharge") > 0
    assert value("rehab_batch_size_count") == before["batches"] + 2
    assert value("rehab_messages_in_flight") == 0  # each taken one settled
    written = len(list(store.records()))
    assert value("rehab_audit_records_total") - before["records"] == written  # the store started empty
    store.close()


def test_the_audit_records_counter_counts_a_state_change_alone_as_one_record(tmp_path: Path) -> None:
    store = SqliteAuditStore(str(tmp_path / "audit.sqlite3"))
    before = value("rehab_audit_records_total")
    store.record([AuditEntry("received", "discharge", "m-1"), AuditEntry("acked", "discharge", "m-1")], FIXED_NOW)
    store.record([], FIXED_NOW)  # nothing to write: nothing counted
    assert value("rehab_audit_records_total") == before + 2
    assert store.head()[0] == 2
    store.close()


# -- gauges from the store -------------------------------------------------------------------------------
@dataclass
class Pending:
    request: Any
    received_at: datetime
    overdue_noted: bool = False


@dataclass
class Request:
    department: str | None


class CountingStore:
    def __init__(self) -> None:
        self.counts = {
            OutboundState.AWAITING: 3,
            OutboundState.FAILED: 1,
            OutboundState.GAVE_UP: 2,
            OutboundState.STOPPED: 5,
        }
        self.requests = [Pending(Request(None), FIXED_NOW - timedelta(hours=30)), Pending(Request(None), FIXED_NOW)]
        self.seq = 41
        self.fail: Exception | None = None

    def outbound_count(self, state: OutboundState) -> int:
        if self.fail:
            raise self.fail
        return self.counts[state]

    def open_requests(self) -> list[Pending]:
        return self.requests

    def head(self) -> tuple[int, str]:
        return self.seq, "h"


class Depths:
    def __init__(self, depths: dict[str, int | None]) -> None:
        self.depths = depths
        self.asked: list[str] = []

    def queue_depths(self, names: Sequence[str]) -> dict[str, int | None]:
        self.asked = list(names)
        return {n: self.depths.get(n) for n in names}


def refresher(store: CountingStore, up: list[bool], **options: Any) -> GaugeRefresher:
    return GaugeRefresher(
        store=store,
        hotlines={},
        hotline_limit=8,
        dead_letter_queues=["t.dlq"],
        inbound_queues=["t.in"],
        clock=lambda: FIXED_NOW,
        store_up=lambda: up[0],
        **options,
    )


def test_the_refresher_sets_outbound_overdue_head_and_queue_gauges() -> None:
    store, up = CountingStore(), [True]
    refresher(store, up)(Depths({"t.dlq": 4, "t.in": 7}))
    assert value("rehab_outbound_messages", state="awaiting") == 3
    assert value("rehab_outbound_messages", state="failed") == 1
    assert value("rehab_outbound_messages", state="gave-up") == 2
    assert value("rehab_outbound_messages", state="stopped") == 5  # the patient died: a person decides
    assert value("rehab_hotline_overdue") == 1  # 30 hours in triage (every hour counts) > 8; the new one is not
    assert value("rehab_audit_chain_head") == 41
    assert value("rehab_dead_letter_queue_messages", queue="t.dlq") == 4
    assert value("rehab_inbound_queue_messages", queue="t.in") == 7
    assert value("rehab_metrics_refreshed_timestamp_seconds", source="audit-store") > 0


def test_the_store_is_not_asked_while_it_is_down_and_the_gauges_keep_their_last_value() -> None:
    store, up = CountingStore(), [True]
    refresh = refresher(store, up)
    refresh(Depths({"t.dlq": 0, "t.in": 0}))
    failures = value("rehab_metrics_refresh_failures_total", source="audit-store")
    store.counts[OutboundState.AWAITING], store.seq, up[0] = 9, 99, False
    store.fail = AssertionError("asked while down")
    refresh(Depths({"t.dlq": 5, "t.in": 0}))
    assert value("rehab_outbound_messages", state="awaiting") == 3 and value("rehab_audit_chain_head") == 41
    assert value("rehab_metrics_refresh_failures_total", source="audit-store") == failures + 1
    assert value("rehab_dead_letter_queue_messages", queue="t.dlq") == 5  # the broker's gauges go on


def test_a_store_failing_during_a_refresh_is_counted_and_changes_no_gauge() -> None:
    store, up = CountingStore(), [True]
    refresh = refresher(store, up)
    refresh(Depths({"t.dlq": 0, "t.in": 0}))
    failures = value("rehab_metrics_refresh_failures_total", source="audit-store")
    store.seq, store.fail = 77, Transient("audit store unavailable (test)")
    refresh(Depths({"t.dlq": 0, "t.in": 0}))  # no exception
    assert value("rehab_audit_chain_head") == 41
    assert value("rehab_metrics_refresh_failures_total", source="audit-store") == failures + 1


def test_a_missing_dead_letter_queue_is_no_depth_of_zero_and_counts_a_failure() -> None:
    store, up = CountingStore(), [True]
    refresh = refresher(store, up)
    refresh(Depths({"t.dlq": 2, "t.in": 0}))
    failures = value("rehab_metrics_refresh_failures_total", source="broker")
    refresh(Depths({"t.in": 0}))
    assert REGISTRY.get_sample_value("rehab_dead_letter_queue_messages", {"queue": "t.dlq"}) is None
    assert value("rehab_metrics_refresh_failures_total", source="broker") == failures + 1


def test_the_broker_connection_lost_during_a_refresh_reaches_the_consumer() -> None:
    class Lost:
        def queue_depths(self, names: Sequence[str]) -> dict[str, int | None]:
            raise ConnectionLost("gone (test)")

    with pytest.raises(ConnectionLost):
        refresher(CountingStore(), [True])(Lost())


def test_the_pathway_gauge_has_every_rule_and_clears_to_zero() -> None:
    counts = [{"visitation": 2, "ack-missing": 1}]
    refresh = refresher(CountingStore(), [True], pathway=lambda at: counts[0], pathway_every=0)
    refresh(Depths({"t.dlq": 0, "t.in": 0}))
    assert value("rehab_pathway_overdue", rule="visitation") == 2
    assert all(REGISTRY.get_sample_value("rehab_pathway_overdue", {"rule": r}) is not None for r in PATHWAY_RULES)
    counts[0] = {}
    refresh(Depths({"t.dlq": 0, "t.in": 0}))
    assert value("rehab_pathway_overdue", rule="visitation") == 0


def test_a_defect_in_the_refresher_is_counted_and_does_not_end_the_consumer_loop() -> None:
    def broken(_connection: object) -> None:
        raise ZeroDivisionError

    service = ConsumerService(
        BrokerSettings("amqp://guest:guest@127.0.0.1:1/none"), [DISCHARGE], lambda bus: None, refresh=broken
    )  # type: ignore[arg-type,return-value]
    before = value("rehab_metrics_refresh_failures_total", source="refresher")
    service._refresh_metrics(object())  # type: ignore[arg-type]  # noqa: SLF001 - the loop's step under test
    service._refresh_metrics(object())  # type: ignore[arg-type]  # noqa: SLF001 - not due again yet
    assert value("rehab_metrics_refresh_failures_total", source="refresher") == before + 1


# -- /livez, /readyz, the port -------------------------------------------------------------------------
def test_livez_and_its_alias_healthz_say_whether_the_loop_turns(served: tuple[Health, int, list[float]]) -> None:
    health, port, now = served
    assert get(port, "/livez") == (200, "alive\n") and get(port, "/healthz") == (200, "alive\n")
    now[0] += 61
    assert get(port, "/livez")[0] == 503 and get(port, "/healthz")[0] == 503
    health.beat()
    assert get(port, "/livez")[0] == 200
    assert value("rehab_consumer_loop_beat_timestamp_seconds") > 0
    assert get(port, "/nothing")[0] == 404


def test_readyz_names_the_mappings_until_they_have_loaded(served: tuple[Health, int, list[float]]) -> None:
    health, port, now = served
    health.up("broker")
    health.down(MAPPINGS, "not loaded yet (mappings/)")
    now[0] += 3
    status, text = get(port, "/readyz")
    assert status == 503 and text == "mappings unavailable for 3 s: not loaded yet (mappings/)\n"
    assert value("rehab_ready") == 0 and value("rehab_dependency_up", dependency="mappings") == 0
    health.up(MAPPINGS)
    assert get(port, "/readyz") == (200, "ready\n")
    assert value("rehab_ready") == 1


def test_run_is_not_ready_while_the_mappings_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """`run` serves the endpoints before it reads the mappings, and /readyz names them meanwhile."""
    seen: dict[str, Any] = {}

    def serving(health: Health, listen: str) -> Any:
        seen["server"] = serve(health, listen)
        return seen["server"]

    def loading(settings: Settings, **_: Any) -> Any:
        seen["readyz"] = get(seen["server"].server_port, "/readyz")
        seen["livez"] = get(seen["server"].server_port, "/livez")
        raise ConfigurationError("stopped here (test)")

    monkeypatch.setattr(bootstrap, "serve", serving)
    monkeypatch.setattr(bootstrap, "build", loading)
    settings = replace(Settings.from_env({}), health_listen="127.0.0.1:0")
    try:
        with pytest.raises(ConfigurationError, match="stopped here"):
            bootstrap.run_consumers(settings, None)
    finally:
        seen["server"].shutdown()
        seen["server"].server_close()
    status, text = seen["readyz"]
    assert status == 503 and any(line.startswith("mappings unavailable") for line in text.splitlines())
    assert str(settings.mappings_dir) in text
    assert seen["livez"][0] == 200


def test_a_health_port_in_use_is_a_configuration_error_naming_the_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigurationError) as raised:
            serve(Health(), f"127.0.0.1:{port}")
    said = str(raised.value)
    assert said.startswith(f"INTEGRATION_HEALTH_LISTEN=127.0.0.1:{port} cannot be bound")
    assert "in use" in said and "\n" not in said


@pytest.mark.parametrize("listen", ["localhost", "127.0.0.1:http", "127.0.0.1:99999"])
def test_a_health_address_that_is_no_host_and_port_is_a_configuration_error(listen: str) -> None:
    with pytest.raises(ConfigurationError, match="INTEGRATION_HEALTH_LISTEN"):
        serve(Health(), listen)


def test_an_empty_health_address_switches_the_endpoints_off() -> None:
    assert serve(Health(), "") is None


def test_an_idle_connection_and_half_sent_requests_do_not_hold_up_the_probes(
    served: tuple[Health, int, list[float]],
) -> None:
    """Attack on #14, item 1: one silent connection blocked /livez for good on a one-at-a-time server."""
    _, port, _ = served
    held = [socket.create_connection(("127.0.0.1", port))]
    for _ in range(3):
        half = socket.create_connection(("127.0.0.1", port))
        half.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # no blank line: the request never ends
        held.append(half)
    try:
        time.sleep(0.3)  # let the server take them all before the probe
        started = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=2) as answer:
            assert answer.status == 200 and answer.read() == b"alive\n"
        assert get(port, "/readyz")[0] == 503  # not ready (no broker here) is an answer too, and a quick one
    finally:
        for connection in held:
            connection.close()
    assert time.monotonic() - started < 2


def test_a_half_sent_request_is_closed_by_the_server_after_the_timeout(
    served: tuple[Health, int, list[float]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, port, _ = served
    assert 1 <= health.REQUEST_TIMEOUT <= 10  # long enough for a slow scraper, short enough for the probes
    monkeypatch.setattr(health, "REQUEST_TIMEOUT", 0.5)
    with socket.create_connection(("127.0.0.1", port)) as half:
        half.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
        half.settimeout(5)
        started = time.monotonic()
        assert half.recv(1024) == b""  # closed by the server, unanswered; a timeout here raises
    assert time.monotonic() - started < 3


def test_a_client_trickling_its_request_is_cut_off_when_the_connections_time_is_up(
    served: tuple[Health, int, list[float]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A header line every 0.2 s never trips a per-read timeout of 0.5 s: the deadline is the connection's."""
    _, port, _ = served
    monkeypatch.setattr(health, "REQUEST_TIMEOUT", 0.5)
    started, closed = time.monotonic(), False
    with socket.create_connection(("127.0.0.1", port)) as slow:
        slow.sendall(b"GET /livez HTTP/1.1\r\n")
        for number in range(50):  # 10 s of trickle, unless the server cuts it off
            try:
                slow.sendall(f"X-Trickle-{number}: x\r\n".encode())
                time.sleep(0.2)
                closed = slow.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
            except BlockingIOError:  # open, nothing to read: the server still waits for the request
                continue
            except OSError:  # reset by the server
                closed = True
            if closed:
                break
    assert closed and time.monotonic() - started < 3


def test_connections_past_the_cap_are_closed_at_once_and_a_freed_slot_serves_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(health, "MAX_CONNECTIONS", 2)
    server = serve(Health(), "127.0.0.1:0")
    assert server is not None
    port = server.server_port
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
    try:
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", port)) as third:
            third.settimeout(3)
            assert third.recv(1024) == b""  # refused unanswered, not queued behind the idle two
        for connection in held:
            connection.close()
        time.sleep(0.3)
        assert get(port, "/livez") == (200, "alive\n")
    finally:
        for connection in held:
            connection.close()
        server.shutdown()
        server.server_close()


def test_the_metrics_endpoint_serves_the_service_metrics(served: tuple[Health, int, list[float]]) -> None:
    _, port, _ = served
    metrics.IN_FLIGHT.set(0)
    status, text = get(port, "/metrics")
    assert (
        status == 200 and "rehab_messages_in_flight 0.0" in text and "# TYPE rehab_processing_seconds histogram" in text
    )


def test_the_pathway_gauge_counts_the_overdue_deadlines_of_the_stored_courses(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    """Wired for real (`bootstrap.pathway_overdue`): a GOP referred at FIXED_NOW is past its contact and start
    deadlines 30 days on, and nothing is overdue the day after; asked at most every `pathway_every` seconds."""
    broker = InMemoryBroker()
    broker.bind("rehab.referral", "sink", "#")
    hospital = SENDERS_BY_KIND["hospital"].exchange
    broker.publish(hospital, "discharge", EVENT.read_bytes(), "m-1", content_type="application/json")
    store = SqliteAuditStore(str(tmp_path / "audit.sqlite3"))
    settings = Settings.from_env({})
    processor = build(settings, bus=broker, store=store, clock=lambda: FIXED_NOW, pipeline=pipeline).processor
    assert drain_in_memory(broker, processor, [DISCHARGE]) == 1
    at, ticks = [FIXED_NOW + timedelta(minutes=1)], [0.0]
    refresh = GaugeRefresher(
        store,
        {},
        8,
        [],
        lambda: at[0],
        pathway=bootstrap.pathway_overdue(settings, store),
        monotonic=lambda: ticks[0],
    )
    refresh(Depths({}))
    assert all(value("rehab_pathway_overdue", rule=rule) == 0 for rule in PATHWAY_RULES)
    at[0] = FIXED_NOW + timedelta(days=30)
    refresh(Depths({}))  # not due again: the last counts stay
    assert value("rehab_pathway_overdue", rule="ack-missing") == 0
    ticks[0] += 60
    refresh(Depths({}))
    assert value("rehab_pathway_overdue", rule="ack-missing") == 1  # no ack 30 days on
    assert value("rehab_pathway_overdue", rule="visitation") == 0
    assert value("rehab_pathway_overdue", rule="gop-contact") in (None, 0)  # shown on the board, never counted
    store.close()


def test_a_refresh_failing_again_and_again_is_one_log_line_until_it_works_again() -> None:
    from structlog.testing import capture_logs

    store, up = CountingStore(), [True]
    refresh = refresher(store, up)
    store.fail = Transient("audit store unavailable (test)")
    with capture_logs() as logged:
        for _ in range(3):
            refresh(Depths({"t.dlq": 0, "t.in": 0}))
        store.fail = None
        refresh(Depths({"t.dlq": 0, "t.in": 0}))
    events = [(e["event"], e.get("source")) for e in logged]
    assert events == [
        ("metrics refresh failed; gauges keep their last value", "audit-store"),
        ("metrics refresh works again", "audit-store"),
    ]


def test_the_pathway_counted_apart_never_pauses_the_consumer_loop() -> None:
    """Counting the pathway reads every open course (issue #16's soak: seconds once tens of thousands are open);
    counted apart, the refresh returns at once and the gauge follows when the count is done — one count at a time."""
    release, calls = threading.Event(), []

    def slow_pathway(_now: datetime) -> dict[str, int]:
        calls.append(1)
        release.wait(10)
        return {"ack-missing": 3}

    ticks = [0.0]
    refresh = refresher(CountingStore(), [True], pathway=slow_pathway, pathway_apart=True, monotonic=lambda: ticks[0])
    started = time.monotonic()
    refresh(Depths({"t.dlq": 0, "t.in": 0}))
    ticks[0] += 60
    refresh(Depths({"t.dlq": 0, "t.in": 0}))  # due again while the first count runs: not a second one
    assert time.monotonic() - started < 1.0 and len(calls) == 1
    release.set()
    deadline = time.monotonic() + 5
    while value("rehab_pathway_overdue", rule="ack-missing") != 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert value("rehab_pathway_overdue", rule="ack-missing") == 3


def test_a_slow_pathway_count_apart_is_spaced_to_its_share_of_the_time() -> None:
    """A count that took 10 s (a clock of the test's) is not run again for 10 s / PATHWAY_SHARE: never more than
    that share of a core, however many courses are open."""
    ticks, calls = [0.0], []

    def slow_pathway(_now: datetime) -> dict[str, int]:
        calls.append(ticks[0])
        ticks[0] += 10
        return {}

    refresh = refresher(CountingStore(), [True], pathway=slow_pathway, pathway_apart=True, monotonic=lambda: ticks[0])

    def refreshed_at(moment: float) -> None:
        ticks[0] = moment
        refresh(Depths({"t.dlq": 0, "t.in": 0}))
        thread = refresh._pathway_thread  # noqa: SLF001 - the test waits for the count it started
        if thread is not None:
            thread.join(5)

    refreshed_at(0)
    refreshed_at(100)  # 60 s passed, but the count took 10 s: not yet
    refreshed_at(10 / PATHWAY_SHARE + 1)
    assert calls == [0, 10 / PATHWAY_SHARE + 1]


@pytest.mark.parametrize("listen", ["no-such-host.invalid:9464", "192.0.2.1:9464"])
def test_an_address_not_of_this_host_is_said_so_not_blamed_on_another_process(listen: str) -> None:
    """Only a port in use means another process serves there; a name that does not resolve or an address this
    host does not have is the setting's mistake (the second attack on issue 16 got 'another process … serves
    there' for a mistyped address)."""
    with pytest.raises(ConfigurationError) as raised:
        serve(Health(), listen)
    said = str(raised.value)
    assert said.startswith(f"INTEGRATION_HEALTH_LISTEN={listen} cannot be bound")
    assert "not an address of this host" in said
    assert "another process" not in said and "\n" not in said
