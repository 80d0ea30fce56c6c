"""The deadlines a course can miss (issue #14, overdue markers): Danish weekdays (public holidays from the
`holidays` package, store bededag gone from 2024), day counts in Danish time across both daylight-saving
changes, each rule at its boundary in the pure domain, through `service.pathway_watch` on a real SQLite store
filled by the real flows, and through `integration pathway overdue`."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner, Result

from integration.adapters.memory import InMemoryBroker, drain_in_memory
from integration.adapters.sql.sqlite import SqliteAuditStore
from integration.adapters.sql.stores import open_audit_store
from integration.bootstrap import build
from integration.cli.main import main
from integration.config import Settings
from integration.domain.course import AckReceived, Course, OutboundState, Responsible, SentReferral, Stage, StateChanges
from integration.domain.deadlines import (
    ack_due,
    at_gop_receiver,
    closing_report_due,
    days_after,
    gop_contact_due,
    gop_start_due,
    is_danish_holiday,
    is_gop,
    is_weekday,
    nth_weekday_after,
    opening_hours_reached,
    weekdays_after,
)
from integration.domain.hotline import Hotline, overdue_hours
from integration.domain.opening_hours import OpeningHours
from integration.errors import ConfigurationError
from integration.log import cpr_numbers_in
from integration.service.pathway_watch import (
    OVERDUE_RULES,
    RULES,
    SHOWN_ONLY,
    Deadline,
    deadlines,
    overdue,
    overdue_counts,
)
from integration.service.ports import Resend
from integration.service.processor import RetryPolicy
from integration.topology import FLOWS, SENDERS_BY_KIND, outbound_exchanges

CPH = ZoneInfo("Europe/Copenhagen")
SAMPLES = Path(__file__).resolve().parents[2] / "integration" / "cli" / "samples"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


# -- Danish weekdays ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("day", "holiday"),
    [
        (date(2026, 4, 2), True),  # skærtorsdag
        (date(2026, 4, 3), True),  # langfredag
        (date(2026, 4, 6), True),  # 2. påskedag
        (date(2026, 5, 14), True),  # Kristi himmelfartsdag
        (date(2026, 5, 25), True),  # 2. pinsedag
        (date(2026, 12, 25), True),  # juledag
        (date(2026, 12, 26), True),  # 2. juledag
        (date(2027, 1, 1), True),  # nytårsdag
        (date(2023, 5, 5), True),  # store bededag, the last one
        (date(2024, 4, 26), False),  # store bededag abolished from 2024
        (date(2026, 5, 1), False),  # the fourth Friday after Easter 2026: no longer a holiday
        (date(2026, 12, 24), False),  # juleaftensdag: no public holiday
        (date(2026, 12, 31), False),  # nytårsaftensdag: no public holiday
        (date(2026, 6, 5), False),  # grundlovsdag: no public holiday
        (date(2026, 4, 7), False),  # the Tuesday after Easter
    ],
)
def test_danish_public_holidays(day: date, holiday: bool) -> None:
    assert is_danish_holiday(day) is holiday
    assert is_weekday(day) is (not holiday and day.weekday() < 5)


@pytest.mark.parametrize(
    ("start", "count", "expected"),
    [
        (date(2026, 11, 20), 1, date(2026, 11, 23)),  # Friday → Monday: the weekend is skipped
        (date(2026, 11, 21), 1, date(2026, 11, 23)),  # Saturday → Monday
        (date(2026, 11, 20), 5, date(2026, 11, 27)),  # a week
        (date(2026, 3, 27), 5, date(2026, 4, 8)),  # Easter: skærtorsdag, langfredag, 2. påskedag skipped
        (date(2026, 4, 1), 1, date(2026, 4, 7)),  # the Wednesday before Easter → the Tuesday after
        (date(2026, 5, 13), 1, date(2026, 5, 15)),  # Kristi himmelfart skipped
        (date(2026, 5, 22), 1, date(2026, 5, 26)),  # the weekend and 2. pinsedag skipped
        (date(2026, 12, 23), 1, date(2026, 12, 24)),  # juleaftensdag counts
        (date(2026, 12, 24), 1, date(2026, 12, 28)),  # juledag, 2. juledag (a Saturday), Sunday
        (date(2023, 5, 4), 1, date(2023, 5, 8)),  # store bededag 2023 skipped
        (date(2024, 4, 25), 1, date(2024, 4, 26)),  # … but not in 2024
        (date(2026, 12, 30), 2, date(2027, 1, 4)),  # 31 Dec counts, nytårsdag not (across the year)
    ],
)
def test_nth_weekday_after(start: date, count: int, expected: date) -> None:
    assert nth_weekday_after(start, count) == expected


@pytest.mark.parametrize("count", [0, -1, 10_000])
def test_a_weekday_count_out_of_range_is_refused(count: int) -> None:
    with pytest.raises(ValueError, match="weekday count"):
        nth_weekday_after(date(2026, 1, 5), count)


def test_a_time_without_an_offset_is_refused() -> None:
    naive = datetime(2026, 3, 27, 23, 30)
    for rule in (gop_contact_due, gop_start_due, lambda t: weekdays_after(t, 1), lambda t: days_after(t, 1)):
        with pytest.raises(ValueError, match="offset"):
            rule(naive)
    with pytest.raises(ValueError, match="cannot be negative"):
        days_after(datetime(2026, 3, 27, tzinfo=CPH), -1)


# -- daylight saving ---------------------------------------------------------------------------------------
def test_gop_contact_received_friday_late_evening_before_the_spring_change_and_easter() -> None:
    """Friday 27 March 2026 23:30 in Copenhagen (22:30 UTC; the clocks go forward on Sunday 29 March): the
    five weekdays are 30, 31 March, 1, 7, 8 April; the deadline is the end of 8 April in summer time."""
    received = datetime(2026, 3, 27, 23, 30, tzinfo=CPH)
    assert gop_contact_due(received) == utc(2026, 4, 8, 22, 0)
    assert gop_contact_due(received.astimezone(UTC)) == utc(2026, 4, 8, 22, 0)  # the same instant in UTC


def test_days_are_counted_on_the_danish_calendar_day_not_the_utc_one() -> None:
    """Around the autumn change (Sunday 25 October 2026): Thursday 23:30 in Copenhagen is Thursday; 00:30 on
    Friday is Friday, though it is still Thursday 22:30 in UTC."""
    thursday_late = datetime(2026, 10, 22, 21, 30, tzinfo=UTC)  # 23:30 CEST
    friday_early = datetime(2026, 10, 22, 22, 30, tzinfo=UTC)  # 00:30 CEST
    assert gop_contact_due(thursday_late) == utc(2026, 10, 29, 23, 0)  # 23, 26-29 Oct; end of 29 Oct in CET
    assert gop_contact_due(friday_early) == utc(2026, 10, 30, 23, 0)  # 26-30 Oct


@pytest.mark.parametrize(
    ("received", "due", "hours"),
    [
        (datetime(2026, 3, 20, 10, 0, tzinfo=CPH), utc(2026, 4, 3, 22, 0), 14 * 24 - 1),  # across spring
        (datetime(2026, 10, 16, 10, 0, tzinfo=CPH), utc(2026, 10, 30, 23, 0), 14 * 24 + 1),  # across autumn
        (datetime(2026, 11, 20, 15, 0, tzinfo=CPH), utc(2026, 12, 4, 23, 0), 14 * 24),  # no change
    ],
)
def test_gop_start_is_the_end_of_the_14th_danish_day(received: datetime, due: datetime, hours: int) -> None:
    assert gop_start_due(received) == due
    midnight = datetime.combine(received.date(), time(0), tzinfo=CPH) + timedelta(days=1)
    assert (due - midnight.astimezone(UTC)) == timedelta(hours=hours)  # 14 local days, whatever their length
    assert due.astimezone(CPH).time() == time(0)


# -- the rules at their boundaries -------------------------------------------------------------------------
def referral(category: str, performer: str = "municipality") -> SentReferral:
    return SentReferral(
        "urn:uuid:e", "e", performer, "434751000016002", category, "moderate", ("exercise",), "municipality", False
    )


def course(stage: Stage, category: str | None) -> Course:
    return Course(
        "2512489996",
        "715541000016001",
        "851",
        stage.open,
        Responsible.HOSPITAL,
        stage,
        referral=None if category is None else referral(category),
    )


@pytest.mark.parametrize(
    ("stage", "category", "gop", "at_receiver"),
    [
        (Stage.MUNICIPAL, "gop-general", True, True),
        (Stage.SPECIALISED, "gop-specialised", True, True),
        (Stage.MUNICIPAL, "gop-specialised", True, False),  # stepped down: the hospital's GOP is behind it
        (Stage.AWAITING_HOSPITAL_CLOSING, "gop-general", True, False),
        (Stage.MUNICIPAL, "municipal-rehabilitation", False, False),
        (Stage.AWAITING_VISITATION, None, False, False),
    ],
)
def test_gop_deadlines_apply_at_the_receivers_stage(
    stage: Stage, category: str | None, gop: bool, at_receiver: bool
) -> None:
    one = course(stage, category)
    assert is_gop(one.referral) is gop
    assert at_gop_receiver(one) is at_receiver


def test_closing_report_due_only_for_a_municipal_course() -> None:
    sent = datetime(2026, 11, 20, 15, 0, tzinfo=CPH)
    assert closing_report_due(course(Stage.MUNICIPAL, "gop-general"), sent, 16) == utc(2027, 3, 12, 23, 0)
    assert closing_report_due(course(Stage.MUNICIPAL, "gop-general"), sent, 1) == utc(2026, 11, 27, 23, 0)
    for stage in (Stage.SPECIALISED, Stage.AWAITING_HOSPITAL_CLOSING, Stage.CLOSED):
        assert closing_report_due(course(stage, "gop-general"), sent, 16) is None


def test_ack_due_counts_the_resends_still_to_come() -> None:
    last = datetime(2026, 11, 20, 15, 0, tzinfo=CPH)
    minutes = timedelta(minutes=30)
    assert ack_due(last, 0, minutes, 2) == utc(2026, 11, 20, 15, 30)  # 3 waits of 30 minutes
    assert ack_due(last, 2, minutes, 2) == utc(2026, 11, 20, 14, 30)  # the last wait only
    assert ack_due(last, 5, minutes, 2) == utc(2026, 11, 20, 14, 30)  # never before the last transmission


def hotline_hours() -> Hotline:
    weekly = {d: (time(8), time(15)) for d in range(5)}
    hours = OpeningHours(weekly, frozenset({(12, 24)}), is_danish_holiday)
    return Hotline("715541000016001", "Kardiologi", hours, "bagvagt", "+45 1")


@pytest.mark.parametrize(
    ("received", "due"),
    [
        (datetime(2026, 11, 20, 14, 0, tzinfo=CPH), datetime(2026, 11, 23, 15, 0, tzinfo=CPH)),  # Fri 1 h, Mon 7
        (datetime(2026, 11, 21, 10, 0, tzinfo=CPH), datetime(2026, 11, 24, 9, 0, tzinfo=CPH)),  # Sat: Mon 7, Tue 1
        (datetime(2026, 4, 1, 12, 0, tzinfo=CPH), datetime(2026, 4, 7, 13, 0, tzinfo=CPH)),  # Easter skipped
        (datetime(2026, 3, 27, 14, 0, tzinfo=CPH), datetime(2026, 3, 30, 15, 0, tzinfo=CPH)),  # across spring
        (datetime(2026, 12, 23, 12, 0, tzinfo=CPH), datetime(2026, 12, 28, 13, 0, tzinfo=CPH)),  # closed 24 Dec
    ],
)
def test_opening_hours_reached_is_when_the_hotline_rule_turns_overdue(received: datetime, due: datetime) -> None:
    desk = hotline_hours()
    hotlines = {desk.department: desk}
    reached = opening_hours_reached(desk.hours, received, 8)
    assert reached == due.astimezone(UTC)
    assert overdue_hours(hotlines, desk.department, received, reached, 8) is not None
    assert overdue_hours(hotlines, desk.department, received, reached - timedelta(seconds=1), 8) is None
    # triage (no hours): every hour counts
    assert opening_hours_reached(None, received, 8) == received.astimezone(UTC) + timedelta(hours=8)


def test_opening_hours_never_open_is_an_error() -> None:
    never = OpeningHours({}, frozenset(), is_danish_holiday)
    with pytest.raises(ValueError, match="not open"):
        opening_hours_reached(never, datetime(2026, 1, 5, tzinfo=CPH), 8)


# -- through the store: the real flows fill it -------------------------------------------------------------
SENT = datetime(2026, 11, 20, 15, 0, tzinfo=CPH)  # a Friday: the discharges are processed (the referrals sent)
ASKED = datetime(2026, 11, 23, 10, 0, tzinfo=CPH)  # a Monday: the advice request is received
GOP_GENERAL, MUNICIPAL_ONLY, GOP_SPECIALISED, NOT_REFERRED = "2512489996", "2509479989", "1502779995", "3103979995"
DISCHARGES = {
    GOP_GENERAL: "01-municipal-gop-general-sternotomy",
    MUNICIPAL_ONLY: "02-municipal-rehabilitation-elements-only",
    GOP_SPECIALISED: "04-high-risk-hospital",
    NOT_REFERRED: "07-no-referral",
}
FAST = RetryPolicy(attempts=2, seconds=1, initial_wait=0.001, max_wait=0.01)


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A store the real flows filled: four discharges (a general GOP, a municipal referral, a specialised GOP,
    none), then an advice request; and each patient's referral's MessageHeader id, as sent."""
    path = tmp_path_factory.mktemp("deadlines") / "audit.sqlite3"
    broker = InMemoryBroker()
    for exchange in outbound_exchanges():
        broker.bind(exchange, "out", "#")
    store = SqliteAuditStore(str(path))
    now = [SENT]
    processor = build(Settings.from_env({}), bus=broker, store=store, clock=lambda: now[0], retry=FAST).processor
    headers = {}
    for patient, sample in DISCHARGES.items():
        body = (SAMPLES / "discharge" / f"{sample}.event.json").read_bytes()
        broker.user_id = SENDERS_BY_KIND["hospital"].user
        broker.publish(SENDERS_BY_KIND["hospital"].exchange, "discharge", body, json.loads(body)["eventId"])
        drain_in_memory(broker, processor, list(FLOWS))
        while (message := broker.get("out")) is not None:
            headers[patient] = json.loads(message.body)["entry"][0]["resource"]["id"]
    now[0] = ASKED
    body = (SAMPLES / "hotline" / "municipality-routine.request.json").read_bytes()
    broker.user_id = SENDERS_BY_KIND["municipality"].user
    broker.publish(SENDERS_BY_KIND["municipality"].exchange, "hotline", body, json.loads(body)["requestId"])
    drain_in_memory(broker, processor, list(FLOWS))
    store.close()
    return path, headers


