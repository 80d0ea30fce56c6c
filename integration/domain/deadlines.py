"""The deadlines a patient's course can miss, as pure rules: Danish weekdays, the GOP's contact and start
deadlines, the municipal closing report, the last chance of an ack, the moment a hotline request becomes
overdue. `integration.service.pathway_watch` applies them to what the audit store holds.

Day-counted deadlines are counted in Danish local time (Europe/Copenhagen) on calendar days, and a deadline
of N days runs to the end of the Nth day after the day it starts on (the day itself is not counted: a GOP
received on a Monday must be acted on "within 14 days" by the end of the Monday two weeks later). The end of
a day is local midnight, converted to UTC through the zone, so a daylight-saving change in between neither
adds nor loses an hour, and a time received late in the evening counts on its local day (Friday 23:30 in
Copenhagen is Friday, although it may be Friday or Saturday in another zone).

A weekday (*hverdag*) is Monday to Friday unless it is a Danish public holiday (*helligdag*) as the
`holidays` package's `Denmark` calendar lists them: New Year's Day, Maundy Thursday, Good Friday, Easter
Monday, Ascension Day, Whit Monday, Christmas Day and Boxing Day (and the Sundays Easter and Whitsun fall
on); Great Prayer Day (*store bededag*) until 2023 only, abolished from 2024 (Lov nr. 1 af 2023). Christmas
Eve, New Year's Eve and Constitution Day (5 June) are not public holidays and count as weekdays.

Every time taken must carry an offset (ValueError otherwise); a time beyond the plausible years
(`domain.moment`: 1900 to 2199) is counted at that range's edge, so no arithmetic here can overflow.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays

from integration.domain.course import Course, OutboundState, SentReferral, Stage
from integration.domain.moment import instant
from integration.domain.opening_hours import OpeningHours

COPENHAGEN = ZoneInfo("Europe/Copenhagen")

# Region Nordjylland, "Udarbejdelse af genoptræningsplaner" (pri.rn.dk/Sider/21829.aspx; ../shared/domain
# README §3.4): the receiver contacts the patient within 5 weekdays of receiving the GOP, and training starts
# within 14 calendar days unless the GOP says otherwise.
GOP_CONTACT_WEEKDAYS = 5
GOP_START_DAYS = 14
# The receiving stage of each GOP category: the course is at it while the receiver has the patient.
GOP_STAGES: dict[str, Stage] = {"gop-specialised": Stage.SPECIALISED, "gop-general": Stage.MUNICIPAL}
MAX_WEEKDAYS = 366 * 2  # far more than any rule counts; a guard against a caller's typing mistake


@lru_cache(maxsize=512)
def _denmark(year: int) -> holidays.HolidayBase:
    return holidays.country_holidays("DK", years=year)


def is_danish_holiday(day: date) -> bool:
    """Whether `day` is a Danish public holiday (the `holidays` package's Denmark calendar; module docstring)."""
    return day in _denmark(day.year)


def is_weekday(day: date, is_holiday: Callable[[date], bool] = is_danish_holiday) -> bool:
    """Monday to Friday and not a public holiday (*hverdag*)."""
    return day.weekday() < 5 and not is_holiday(day)


def local_day(moment: datetime, zone: tzinfo = COPENHAGEN) -> date:
    """The calendar day `moment` (with an offset, any offset) falls on in `zone`."""
    return instant(_aware(moment)).astimezone(zone).date()


def end_of_day(day: date, zone: tzinfo = COPENHAGEN) -> datetime:
    """The end of `day` in `zone` (the local midnight that starts the next day), in UTC."""
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)


def nth_weekday_after(day: date, count: int, is_holiday: Callable[[date], bool] = is_danish_holiday) -> date:
    """The `count`th weekday after `day` (`day` itself not counted; count >= 1, at most MAX_WEEKDAYS, else
    ValueError)."""
    if not 1 <= count <= MAX_WEEKDAYS:
        raise ValueError(f"a weekday count must be 1 to {MAX_WEEKDAYS}")
    found = 0
    while found < count:
        day += timedelta(days=1)
        found += is_weekday(day, is_holiday)
    return day


