"""Timestamps: the Bundle's and every other date and time, each with a time zone and a year we can read."""

from __future__ import annotations

import re

from integration.conformance.messaging_rules.base import Finding, Place, Resource
from integration.domain.moment import EARLIEST_YEAR, IMPLAUSIBLE, LATEST_YEAR

DATETIME_WITH_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T")
ZONE_SUFFIX = re.compile(r"(Z|[+-]\d{2}:\d{2})$")


def is_timestamp(value: str) -> bool:
    """A string that is a date and time (`YYYY-MM-DDT…`), whose zone and year are checked."""
    return value[10:11] == "T" and DATETIME_WITH_TIME.match(value) is not None


def time_findings(bundle: Resource, timestamps: list[tuple[Place, str]]) -> list[Finding]:
    """The Bundle's timestamp without a zone or with a year we do not read, then the other `timestamps` (as
    `is_timestamp` picks them) without a zone, then those with such a year."""
    findings = []
    timestamp = bundle.get("timestamp", "")
    if not isinstance(timestamp, str) or not ZONE_SUFFIX.search(timestamp):
        shown = timestamp if isinstance(timestamp, str) else ""
        findings.append(
            Finding("Bundle.timestamp", "missing or without a time zone", f"timestamp {shown!r} has no time zone")
        )
    elif not plausible_year(timestamp):
        findings.append(Finding("Bundle.timestamp", IMPLAUSIBLE, f"timestamp {timestamp!r} is {IMPLAUSIBLE}"))
    findings += [
        Finding(at.field, "has no time zone", f"timestamp {ts!r} has no time zone")
        for at, ts in timestamps
        if not ZONE_SUFFIX.search(ts)
    ]
    findings += [
        Finding(at.field, IMPLAUSIBLE, f"{at.text}: timestamp {ts!r} is {IMPLAUSIBLE}")
        for at, ts in timestamps
        if not plausible_year(ts)
    ]
    return findings


def plausible_year(timestamp: str) -> bool:
    """A date and time (`YYYY-MM-DDT…`, as `is_timestamp` picks them) whose year as written is one we read."""
    year = timestamp[:4]
    return not (year.isascii() and year.isdigit()) or EARLIEST_YEAR <= int(year) <= LATEST_YEAR