@pytest.fixture
def dsn(filled: tuple[Path, dict[str, str]], tmp_path: Path) -> str:
    copy = tmp_path / "audit.sqlite3"
    shutil.copy(filled[0], copy)
    return f"sqlite:///{copy}"


@pytest.fixture
def headers(filled: tuple[Path, dict[str, str]]) -> dict[str, str]:
    return filled[1]


@pytest.fixture
def store(dsn: str) -> Iterator[Any]:
    opened = open_audit_store(dsn)
    yield opened
    opened.close()


SETTINGS = Settings.from_env({})
REQUEST = "6b1c9a52-3f0e-4d2b-9a1f-0c2d4e6f8a10"


def by_rule(found: list[Deadline], rule: str) -> list[Deadline]:
    return [d for d in found if d.rule == rule]


def test_every_deadline_is_found_soonest_first_and_none_is_overdue_at_the_start(store: Any, headers: dict) -> None:
    found = deadlines(store, SETTINGS, SENT)
    assert [d.due for d in found] == sorted(d.due for d in found)
    # missed-referral: a watched discharge (tests/runtime/test_watched_episode_store.py), none in this store
    assert {d.rule for d in found} == set(RULES) - {"ack-error", "missed-referral"}
    assert overdue(store, SETTINGS, SENT) == [] and not any(d.passed for d in found)
    assert overdue_counts(store, SETTINGS, SENT) == dict.fromkeys(OVERDUE_RULES, 0)
    assert all(d.due.utcoffset() == timedelta(0) for d in found)
    assert cpr_numbers_in(" ".join(d.detail + d.subject for d in found)) == []


