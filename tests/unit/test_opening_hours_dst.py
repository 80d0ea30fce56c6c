"""Opening hours across daylight-saving changes (issue 11, point 10): counted in Europe/Copenhagen whatever
offset a time carries, spans measured between real instants.

2026's changes: Sunday 29 March (02:00 → 03:00, +01:00 → +02:00) and Sunday 25 October (03:00 → 02:00).
"""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import holidays
import pytest

from integration.domain.opening_hours import OpeningHours, open_hours_between

CPH = ZoneInfo("Europe/Copenhagen")
DK = holidays.country_holidays("DK")
WEEKDAYS_8_TO_15 = OpeningHours({d: (time(8), time(15)) for d in range(5)}, frozenset(), DK.__contains__)


@pytest.mark.parametrize(
    ("received", "checked"),
    [
        # as the audit store keeps them: the offset of when each was written
        ("2026-10-23T14:00:00+02:00", "2026-10-26T14:30:00+01:00"),
        # the request's fixed offset carried on to the check (how it was counted wrongly: 8.0)
        ("2026-10-23T14:00:00+02:00", "2026-10-26T15:30:00+02:00"),
        ("2026-10-23T12:00:00+00:00", "2026-10-26T13:30:00+00:00"),  # UTC
        ("2026-10-23T14:00:00", "2026-10-26T14:30:00"),  # the zone's own (placed with replace below)
    ],
)
def test_friday_before_the_october_change_to_monday_after_is_seven_and_a_half_hours(
    received: str, checked: str
) -> None:
    start, end = datetime.fromisoformat(received), datetime.fromisoformat(checked)
    if start.tzinfo is None:
        start, end = start.replace(tzinfo=CPH), end.replace(tzinfo=CPH)
    assert open_hours_between(WEEKDAYS_8_TO_15, start, end) == 7.5  # Friday 14–15, Monday 08–14:30


@pytest.mark.parametrize(
    ("received", "checked"),
    [
        ("2026-03-27T14:00:00+01:00", "2026-03-30T14:30:00+02:00"),
        ("2026-03-27T14:00:00+01:00", "2026-03-30T13:30:00+01:00"),  # the old offset carried on: 6.5 before
        ("2026-03-27T13:00:00Z", "2026-03-30T12:30:00Z"),
    ],
)
def test_friday_before_the_march_change_to_monday_after_is_seven_and_a_half_hours(received: str, checked: str) -> None:
    start, end = datetime.fromisoformat(received), datetime.fromisoformat(checked)
    assert open_hours_between(WEEKDAYS_8_TO_15, start, end) == 7.5


def test_a_day_whose_opening_hours_span_the_change_counts_the_hours_that_passed() -> None:
    night = OpeningHours({6: (time(1), time(4))}, frozenset(), lambda _: False)  # Sundays 01:00–04:00
    october = open_hours_between(night, datetime(2026, 10, 25, tzinfo=CPH), datetime(2026, 10, 26, tzinfo=CPH))
    march = open_hours_between(night, datetime(2026, 3, 29, tzinfo=CPH), datetime(2026, 3, 30, tzinfo=CPH))
    assert (october, march) == (4.0, 2.0)  # 02:00–03:00 comes twice in October and never in March


def test_without_opening_hours_every_real_hour_counts_across_the_change() -> None:
    start, end = datetime(2026, 10, 24, 12, tzinfo=CPH), datetime(2026, 10, 25, 12, tzinfo=CPH)
    assert open_hours_between(None, start, end) == 25.0  # same zone object: Python alone would say 24


def test_is_open_and_next_opening_read_a_fixed_offset_in_the_zone() -> None:
    # 07:30+01:00 on a summer Monday is 08:30 in Copenhagen: open
    assert WEEKDAYS_8_TO_15.is_open(datetime.fromisoformat("2026-06-15T07:30:00+01:00"))
    assert not WEEKDAYS_8_TO_15.is_open(datetime.fromisoformat("2026-06-15T13:30:00+00:00"))  # 15:30 there
    after = WEEKDAYS_8_TO_15.next_opening(datetime.fromisoformat("2026-10-23T16:00:00+02:00"))
    assert after == datetime(2026, 10, 26, 8, tzinfo=CPH) and after.utcoffset() == CPH.utcoffset(after)
    assert after.astimezone(UTC).hour == 7


def test_a_time_without_an_offset_is_refused() -> None:
    with pytest.raises(ValueError, match="without an offset"):
        open_hours_between(WEEKDAYS_8_TO_15, datetime(2026, 10, 23, 14), datetime(2026, 10, 26, 14, tzinfo=CPH))
