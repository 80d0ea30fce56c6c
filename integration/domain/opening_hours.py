"""When a hotline is open: weekly hours, Danish public holidays (from a library), a department's own closed days."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class OpeningHours:
    """`weekly[weekday]` = (opens, closes), Monday = 0; closes is exclusive (open 08:00–15:00 means 14:59 is open)."""

    weekly: Mapping[int, tuple[time, time]]
    closed_days: frozenset[tuple[int, int]]  # (month, day), every year
    is_holiday: Callable[[date], bool]

    def open_on(self, day: date) -> tuple[time, time] | None:
        if self.is_holiday(day) or (day.month, day.day) in self.closed_days:
            return None
        return self.weekly.get(day.weekday())

    def is_open(self, at: datetime) -> bool:
        hours = self.open_on(at.date())
        return hours is not None and hours[0] <= at.timetz().replace(tzinfo=None) < hours[1]

    def next_opening(self, at: datetime) -> datetime:
        """The first moment at or after `at` when the hotline is open (within a year)."""
        for offset in range(0, 366):
            day = at.date() + timedelta(days=offset)
            hours = self.open_on(day)
            if hours is None:
                continue
            opens = datetime.combine(day, hours[0], tzinfo=at.tzinfo)
            closes = datetime.combine(day, hours[1], tzinfo=at.tzinfo)
            if at < opens:
                return opens
            if at < closes:
                return at
        raise ValueError("the hotline is not open on any day of the coming year")


def parse_hours(text: str) -> tuple[time, time]:
    opens, closes = (time.fromisoformat(part.strip()) for part in text.split("-"))
    if not opens < closes:
        raise ValueError(f"opening hours {text!r} close before they open")
    return opens, closes


def open_hours_between(hours: OpeningHours | None, start: datetime, end: datetime) -> float:
    """How many opening hours passed between `start` and `end` (wall-clock hours when there are no hours)."""
    if end <= start:
        return 0.0
    if hours is None:
        return (end - start).total_seconds() / 3600
    total = 0.0
    day = start.date()
    while day <= end.date():
        opening = hours.open_on(day)
        if opening is not None:
            opens = datetime.combine(day, opening[0], tzinfo=start.tzinfo)
            closes = datetime.combine(day, opening[1], tzinfo=start.tzinfo)
            overlap = (min(closes, end) - max(opens, start)).total_seconds()
            total += max(overlap, 0.0) / 3600
        day += timedelta(days=1)
    return total