def edges(store: Any, rule: str, subject: str, due: datetime) -> None:
    """The deadline `rule` about `subject` is due at `due`: passed (and overdue, unless the rule is only shown)
    then, not a microsecond before."""
    before = {(d.rule, d.subject): d for d in deadlines(store, SETTINGS, due - timedelta(microseconds=1))}
    then = {(d.rule, d.subject): d for d in deadlines(store, SETTINGS, due)}
    assert before[(rule, subject)].due == then[(rule, subject)].due == due
    assert not before[(rule, subject)].passed and then[(rule, subject)].passed
    assert not before[(rule, subject)].overdue
    if rule in SHOWN_ONLY:  # no event could clear it: shown as passed, never overdue, never counted
        assert not then[(rule, subject)].overdue
        assert (rule, subject) not in {(d.rule, d.subject) for d in overdue(store, SETTINGS, due)}
        assert rule not in overdue_counts(store, SETTINGS, due)
        return
    assert then[(rule, subject)].overdue
    assert (rule, subject) in {(d.rule, d.subject) for d in overdue(store, SETTINGS, due)}
    assert overdue_counts(store, SETTINGS, due)[rule] >= 1


def test_visitation(store: Any) -> None:
    (one,) = by_rule(deadlines(store, SETTINGS, SENT), "visitation")
    assert one.patient == NOT_REFERRED and one.subject == "6edf346e-acdb-567b-9603-d36b47c76330"
    edges(store, "visitation", one.subject, utc(2026, 12, 11, 12, 30))  # discharged 20 Nov 13:30 CET + 21 days
    hf = Settings.from_env({"INTEGRATION_VISITATION_WINDOW_DAYS": "7"})
    assert by_rule(deadlines(store, hf, SENT), "visitation")[0].due == utc(2026, 11, 27, 12, 30)


