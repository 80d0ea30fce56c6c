"""When a hotline is open: weekly hours, Danish public holidays (from a library), a department's own closed days.

Opening hours are wall-clock times in the hotline's zone (Europe/Copenhagen): 08:00–15:00 is seven hours on
every open day, summer or winter. A time given with any offset (a fixed one, as the audit store keeps them,
or UTC) is first read in that zone, and spans are measured between real instants, so a daylight-saving
change between two times neither adds nor loses an hour. A time outside the years every reader accepts
(`domain.moment`: 1900 to 2199) is counted as at that range's edge, so no time at all can make the calendar
arithmetic overflow (near the years 1 and 9999 it would).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

from integration.domain.moment import instant

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
COPENHAGEN = ZoneInfo("Europe/Copenhagen")  # the agreement's region; mappings/hotlines.yaml names it


@dataclass(frozen=True, slots=True)
class OpeningHours:
    """`weekly[weekday]` = (opens, closes), Monday = 0, wall-clock times in `zone`; closes is exclusive (open
    08:00–15:00 means 14:59 is open). Times given to the methods must carry an offset (any offset)."""

    weekly: Mapping[int, tuple[time, time]]
    closed_days: frozenset[tuple[int, int]]  # (month, day), every year
    is_holiday: Callable[[date], bool]
    zone: tzinfo = COPENHAGEN

    def open_on(self, day: date) -> tuple[time, time] | None:
        if self.is_holiday(day) or (day.month, day.day) in self.closed_days:
            return None
        return self.weekly.get(day.weekday())

    def is_open(self, at: datetime) -> bool:
        local = instant(_aware(at)).astimezone(self.zone)
        hours = self.open_on(local.date())
        return hours is not None and hours[0] <= local.time() < hours[1]

    def span_on(self, day: date) -> tuple[datetime, datetime] | None:
        """The day's opening and closing instants (in `zone`), or None when it is closed."""
        hours = self.open_on(day)
        if hours is None:
            return None
        return datetime.combine(day, hours[0], tzinfo=self.zone), datetime.combine(day, hours[1], tzinfo=self.zone)

    def next_opening(self, at: datetime) -> datetime:
        """The first moment at or after `at` when the hotline is open (within a year), in `zone`."""
        local = instant(_aware(at)).astimezone(self.zone)
        for offset in range(0, 366):
            span = self.span_on(local.date() + timedelta(days=offset))
            if span is None:
                continue
            opens, closes = span
            if _instant(local) < _instant(opens):
                return opens
            if _instant(local) < _instant(closes):
                return local
        raise ValueError("the hotline is not open on any day of the coming year")


def parse_hours(text: str) -> tuple[time, time]:
    opens, closes = (time.fromisoformat(part.strip()) for part in text.split("-"))
    if not opens < closes:
        raise ValueError(f"opening hours {text!r} close before they open")
    return opens, closes


def open_hours_between(hours: OpeningHours | None, start: datetime, end: datetime) -> float:
    """How many opening hours passed between `start` and `end` (both with an offset, any offset), counted in
    the hotline's zone; every elapsed hour when there are no opening hours (triage). ValueError for a time
    without an offset."""
    start, end = instant(_aware(start)), instant(_aware(end))  # at the plausible range's edge if beyond
    if end <= start:
        return 0.0
    if hours is None:
        return (end - start).total_seconds() / 3600
    total = 0.0
    first, last = start.astimezone(hours.zone).date(), end.astimezone(hours.zone).date()
    for offset in range((last - first).days + 1):
        span = hours.span_on(first + timedelta(days=offset))
        if span is not None:
            overlap = (min(_instant(span[1]), end) - max(_instant(span[0]), start)).total_seconds()
            total += max(overlap, 0.0) / 3600
    return total


def _aware(at: datetime) -> datetime:
    if at.utcoffset() is None:
        raise ValueError("a time without an offset cannot be placed in the hotline's zone")
    return at


def _instant(at: datetime) -> datetime:
    """`at` in UTC: arithmetic between two times in one zone object ignores their offsets (Python compares
    and subtracts their wall clocks), so every span is measured between UTC instants. Only for times the
    functions above make or have taken in (`moment.instant`: a time given beyond the plausible range is taken
    at its edge, which no conversion can overflow)."""
    return at.astimezone(UTC)
