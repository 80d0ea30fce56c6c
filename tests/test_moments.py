"""Every moment we read lies in the years 1900 to 2199 (`integration.domain.moment`; attack on issue 11, F3 and
F4): a time at the calendar's ends that our schemas admitted crashed the flow with OverflowError (six
attempts, then dead-lettered as our own bug; a MedCom sender got transient-error). Each inbound kind at both
extremes is refused naming the field, a MedCom sender gets fatal-error, `--at` is a usage error, and the
calendar arithmetic itself never overflows, whatever time it is given."""

from __future__ import annotations

import json
import os
from datetime import UTC, date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle

from integration.adapters.sql.stores import open_audit_store
from integration.domain.cpr import _danish_date, born_by, parse_cpr
from integration.domain.moment import parse_moment, read_moment
from integration.domain.opening_hours import OpeningHours, open_hours_between
from integration.errors import InvalidInput
from integration.flows.dispatch import Pipeline
from tests.cli_runs import run_integration
from tests.conftest import GOLDEN
from tests.test_input_classification import (
    EVENT,
    STATE,
    WEEKDAY,
    ack_code,
    care_communication,
    event,
    rejected,
    resource,
)
from tests.test_input_classification import refused as refused_with_answer

LATEST = "9999-12-31T23:59:59-14:00"  # in UTC: 10000-01-01T13:59:59, past the calendar
EARLIEST = "0001-01-01T00:00:00+14:00"  # in UTC: 0000-12-31T10:00:00, before it
EXTREMES = [pytest.param(LATEST, id="year-9999"), pytest.param(EARLIEST, id="year-0001")]
REQUEST = json.loads((GOLDEN / "hotline" / "municipality-routine.request.json").read_text())


