"""CPR numbers (personnumre): shape, birth date and century, and whether the birth date can be right for a
moment (not after it); the modulus-11 check is advisory only."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

_SHAPE = re.compile(r"[0-9]{10}")
_WRITTEN = re.compile(r"([0-9]{6})[- ]?([0-9]{4})")  # as people write it: DDMMYYSSSS, DDMMYY-SSSS, DDMMYY SSSS
_MOD11_WEIGHTS = (4, 3, 2, 7, 6, 5, 4, 3, 2, 1)
CPR_SYSTEM = "urn:oid:1.2.208.176.1.2"  # FHIR identifier system (dk-core DkCoreCprIdentifier)
# A birth date is a date of the Danish calendar: moments are compared by their date in Denmark.
DANISH_TIME = ZoneInfo("Europe/Copenhagen")

# Century by the 7th digit, for two-digit years up to and including each bound (CPR office rules).
_CENTURY_RULES: dict[int, tuple[tuple[int, int], ...]] = {
    **{d: ((99, 1900),) for d in (0, 1, 2, 3)},
    **{d: ((36, 2000), (99, 1900)) for d in (4, 9)},
    **{d: ((57, 2000), (99, 1800)) for d in (5, 6, 7, 8)},
}


@dataclass(frozen=True, slots=True)
class Cpr:
    value: str
    birth_date: date

    @property
    def passes_modulus11(self) -> bool:
        """Numbers issued since 2007 may fail this; it must never be grounds for rejection."""
        return sum(int(c) * w for c, w in zip(self.value, _MOD11_WEIGHTS, strict=True)) % 11 == 0

    @property
    def system(self) -> str:
        return CPR_SYSTEM

    @property
    def key(self) -> str:
        """Whom the audit log and the course state file the patient under: the number itself."""
        return self.value

    def __repr__(self) -> str:  # keep the number out of tracebacks and debug output
        return "Cpr(<hidden>)"


def birth_century(seventh_digit: int, two_digit_year: int) -> int:
    for upper_bound, century in _CENTURY_RULES[seventh_digit]:
        if two_digit_year <= upper_bound:
            return century
    raise AssertionError("unreachable: every rule ends at 99")


def parse_cpr(value: str) -> Cpr:
    """Parse a 10-digit CPR number; the error message never repeats the number."""
    if not _SHAPE.fullmatch(value):
        raise ValueError("a CPR number is 10 digits (DDMMYYSSSS)")
    day, month, year = int(value[0:2]), int(value[2:4]), int(value[4:6])
    century = birth_century(int(value[6]), year)
    try:
        born = date(century + year, month, day)
    except ValueError:
        raise ValueError("the date part of the CPR number is not a real date") from None
    return Cpr(value=value, birth_date=born)


def read_cpr(text: str) -> Cpr:
    """A CPR number as a person types it (DDMMYYSSSS, DDMMYY-SSSS or DDMMYY SSSS, surrounding blanks
    ignored), in the stored form of ten digits; the error message never repeats the text."""
    written = _WRITTEN.fullmatch(text.strip())
    if written is None:
        raise ValueError("a CPR number is 10 digits, DDMMYYSSSS, DDMMYY-SSSS or DDMMYY SSSS")
    return parse_cpr(written.group(1) + written.group(2))


def _danish_date(moment: date | datetime) -> date:
    """The date in Denmark of a time (its own date when it has no zone), or a date itself. Never raises: a time
    within a day of the calendar's ends (years 1 and 9999) cannot be moved to Denmark's zone without leaving
    the calendar, so its date as written stands in (readers refuse such times first: `domain.moment`)."""
    if not isinstance(moment, datetime):
        return moment
    if moment.utcoffset() is None:
        return moment.date()
    try:
        return moment.astimezone(DANISH_TIME).date()
    except OverflowError:
        return moment.date()


def born_by(cpr: Cpr, *moments: date | datetime) -> None:
    """Raise ValueError (never repeating the number) when the birth date that the century rule gives is
    after the earliest of `moments` (a time taken as its date in Denmark): a CPR number born after the event
    it is reported in cannot be right, e.g. 7th digit 5 and year 50 put the birth on 2050-01-01."""
    if moments and cpr.birth_date > min(map(_danish_date, moments)):
        raise ValueError(
            "the birth date that the CPR number's century digit gives is after the event it is reported in"
        )
