"""The audit store's database taken away under a running consumer, through a proxy (the shared PostgreSQL is
never touched): gone for 60 s, then black-holed. Nothing is dead-lettered, nothing lost, nothing duplicated;
the consumer says once that it waits and once that it goes on, and /readyz fails meanwhile."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from integration.adapters.sql.stores import open_audit_store
from integration.service.audit_chain import verify
from tests.runtime.broker_helpers import (
    DLQ,
    log_lines,
    output_queue,
    publish_events,
    queue_depth,
    readyz,
    referral_events,
    referrals_by_event,
    start_consumer,
    stop_process,
    take_all,
    wait_for,
)
from tests.runtime.rabbit_nodes import free_port
from tests.runtime.tcp_proxy import TcpProxy

EVENTS = 2000


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    with TcpProxy("127.0.0.1", 5432) as running:
        yield running


@pytest.fixture
def proxied_dsn(postgres_dsn: str, proxy: TcpProxy) -> str:
    return postgres_dsn.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")


def _run_through_an_outage(
    vhost: str,
    dsn: str,
    postgres_dsn: str,
    tmp_path: Path,
    cut: Callable[[], None],
    heal: Callable[[], None],
    seconds: float,
) -> tuple[Path, float]:
    """2,000 events; a quarter in, `cut` the database for `seconds`, then `heal` it; check everything on the way."""
    outputs = output_queue(vhost)
    events = referral_events(EVENTS)
    publish_events(vhost, events)
    log = tmp_path / "consumer.log"
    health = free_port()
    process = start_consumer(vhost, dsn, log, INTEGRATION_HEALTH_LISTEN=f"127.0.0.1:{health}")
    try:
        wait_for(lambda: queue_depth(vhost, outputs) >= EVENTS // 4, 120, "a quarter of the events")
        cut()
        started = time.monotonic()
        wait_for(lambda: log_lines(log, "audit-store unavailable") == 1, 30, "one log line saying the consumer waits")
        noticed = time.monotonic() - started
        status, text = readyz(health)
        assert status == 503 and "audit-store unavailable" in text, text
        during = queue_depth(vhost, outputs)
        time.sleep(max(0.0, seconds - (time.monotonic() - started)))
        assert process.poll() is None, "the consumer must wait, not exit"
        assert queue_depth(vhost, DLQ) == 0, "an outage must not dead-letter anything"
        assert queue_depth(vhost, outputs) <= during + 20, "nothing can be committed while the store is away"
    finally:
        heal()
    try:
        wait_for(lambda: queue_depth(vhost, outputs) >= EVENTS, 240, "every event after the store came back")
        wait_for(lambda: readyz(health)[0] == 200, 30, "readiness to recover")
    finally:
        stop_process(process)
    assert log_lines(log, "audit-store available again: resuming") == 1
    found = referrals_by_event(take_all(vhost, outputs))
    assert set(found) == {e for e, _ in events} and all(len(ids) == 1 for ids in found.values())
    assert queue_depth(vhost, DLQ) == 0
    store = open_audit_store(postgres_dsn)
    try:
        assert verify(store.records(), store.head()) is None
        received = [r for r in store.records() if r.step == "received"]
        assert not any(r.detail.get("redelivered") for r in received), "a held message was returned to its queue"
    finally:
        store.close()
    return log, noticed


def test_the_database_gone_for_60_seconds_dead_letters_nothing_and_loses_nothing(
    vhost_of_its_own: str, proxied_dsn: str, postgres_dsn: str, proxy: TcpProxy, tmp_path: Path
) -> None:
    log, noticed = _run_through_an_outage(
        vhost_of_its_own, proxied_dsn, postgres_dsn, tmp_path, proxy.refuse, proxy.forward, 60
    )
    assert noticed < 10
    assert log_lines(log, "still waiting for the audit-store") <= 2  # one a minute at most, not one per retry


def test_a_black_holed_database_is_noticed_within_seconds_and_waited_out(
    vhost_of_its_own: str, proxied_dsn: str, postgres_dsn: str, proxy: TcpProxy, tmp_path: Path
) -> None:
    _, noticed = _run_through_an_outage(
        vhost_of_its_own, proxied_dsn, postgres_dsn, tmp_path, proxy.blackhole, proxy.forward, 40
    )
    assert noticed < 25, f"the consumer froze for {noticed:.0f} s before saying anything"


def test_a_consumer_started_while_the_database_and_the_broker_are_down_waits_for_both(
    vhost_of_its_own: str, proxied_dsn: str, proxy: TcpProxy, tmp_path: Path
) -> None:
    """No traceback and no exit: one start-up line per dependency awaited, /readyz failing, then work."""
    vhost = vhost_of_its_own
    from tests.runtime.broker_helpers import target_url

    outputs = output_queue(vhost)
    events = referral_events(20)
    publish_events(vhost, events)
    log = tmp_path / "consumer.log"
    health = free_port()
    proxy.refuse()
    with TcpProxy("127.0.0.1", 5672) as broker:
        broker.refuse()
        url = target_url(vhost).replace("127.0.0.1:5672", f"127.0.0.1:{broker.port}")
        process = start_consumer(url, proxied_dsn, log, INTEGRATION_HEALTH_LISTEN=f"127.0.0.1:{health}")
        try:
            wait_for(
                lambda: log_lines(log, "waiting for the audit store") == 1, 30, "a line saying the store is awaited"
            )
            status, text = readyz(health)
            assert status == 503 and "audit-store unavailable" in text
            proxy.forward()
            wait_for(lambda: log_lines(log, "waiting for the broker") == 1, 30, "a line saying the broker is awaited")
            time.sleep(3)
            assert process.poll() is None and "Traceback" not in log.read_text()
            assert log_lines(log, "waiting for the broker") == 1, "one line when the wait begins, not one per retry"
            assert "broker unavailable" in readyz(health)[1]
            broker.forward()
            wait_for(lambda: queue_depth(vhost, outputs) >= 20, 60, "the events once both are back")
            wait_for(lambda: readyz(health)[0] == 200, 30, "readiness")
        finally:
            stop_process(process)
    assert process.returncode == 0
    assert len(referrals_by_event(take_all(vhost, outputs))) == 20