# -- the shared reader -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["1900-01-01T00:00:00+14:00", "1900-01-01T00:00:00Z", "2199-12-31T23:59:59-14:00", "2026-11-23T10:00:00+01:00"],
)
def test_a_moment_within_the_years_1900_to_2199_is_read(text: str) -> None:
    assert parse_moment(text) == datetime.fromisoformat(text)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("1899-12-31T23:59:59-14:00", "1900 to 2199"),
        ("2200-01-01T00:00:00+14:00", "1900 to 2199"),
        (LATEST, "1900 to 2199"),
        (EARLIEST, "1900 to 2199"),
        ("2026-11-24T09:00:00", "needs a time zone"),
        ("2026-02-29T10:00:00+01:00", "not a real date"),
        ("2016-12-31T23:59:60Z", "leap second"),
        ("2512489996", "not an ISO 8601 date and time"),
    ],
)
def test_any_other_moment_is_refused_naming_the_field_and_never_the_value(text: str, says: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        read_moment(text, "occurredAt")
    assert refused.value.field == "occurredAt" and says in refused.value.problem
    assert text not in str(refused.value)


# -- every inbound kind, at both extremes ---------------------------------------------------------------


@pytest.mark.parametrize("value", EXTREMES)
@pytest.mark.parametrize("field", ["occurredAt", "admission.admittedAt", "admission.dischargedAt"])
def test_a_discharge_event_at_the_calendars_ends_is_refused_naming_the_field(
    pipeline: Pipeline, field: str, value: str
) -> None:
    refused = rejected(event(field, value, EVENT), pipeline, WEEKDAY)
    assert isinstance(refused, InvalidInput) and refused.field == field, refused


@pytest.mark.parametrize("value", EXTREMES)
def test_an_advice_form_at_the_calendars_ends_is_refused_naming_sent_at(pipeline: Pipeline, value: str) -> None:
    refused = rejected(event("sentAt", value, REQUEST), pipeline, WEEKDAY, state=STATE)
    assert isinstance(refused, InvalidInput) and refused.field == "sentAt", refused


def _stamped(where: str, value: str) -> Any:
    def change(bundle: dict[str, Any]) -> None:
        if where == "Bundle.timestamp":
            bundle["timestamp"] = value
        else:
            resource(bundle, "Communication")["sent"] = value

    return change


@pytest.mark.parametrize("value", EXTREMES)
@pytest.mark.parametrize("where", ["Bundle.timestamp", "Communication.sent"])
@pytest.mark.parametrize("syntax", ["json", "xml"])
def test_a_care_communication_at_the_calendars_ends_gets_fatal_error_naming_the_field(
    pipeline: Pipeline, where: str, value: str, syntax: str
) -> None:
    raw = care_communication(_stamped(where, value))
    if syntax == "xml":
        xml = Bundle.model_validate(json.loads(raw)).model_dump_xml()
        raw = xml if isinstance(xml, bytes) else xml.encode()
    refused, answer = refused_with_answer(raw, pipeline, WEEKDAY, state=STATE)
    assert isinstance(refused, InvalidInput) and refused.field == where, refused
    assert ack_code(answer) == "fatal-error"  # not transient-error: sending it again cannot help


def test_the_installed_transform_refuses_it_with_one_line_and_exit_2() -> None:
    for raw, field in (
        (event("occurredAt", LATEST, EVENT), "occurredAt"),
        (care_communication(_stamped("Bundle.timestamp", EARLIEST)), "Bundle.timestamp"),
    ):
        done = run_integration("transform", "-", input=raw, timeout=60)
        stderr = done.stderr.decode()
        assert done.returncode == 2, stderr
        assert len(stderr.splitlines()) == 1 and field in stderr and "Traceback" not in stderr


# -- the arithmetic never overflows, whatever it is given -------------------------------------------------

ENDS = [
    datetime.fromisoformat(LATEST),
    datetime.fromisoformat(EARLIEST),
    datetime.max.replace(tzinfo=timezone(-timedelta(hours=23, minutes=59))),
    datetime.min.replace(tzinfo=timezone(timedelta(hours=23, minutes=59))),
    datetime.max.replace(tzinfo=UTC),
    datetime.min.replace(tzinfo=UTC),
]
WEEKDAYS_8_TO_15 = {d: (time(8), time(15)) for d in range(5)}


def test_a_cpr_birth_date_is_compared_with_any_time_without_overflow() -> None:
    cpr = parse_cpr("2512489996")
    for moment in ENDS:
        assert abs((_danish_date(moment) - moment.date()).days) <= 1
    born_by(cpr, datetime.fromisoformat(LATEST))  # born 1948: before the end of the calendar
    with pytest.raises(ValueError, match="after the event"):
        born_by(cpr, datetime.fromisoformat(EARLIEST))


def test_opening_hours_take_any_time_without_overflow() -> None:
    hours = OpeningHours(WEEKDAYS_8_TO_15, frozenset(), lambda _day: False)
    for moment in ENDS:
        hours.is_open(moment)
        assert hours.next_opening(moment).tzinfo is not None
        for other in ENDS:
            assert open_hours_between(hours, moment, other) >= 0
            assert open_hours_between(None, moment, other) >= 0
    assert hours.span_on(date.max) is not None  # 9999-12-31 is a Friday


def test_within_the_range_the_counting_is_unchanged() -> None:
    hours = OpeningHours(WEEKDAYS_8_TO_15, frozenset(), lambda _day: False)
    friday = datetime.fromisoformat("2026-10-23T14:00:00+02:00")
    monday = datetime.fromisoformat("2026-10-26T14:30:00+01:00")
    assert open_hours_between(hours, friday, monday) == 7.5


# -- `--at` ------------------------------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    open_audit_store(dsn).close()
    return {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")} | {"INTEGRATION_AUDIT_DSN": dsn}


@pytest.mark.parametrize("at", [LATEST, EARLIEST, "2200-01-01T00:00:00+01:00", "1899-12-31T12:00:00+01:00"])
@pytest.mark.parametrize(
    "command", [("hotline", "pending"), ("outbound", "pending"), ("outbound", "resend"), ("transform", "-")]
)
def test_at_outside_the_years_1900_to_2199_is_one_line_and_exit_2(
    env: dict[str, str], command: tuple[str, ...], at: str
) -> None:
    done = run_integration(*command, "--at", at, env=env, input="{}", timeout=60, text=True)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == "" and len(done.stderr.splitlines()) == 1, done.stderr
    assert "--at" in done.stderr and "1900 to 2199" in done.stderr and "Traceback" not in done.stderr
