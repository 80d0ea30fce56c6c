"""The soak's figures (bench/soak.py): which minute a moment counts in, a referral counted once, the
percentiles, and when latency and memory count as flat — the script itself runs outside CI."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from bench.soak import RATE_EPS, Book, Clock, Minute, event_id_of, is_flat, percentile, summary

GOLDEN = Path(__file__).resolve().parent / "golden" / "discharge" / "01-municipal-gop-general-sternotomy"


def test_the_default_rate_is_ten_times_the_regions_daily_discharges_per_second() -> None:
    assert RATE_EPS == 120  # ../shared/domain/README.md §8: 8-12 discharge events a weekday, the upper end


def test_percentiles_are_nearest_rank_and_none_is_zero() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.99) == 100.0
    assert percentile(values, 0.5) == 51.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.99) == 0.0


@pytest.mark.parametrize(
    ("p99_first", "p99_last", "rss_first", "rss_last", "flat"),
    [
        (10.0, 20.0, 100.0, 110.0, True),  # 20 = 1.5 × 10 + 5: at the limit
        (10.0, 20.1, 100.0, 110.0, False),  # latency grew past it
        (10.0, 10.0, 100.0, 119.9, True),
        (10.0, 10.0, 100.0, 120.0, False),  # 20 % more memory is growth
        (10.0, 5.0, 100.0, 80.0, True),  # getting better is flat too
    ],
)
def test_flat_means_p99_within_one_and_a_half_times_plus_5_ms_and_rss_grown_less_than_20_percent(
    p99_first: float, p99_last: float, rss_first: float, rss_last: float, flat: bool
) -> None:
    assert is_flat(p99_first, p99_last, rss_first, rss_last) is flat


def test_the_summary_compares_the_first_counted_minute_with_the_last() -> None:
    first = Minute(latencies=[4.0, 5.0, 6.0], rss_mb=100.0)
    middle = Minute(latencies=[500.0], rss_mb=300.0)
    last = Minute(latencies=[5.0, 6.0, 30.0], rss_mb=130.0)
    figures = summary([first, middle, last], rate=120, events=7, rss_samples=[90.0, 300.0, 130.0])
    assert figures == {
        "soak_minutes": 3,
        "rate_eps": 120,
        "events": 7,
        "p50_ms_first": 5.0,
        "p99_ms_first": 6.0,
        "p50_ms_last": 6.0,
        "p99_ms_last": 30.0,
        "rss_mb_first": 100.0,
        "rss_mb_last": 130.0,
        "rss_mb_max": 300.0,
        "flat": False,  # 30 ms > 1.5 × 6 + 5, and 30 % more memory
    }


def test_a_soak_that_never_left_its_warm_up_has_no_summary() -> None:
    with pytest.raises(ValueError, match="warm-up"):
        summary([], rate=120, events=0, rss_samples=[])


def test_the_warm_up_counts_in_no_minute_and_stragglers_count_in_the_last() -> None:
    clock = Clock(start=1000.0, warmup=15.0, minutes=2)
    assert [clock.minute(t) for t in (1000.0, 1014.9, 1015.0, 1074.9, 1075.0, 1134.9)] == [-1, -1, 0, 0, 1, 1]
    assert clock.end == 1135.0
    assert clock.minute(1200.0) == 1  # arrived after publishing stopped: the last minute's
    assert clock.minute_end(0) == 1075.0


def test_a_referral_counts_once_in_the_minute_it_arrived() -> None:
    book = Book(Clock(start=0.0, warmup=10.0, minutes=2))
    book.sent("warm", 5.0)
    book.sent("a", 20.0)
    book.sent("b", 69.0)
    book.arrived("warm", 5.01)  # in the warm-up: not counted
    book.arrived("a", 20.004)
    book.arrived("a", 20.5)  # a second copy (a redelivery republished): not a second latency
    book.arrived("b", 70.25)
    assert book.published == 3 and book.in_flight() == 0
    assert [m.published for m in book.minutes] == [2, 0]
    assert [[round(v, 1) for v in m.latencies] for m in book.minutes] == [[4.0], [1250.0]]
    book.sent("lost", 100.0)
    assert book.in_flight() == 1


def test_a_referral_names_the_event_it_answers() -> None:
    event = orjson.loads(GOLDEN.with_suffix(".event.json").read_bytes())
    referral = orjson.loads(GOLDEN.with_suffix(".expected.json").read_bytes())["outgoing"][0]["message"]
    assert event_id_of(orjson.dumps(referral)) == event["eventId"]
