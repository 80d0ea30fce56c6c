"""The hotline-overdue rule: opening hours of the department a request went to, every hour in triage."""

from __future__ import annotations

from integration.domain.hotline import overdue_hours
from tests.unit.test_hotline_routing import AALBORG, HOTLINES, at


def test_a_request_is_overdue_once_it_waited_the_limit_in_its_departments_opening_hours() -> None:
    friday_14 = at("2026-11-20T14:00")  # one opening hour left on Friday, then Monday from 08:00
    assert overdue_hours(HOTLINES, AALBORG, friday_14, at("2026-11-23T11:00"), 4) == 4.0
    assert overdue_hours(HOTLINES, AALBORG, friday_14, at("2026-11-23T10:59"), 4) is None


def test_triage_and_a_department_without_a_hotline_count_every_hour() -> None:
    friday_14 = at("2026-11-20T14:00")
    for department in (None, "999999999999999"):
        assert overdue_hours(HOTLINES, department, friday_14, at("2026-11-20T22:00"), 8) == 8.0
        assert overdue_hours(HOTLINES, department, friday_14, at("2026-11-20T21:00"), 8) is None