def test_gop_contact_and_start_from_the_send_time_while_no_ack_came(store: Any, headers: dict) -> None:
    for patient in (GOP_GENERAL, GOP_SPECIALISED):
        subject = headers[patient]
        edges(store, "gop-contact", subject, utc(2026, 11, 27, 23, 0))  # Fri 20 Nov → end of Fri 27 Nov
        edges(store, "gop-start", subject, utc(2026, 12, 4, 23, 0))  # end of 4 Dec
        contact = next(d for d in deadlines(store, SETTINGS, SENT) if d.subject == subject and d.rule == "gop-contact")
        assert contact.patient == patient and "whether it happened" in contact.detail
    assert all(d.subject != headers[MUNICIPAL_ONLY] for d in deadlines(store, SETTINGS, SENT) if "gop" in d.rule)


def test_gop_deadlines_count_from_the_receivers_ack(store: Any, headers: dict) -> None:
    acked = datetime(2026, 11, 23, 9, 0, tzinfo=CPH)  # Monday
    store.record([], acked, changes=StateChanges(acks=(AckReceived(headers[GOP_GENERAL], "ok"),)))
    edges(store, "gop-contact", headers[GOP_GENERAL], utc(2026, 11, 30, 23, 0))  # 24-27, 30 Nov
    edges(store, "gop-start", headers[GOP_GENERAL], utc(2026, 12, 7, 23, 0))
    assert headers[GOP_GENERAL] not in {d.subject for d in by_rule(deadlines(store, SETTINGS, acked), "ack-missing")}


