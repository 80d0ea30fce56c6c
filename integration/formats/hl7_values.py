"""HL7 v2 data types read into the discharge event's JSON values: TS/DTM times with the standard's zone rule,
DT dates, NM numbers, ID Y/N (Table 0136). Pure; every refusal is an Hl7Problem at the given place.

HL7 v2.5 §2.A.75 (TS) / v2.6+ (DTM): `YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]`. A time without an
offset is in the sender's local time, here the profile's zone (mappings/hl7.yaml `timezone`); one that
does not exist on that day (the spring DST gap) or exists twice (the autumn repeat) is refused: guessing
would move a discharge by an hour.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from integration.formats.er7 import ErrorCode, Hl7Problem, unsafe_character

_TS = re.compile(
    r"(?P<y>\d{4})(?P<mo>\d{2})?(?P<d>\d{2})?(?P<h>\d{2})?(?P<mi>\d{2})?(?P<s>\d{2})?(?:\.(?P<f>\d{1,4}))?"
    r"(?P<z>[+-]\d{4})?\Z"
)
_NM = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)\Z")
YES_NO = {"Y": True, "N": False}


@dataclass(frozen=True, slots=True)
class At:
    """Where a value was read: segment id, its occurrence, field, component, repetition (1-based)."""

    segment: str
    sequence: int
    field: int
    component: int | None = None
    repetition: int | None = None

    def problem(self, text: str, code: ErrorCode = ErrorCode.DATA_TYPE) -> Hl7Problem:
        return Hl7Problem(
            text,
            segment=self.segment,
            field=self.field,
            component=self.component,
            repetition=self.repetition,
            segment_sequence=self.sequence,
            code=code,
        )


def _parts(text: str, at: At) -> re.Match[str]:
    found = _TS.match(text)
    if not found:
        raise at.problem("not an HL7 v2 time (YYYYMMDDHHMM[SS[.S]][+/-ZZZZ])")
    return found


def hl7_date(text: str, at: At) -> str:
    """A DT (or the date of a TS) → `YYYY-MM-DD`; refused when it is not a real date."""
    found = _parts(text, at)
    if not found["d"]:
        raise at.problem("a date to the day is needed")
    try:
        return date(int(found["y"]), int(found["mo"]), int(found["d"])).isoformat()
    except ValueError:
        raise at.problem("not a real date") from None


def hl7_time(text: str, at: At, zone: ZoneInfo) -> str:
    """A TS/DTM to at least the minute → RFC 3339 with its offset (seconds and fraction only when written).
    Without an offset the time is in `zone` (refused when that local time is skipped or repeated by DST)."""
    found = _parts(text, at)
    if not found["mi"]:
        raise at.problem("a time to the minute is needed (a date alone does not say when)")
    try:
        y, mo, d, h, mi = (int(found[k]) for k in ("y", "mo", "d", "h", "mi"))
        local = datetime(y, mo, d, h, mi, int(found["s"] or 0))
    except ValueError:
        raise at.problem("not a real date and time") from None
    offset = _offset(found["z"], at) if found["z"] else _local_offset(local, at, zone)
    written = local.strftime("%Y-%m-%dT%H:%M")
    if found["s"]:
        written += f":{found['s']}" + (f".{found['f']}" if found["f"] else "")
    return written + _rfc3339_offset(offset)


def _offset(text: str, at: At) -> timedelta:
    hours, minutes = int(text[1:3]), int(text[3:5])
    if hours > 14 or minutes > 59 or (hours == 14 and minutes):
        raise at.problem("not a UTC offset (-1400 to +1400)")
    return (1 if text[0] == "+" else -1) * timedelta(hours=hours, minutes=minutes)


def _local_offset(local: datetime, at: At, zone: ZoneInfo) -> timedelta:
    first = local.replace(tzinfo=zone, fold=0)
    if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != local:  # not a time of that day's clocks
        raise at.problem("a local time that does not exist (DST: clocks go forward); send it with its UTC offset")
    if first.utcoffset() != local.replace(tzinfo=zone, fold=1).utcoffset():
        raise at.problem("a local time that occurs twice (DST: clocks go back); send it with its UTC offset")
    offset = first.utcoffset()
    assert offset is not None  # a ZoneInfo always answers
    return offset


def _rfc3339_offset(offset: timedelta) -> str:
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def hl7_number(text: str, at: At) -> Decimal | int:
    """An NM → its digits exactly: an int when written without a fraction, else a Decimal."""
    if not _NM.match(text):
        raise at.problem("not an HL7 v2 number (NM)")
    return Decimal(text) if "." in text else int(text)


def hl7_text(text: str, at: At, free_text: bool = False) -> str:
    """A value as read, refused (102) when it holds a control character, a line or paragraph separator or a
    Unicode bidirectional control: no name, code or identifier may carry one (a line break in a family name,
    U+202E showing it reversed). Free text (a note, a conclusion) may hold line breaks and tabs."""
    if unsafe_character(text, free_text):
        what = "a control character other than a line break" if free_text else "a control or line-break character"
        raise at.problem(f"{what} or a bidirectional control (not allowed in this field)")
    return text


def hl7_yes_no(text: str, at: At) -> bool:
    """An ID of HL7 Table 0136 (Y/N) → bool."""
    if text not in YES_NO:
        raise at.problem("not Y or N (HL7 Table 0136)", ErrorCode.TABLE_VALUE_NOT_FOUND)
    return YES_NO[text]