def weekdays_after(start: datetime, count: int, zone: tzinfo = COPENHAGEN) -> datetime:
    """The end (UTC) of the `count`th Danish weekday after the local day of `start`."""
    return end_of_day(nth_weekday_after(local_day(start, zone), count), zone)


def days_after(start: datetime, days: int, zone: tzinfo = COPENHAGEN) -> datetime:
    """The end (UTC) of the `days`th calendar day after the local day of `start` (days >= 0)."""
    if days < 0:
        raise ValueError("a number of days cannot be negative")
    return end_of_day(local_day(start, zone) + timedelta(days=days), zone)


# -- the rules -----------------------------------------------------------------------------------------------
def is_gop(referral: SentReferral | None) -> bool:
    """Whether the referral in force is a genoptræningsplan (GOP: specialised or general), not a municipal
    rehabilitation referral (kommunehenvisning)."""
    return referral is not None and referral.category in GOP_STAGES


def at_gop_receiver(course: Course) -> bool:
    """Whether the course is at the stage where the GOP's receiver has the patient: specialised
    rehabilitation for a specialised GOP, the municipal course for a general one."""
    referral = course.referral
    return referral is not None and GOP_STAGES.get(referral.category) is course.current


def gop_contact_due(received: datetime) -> datetime:
    """When the GOP's receiver must have contacted the patient: the end of the 5th Danish weekday after the
    day it received the GOP (Region Nordjylland, pri.rn.dk/Sider/21829.aspx)."""
    return weekdays_after(received, GOP_CONTACT_WEEKDAYS)


def gop_start_due(received: datetime) -> datetime:
    """When training must have started: the end of the 14th calendar day after the day the GOP was received
    (Region Nordjylland, pri.rn.dk/Sider/21829.aspx: "unless the GOP says otherwise"; our referrals state no
    start deadline of their own, so the 14 days always apply)."""
    return days_after(received, GOP_START_DAYS)


def closing_report_due(course: Course, sent_at: datetime, weeks: int) -> datetime | None:
    """When a municipal course should have sent its closing report (the municipality's status to the GP): the
    end of the day `weeks` weeks after the day its referral was sent; None for a course not at the municipal
    stage (its status has come, or it is elsewhere on the pathway). The agreement names no length for the
    municipal course: `weeks` is the operator's (`closing_report_weeks`, default 16)."""
    if course.current is not Stage.MUNICIPAL:
        return None
    return days_after(sent_at, 7 * weeks)


def ack_due(last_sent_at: datetime, resends: int, timeout: timedelta, max_resends: int) -> datetime:
    """When our MedCom message still without an ack is given up on: `timeout` after its last transmission for
    each resend still to come and the last wait (`service/outbound.py` resends after `timeout`, and gives up
    after `max_resends` resends)."""
    waits = max(max_resends - resends, 0) + 1
    return instant(_aware(last_sent_at)) + timeout * waits


def needs_a_person(state: OutboundState) -> bool:
    """Whether nothing automatic will settle the message any more (gave up, or an error ack)."""
    return state in OutboundState.needing_a_person()


def opening_hours_reached(hours: OpeningHours | None, start: datetime, limit: float) -> datetime:
    """The moment (UTC) `limit` opening hours have passed since `start` (`opening_hours.open_hours_between`
    read backwards: the moment from which `hotline.overdue_hours` says a request is overdue); every hour counts
    when there are no opening hours (triage). ValueError when the hotline opens on no day of the coming year."""
    begin = instant(_aware(start))
    if hours is None:
        return begin + timedelta(hours=limit)
    left = timedelta(hours=limit)
    first = begin.astimezone(hours.zone).date()
    for offset in range(0, 366 * 2):
        span = hours.span_on(first + timedelta(days=offset))
        if span is None:
            continue
        opens, closes = (max(span[0].astimezone(UTC), begin), span[1].astimezone(UTC))
        if closes <= opens:
            continue
        if closes - opens >= left:
            return opens + left
        left -= closes - opens
    raise ValueError("the hotline is not open on enough days of the coming two years")


def _aware(at: datetime) -> datetime:
    if at.utcoffset() is None:
        raise ValueError("a time without an offset cannot be placed in Danish time")
    return at