def test_gop_deadlines_end_when_the_course_leaves_the_receiver(store: Any, headers: dict) -> None:
    course = store.course(GOP_SPECIALISED)
    store.record([], SENT, changes=StateChanges(courses=(Course(**{**asdict(course), "stage": Stage.CLOSED}),)))
    late = datetime(2027, 6, 1, tzinfo=CPH)
    assert all(d.patient != GOP_SPECIALISED for d in deadlines(store, SETTINGS, late) if d.rule.startswith("gop"))


def asdict(course: Course) -> dict[str, Any]:
    return {name: getattr(course, name) for name in course.__dataclass_fields__}


def test_ack_missing_is_overdue_once_given_up(store: Any, headers: dict) -> None:
    waiting = {d.subject: d for d in by_rule(deadlines(store, SETTINGS, SENT), "ack-missing")}
    assert set(waiting) >= {headers[GOP_GENERAL], headers[MUNICIPAL_ONLY], headers[GOP_SPECIALISED]}
    assert waiting[headers[GOP_SPECIALISED]].due == utc(2026, 11, 20, 15, 30)  # 3 waits of 30 minutes
    later = datetime(2027, 1, 1, tzinfo=CPH)
    given_up = datetime(2026, 11, 20, 16, 31, tzinfo=CPH)
    store.record([], given_up, resends=[Resend(headers[GOP_SPECIALISED], None)])
    edges(store, "ack-missing", headers[GOP_SPECIALISED], given_up.astimezone(UTC))
    (one,) = [d for d in overdue(store, SETTINGS, later) if d.subject == headers[GOP_SPECIALISED]]
    assert one.patient == GOP_SPECIALISED and "a person must follow it up" in one.detail


