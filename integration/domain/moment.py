"""Moments (a date and a time of day with a zone offset) as every reader takes them: from a message, a state
file or the command line (`--at`).

A moment must carry its zone and lie in the years 1900 to 2199 as written. Why those bounds: every moment we
read is when a clinical message was made, sent or received (a discharge, an admission, a request's
`sentAt`, a FHIR `Bundle.timestamp`, a receipt time), so one before 1900 or after 2199 is a typing or
clock error, never a fact. The bounds keep every piece of our date arithmetic far from the ends of
Python's calendar (years 1 to 9999), where converting to UTC or to Europe/Copenhagen, adding six weeks
for a bicycle test, walking opening hours day by day or counting a deadline raised OverflowError: such a
message was retried and then dead-lettered as our own bug, and its sender never learned the field.
CPR birth dates reach back to 1858, but they are dates, not moments: a date is never converted between
zones, and comparing one to a moment's date in Denmark is safe at any year.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

from integration.errors import InvalidInput

EARLIEST_YEAR = 1900
LATEST_YEAR = 2199
# The instants a moment within the years above can fall on, whatever its offset (at most ±24 hours).
EARLIEST_INSTANT = datetime(EARLIEST_YEAR - 1, 12, 31, tzinfo=UTC)
LATEST_INSTANT = datetime(LATEST_YEAR + 1, 1, 2, tzinfo=UTC)
RANGE = f"the years {EARLIEST_YEAR} to {LATEST_YEAR}"
IMPLAUSIBLE = f"outside {RANGE}: not a time a clinical message can carry"


def parse_moment(text: str) -> datetime:
    """ISO 8601 text (`2026-11-23T10:00:00+01:00`, `…Z`) → an aware datetime, to the microsecond.

    Raises ValueError with a one-line problem that never repeats the text: not a real date and time (a leap
    second, `:60`, is named: FHIR's instant admits one, no clock of ours can hold it), no zone, or a year
    outside EARLIEST_YEAR..LATEST_YEAR (`plausible`)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        leap = len(text) > 18 and text[10:11] in ("T", "t", " ") and text[17:19] == "60"
        problem = "a leap second (:60) is not accepted" if leap else "not an ISO 8601 date and time, or not a real date"
        raise ValueError(problem) from None
    if moment.utcoffset() is None:
        raise ValueError("needs a time zone, e.g. 2026-11-23T10:00:00+01:00")
    return plausible(moment)


def plausible(moment: datetime) -> datetime:
    """`moment` itself when its year as written is within EARLIEST_YEAR..LATEST_YEAR, else ValueError."""
    if not EARLIEST_YEAR <= moment.year <= LATEST_YEAR:
        raise ValueError(IMPLAUSIBLE)
    return moment


def plausible_date(value: date) -> date:
    """`value` itself when its year is within EARLIEST_YEAR..LATEST_YEAR, else ValueError. Every date a message
    carries about its own care (a surgery, an exercise test, a conversation, a questionnaire) falls within
    the same years as its moments, for the same reasons; a CPR birth date is not such a date."""
    if not EARLIEST_YEAR <= value.year <= LATEST_YEAR:
        raise ValueError(f"outside {RANGE}: not a date a clinical message can carry")
    return value


def read_date(text: str, field: str) -> date:
    """`YYYY-MM-DD` → a real date in the plausible years: InvalidInput(field, problem), never repeating it."""
    try:
        value = date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(field, "not a real date") from None
    try:
        return plausible_date(value)
    except ValueError as exc:
        raise InvalidInput(field, str(exc)) from None


_MINUTES_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")
# FHIR R4's dateTime with a time (Datatypes, `dateTime`, the regex narrowed to a full date, a time and a zone).
_FHIR_DATE_TIME = re.compile(
    r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,9})?"
    r"(Z|[+-]((0\d|1[0-3]):[0-5]\d|14:00))"
)


def fhir_date_time(text: str, moment: datetime) -> str:
    """A moment's text as the sender wrote it (`moment` is what `parse_moment` made of it) → a FHIR dateTime:
    the text itself, fraction and `Z` included (FHIR R4 Datatypes allow both), with `:00` seconds added when
    the sender left them out (RFC 3339 as our schemas admit it; FHIR needs seconds with a time). A form FHIR
    has no lexical twin for (ISO 8601's basic format, which `datetime.fromisoformat` also reads) is written
    from `moment`, to the microsecond."""
    if _MINUTES_ONLY.fullmatch(text[:16]) and text[16:17] != ":":
        text = f"{text[:16]}:00{text[16:]}"
    if _FHIR_DATE_TIME.fullmatch(text):
        return text
    return moment.isoformat(timespec="microseconds" if moment.microsecond else "seconds")


def read_moment(text: str, field: str) -> datetime:
    """`parse_moment` for a field of a message: InvalidInput(field, problem), never repeating the value."""
    try:
        return parse_moment(text)
    except ValueError as exc:
        raise InvalidInput(field, str(exc)) from None


def instant(moment: datetime) -> datetime:
    """`moment` (aware) in UTC, moved to the nearest edge of the plausible instants when beyond them.

    For arithmetic that must never raise: every reader refuses a moment outside the range, so only a
    caller's own mistake gets here with one, and counting it at the range's edge is the answer that
    cannot overflow (comparing two aware datetimes never converts them, so the test itself is safe)."""
    if moment < EARLIEST_INSTANT:
        return EARLIEST_INSTANT
    if moment > LATEST_INSTANT:
        return LATEST_INSTANT
    return moment.astimezone(UTC)