def test_ack_missing_is_overdue_by_the_clock_when_no_resend_job_gave_it_up(store: Any, headers: dict) -> None:
    """The consumers down, or run without the resend job: a referral no one acknowledged is still reported."""
    edges(store, "ack-missing", headers[GOP_GENERAL], utc(2026, 11, 20, 15, 30))
    late = {d.subject: d for d in overdue(store, SETTINGS, datetime(2027, 3, 1, tzinfo=CPH)) if d.rule == "ack-missing"}
    assert {headers[GOP_GENERAL], headers[MUNICIPAL_ONLY], headers[GOP_SPECIALISED]} <= set(late)
    assert "past the time the resend job gives up" in late[headers[GOP_GENERAL]].detail


def test_the_gop_deadlines_are_shown_passed_but_never_overdue(store: Any, headers: dict) -> None:
    """No event tells us the receiver contacted the patient or started the training: a mark nothing could clear
    would keep `pathway overdue` and the alert on for every GOP patient (decision 23)."""
    months_later = datetime(2027, 1, 15, tzinfo=CPH)
    gops = [d for d in deadlines(store, SETTINGS, months_later) if d.rule in SHOWN_ONLY]
    assert gops and all(d.passed and not d.overdue for d in gops)
    assert not any(d.rule in SHOWN_ONLY for d in overdue(store, SETTINGS, months_later))
    assert set(overdue_counts(store, SETTINGS, months_later)) == set(OVERDUE_RULES) == set(RULES) - SHOWN_ONLY


def test_ack_error(store: Any, headers: dict) -> None:
    answered = datetime(2026, 11, 21, 8, 0, tzinfo=CPH)
    store.record([], answered, changes=StateChanges(acks=(AckReceived(headers[MUNICIPAL_ONLY], "error"),)))
    edges(store, "ack-error", headers[MUNICIPAL_ONLY], answered.astimezone(UTC))
    (one,) = by_rule(deadlines(store, SETTINGS, answered), "ack-error")
    assert one.patient == MUNICIPAL_ONLY and "error ack" in one.detail


def test_closing_report(store: Any, headers: dict) -> None:
    found = by_rule(deadlines(store, SETTINGS, SENT), "closing-report")
    assert {d.subject for d in found} == {headers[GOP_GENERAL], headers[MUNICIPAL_ONLY]}  # the municipal courses
    edges(store, "closing-report", headers[MUNICIPAL_ONLY], utc(2027, 3, 12, 23, 0))  # 16 weeks after 20 Nov
    short = Settings.from_env({"INTEGRATION_CLOSING_REPORT_WEEKS": "2"})
    assert {d.due for d in by_rule(deadlines(store, short, SENT), "closing-report")} == {utc(2026, 12, 4, 23, 0)}


def test_hotline_hours(store: Any) -> None:
    (one,) = by_rule(deadlines(store, SETTINGS, ASKED), "hotline-hours")
    assert one.subject == REQUEST and one.patient == GOP_GENERAL
    edges(store, "hotline-hours", REQUEST, utc(2026, 11, 24, 10, 0))  # Mon 10-15, Tue 08-11 (CET)
    hours = Settings.from_env({"INTEGRATION_HOTLINE_OVERDUE_HOURS": "5"})
    assert by_rule(deadlines(store, hours, ASKED), "hotline-hours")[0].due == utc(2026, 11, 23, 14, 0)


def test_deadlines_need_an_aware_time(store: Any) -> None:
    with pytest.raises(ValueError, match="offset"):
        deadlines(store, SETTINGS, datetime(2026, 12, 1, 12, 0))


def test_an_empty_store_has_no_deadlines(tmp_path: Path) -> None:
    store = open_audit_store(f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    try:
        assert deadlines(store, SETTINGS, SENT) == []
        assert overdue_counts(store, SETTINGS, SENT) == dict.fromkeys(OVERDUE_RULES, 0)
    finally:
        store.close()


# -- the setting -------------------------------------------------------------------------------------------
def test_closing_report_weeks_defaults_to_16_and_is_validated(tmp_path: Path) -> None:
    assert Settings.from_env({}).closing_report_weeks == 16
    assert Settings.from_env({"INTEGRATION_CLOSING_REPORT_WEEKS": "104"}).closing_report_weeks == 104
    for value, says in [
        ("0", "be positive"),
        ("105", "be at most 104 weeks"),
        ("2.5", "be a whole number"),
        ("", "be a"),
    ]:
        with pytest.raises(ConfigurationError, match=f"^closing_report_weeks must {says}"):
            Settings.from_env({"INTEGRATION_CLOSING_REPORT_WEEKS": value})
    config = tmp_path / "integration.toml"
    config.write_text("[integration]\nclosing_report_weeks = 12\n")
    assert Settings.from_env({"INTEGRATION_CONFIG": str(config)}).closing_report_weeks == 12


# -- through the command -----------------------------------------------------------------------------------
def run(dsn: str, *args: str, **env: str) -> Result:
    clean = {k: None for k in os.environ if k.startswith("INTEGRATION_")}
    settings = clean | {"INTEGRATION_AUDIT_DSN": dsn, "INTEGRATION_CONFIG": ""} | env
    return CliRunner().invoke(main, ["pathway", "overdue", *args], env=settings)


def viewed(dsn: str) -> list[tuple[str | None, dict[str, Any]]]:
    store = open_audit_store(dsn)
    try:
        return [(r.patient, dict(r.detail)) for r in store.records() if r.step == "pathway-overdue-viewed"]
    finally:
        store.close()


def lines_of(done: Result) -> list[list[str]]:
    """The other deadlines' lines, each split on its two-space columns."""
    text = done.stdout.split("other deadline(s) past due", 1)
    return [line.strip().split("  ") for line in text[1].splitlines()[1:]] if len(text) == 2 else []


def test_the_command_shows_nothing_overdue_at_the_start(dsn: str) -> None:
    done = run(dsn, "--at", (SENT + timedelta(minutes=1)).isoformat())
    assert done.exit_code == 0, done.output
    assert "other deadline" not in done.stdout
    assert viewed(dsn)[-1][0] is None


@pytest.mark.parametrize(
    ("rule", "at", "due"),
    [
        ("hotline-hours", "2026-11-24T11:00+01:00", "2026-11-24T11:00+01:00"),
        ("closing-report", "2027-03-13T00:00+01:00", "2027-03-13T00:00+01:00"),
        ("visitation", "2026-12-11T13:30+01:00", None),  # shown in the visitation block, as before
    ],
)
def test_each_rule_through_the_command(dsn: str, rule: str, at: str, due: str | None) -> None:
    done = run(dsn, "--at", at)
    assert done.exit_code == 1, done.output
    assert cpr_numbers_in(done.output) == []
    shown = [cols for cols in lines_of(done) if cols[0] == rule]
    if due is None:
        assert "event 6edf346e-acdb-567b-9603-d36b47c76330" in done.stdout and shown == []
    else:
        assert shown and all(cols[1] == "<cpr>" and cols[2] == f"due {due}" for cols in shown)
    records = viewed(dsn)
    counts = records[-1][1]["rules"]
    assert counts[rule] >= 1 and set(counts) == set(OVERDUE_RULES)
    patients = [p for p, _ in records]
    assert len(patients) == len(set(patients)) and None not in patients  # each patient shown once


def test_ack_deadlines_through_the_command(dsn: str, headers: dict) -> None:
    store = open_audit_store(dsn)
    try:
        store.record([], SENT + timedelta(hours=2), resends=[Resend(headers[GOP_SPECIALISED], None)])
        store.record([], SENT, changes=StateChanges(acks=(AckReceived(headers[MUNICIPAL_ONLY], "error"),)))
    finally:
        store.close()
    done = run(dsn, "--at", (SENT + timedelta(hours=3)).isoformat())
    assert done.exit_code == 1, done.output
    rows = {(cols[0], cols[3]): cols for cols in lines_of(done)}
    assert rows[("ack-missing", headers[GOP_SPECIALISED])][2] == "due 2026-11-20T17:00+01:00"  # given up
    assert rows[("ack-missing", headers[GOP_GENERAL])][2] == "due 2026-11-20T16:30+01:00"  # late by the clock
    assert ("ack-error", headers[MUNICIPAL_ONLY]) in rows
    assert not any(rule in SHOWN_ONLY for rule, _ in rows)
    assert sorted(p or "" for p, _ in viewed(dsn)) == sorted([GOP_SPECIALISED, MUNICIPAL_ONLY, GOP_GENERAL])
    assert cpr_numbers_in(done.output) == []


def test_a_mapping_that_cannot_be_read_is_a_configuration_error(dsn: str, tmp_path: Path) -> None:
    done = run(dsn, "--at", ASKED.isoformat(), INTEGRATION_MAPPINGS_DIR=str(tmp_path / "nowhere"))
    assert done.exit_code == 3 and done.stderr.startswith("error: configuration:")
    assert viewed(dsn) == []


def test_the_deadlines_read_our_messages_without_their_bodies(store: Any, headers: dict) -> None:
    """A store with thousands of messages awaiting their acks must not be loaded whole into memory every minute
    (the gauge's refresh): the deadlines need times and states, never the FHIR bodies."""
    whole = {m.header_id: m for m in store.outbound_messages([OutboundState.AWAITING])}
    slim = {m.header_id: m for m in store.outbound_messages([OutboundState.AWAITING], bodies=False)}
    sent = store.outbound_sent(list(headers.values()), bodies=False)
    assert whole.keys() == slim.keys() and all(whole[h].output.body for h in whole)
    assert all(m.output.body == b"" for m in [*slim.values(), *sent.values()])
    strip = [replace(m, output=replace(m.output, body=b"")) for m in whole.values()]
    assert strip == list(slim.values())
