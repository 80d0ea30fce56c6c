"""Where `integration transform` takes the state a flow asks about: none (the default: the same input gives the
same output, whatever ran before), a `--state` file, or the configured audit store (`--store`).

The state file is JSON, either a list of courses (the older form) or an object:

    {"courses": [{"patient": "DDMMYYSSSS" | "system|value", "referringDepartment": SOR (11-18 digits),
                  "municipalityCode": "851", "open": true,            open: may be left out when stage is given
                  "responsible": "hospital" | "gp",                   responsible: default hospital if open
                  -- where the course stands on the pathway (domain/course.py Course), each optional: --
                  "stage": "awaiting-visitation" | "specialised" | "municipal" | "awaiting-hospital-closing"
                           | "hospital-follow-up" | "closed" | "not-referred" | "cancelled",
                  "referrer": "hospital" | "gp",                      default hospital
                  "gp": ydernummer (6 digits),                       the GP of a course the GP referred
                  "dischargeEvent": "…",                             the event id of the discharge
                  "dischargedAt": "2026-11-02T10:15:00+01:00",       with its zone
                  "heartFailure": false, "municipalStatus": false, "hospitalDone": false,
                  "specialisedReferral": "…",                        a step-down's course: what it follows
                  "closedOn": "2026-12-01",
                  "episode": "…",                                    the episode of care of its discharge
                  "referral": {"serviceRequest": "urn:uuid:…", "eventId": "…",     the referral in force
                               "performer": "hospital" | "municipality", "receiver": SOR,
                               "category": "gop-specialised" | "gop-general" | "municipal-rehabilitation",
                               "riskGroup": "low" | "moderate" | "high", "elements": ["…", …],
                               "closingPlace": "hospital" | "municipality", "ambulatoryControl": true,
                               "municipalityCode": "851"}}],         municipalityCode: optional
     "openRequests": [{"threadId": "…", "requester": SOR or ydernummer}]}

One course per patient (a second is refused, naming both entries); the patient a CPR number or a replacement
number (X-eCPR, D-eCPR) as `system|value`. With a course `"stage": "awaiting-visitation"` and its
`dischargedAt`, a visitation event can be run through `integration transform --state`. `openRequests` are
the hotline requests awaiting a department's answer: the answer in that thread goes back to its requester.
A key not listed here is refused. Errors name the place in the file (`courses[0].open`,
`courses[0].referral.riskGroup`) and never repeat a value.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from datetime import date, datetime
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import click

from integration.adapters.sql.store import AuditStore
from integration.adapters.sql.stores import open_store
from integration.cli.audit import reader
from integration.config import Settings
from integration.domain.course import (
    Course,
    EarlierMessage,
    FixedState,
    OutboundStatus,
    Referrer,
    Responsible,
    SentReferral,
    Stage,
    State,
)
from integration.domain.cpr import parse_cpr
from integration.domain.identifiers import parse_replacement_cpr
from integration.domain.moment import parse_moment, plausible_date
from integration.domain.pathway import CATEGORY
from integration.domain.records import RiskGroup, Setting
from integration.errors import InvalidInput
from integration.formats.json_contract import decode_json
from integration.service.audit_chain import AuditEntry

T = TypeVar("T")
SOR_CODE = re.compile(r"[0-9]{11,18}")
YDERNUMMER = re.compile(r"[0-9]{6}")  # as the discharge event's schema has it
DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
DANISH_TIME = ZoneInfo("Europe/Copenhagen")


def state_file(path: Path) -> State:
    """The state in `path` (see the module's docstring). click.BadParameter (exit 2) naming where it is wrong."""
    try:
        document = decode_json(path.read_bytes())  # the reader of every inbound JSON: UTF-8, no key twice, …
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    except InvalidInput as exc:
        raise click.BadParameter(f"{path}: {exc}") from None
    try:
        return _state(document)
    except _Wrong as exc:
        raise click.BadParameter(f"{path}: {exc}") from None


class _Wrong(ValueError):
    """Where the state file is wrong (a JSON path) and what is wrong there, never the value."""


def _state(document: Any) -> FixedState:
    if isinstance(document, list):  # the older form: courses only
        document = {"courses": document}
    if not isinstance(document, dict):
        raise _Wrong("must be a list of courses or an object with courses and openRequests")
    unknown = sorted(set(document) - {"courses", "openRequests"})
    if unknown:
        raise _Wrong(f"unknown key(s) {', '.join(k if k.isidentifier() else '?' for k in unknown)}")
    courses: dict[str, Course] = {}
    first: dict[str, int] = {}
    for i, item in enumerate(_list(document, "courses")):
        course = _course(item, f"courses[{i}]")
        if course.patient in courses:  # the store holds one course per patient; which one is meant is a guess
            raise _Wrong(f"courses[{i}].patient is the patient of courses[{first[course.patient]}]: one course each")
        courses[course.patient], first[course.patient] = course, i
    threads = dict(_request(r, f"openRequests[{i}]") for i, r in enumerate(_list(document, "openRequests")))
    return FixedState(courses=courses, threads=threads)


def _list(document: dict[str, Any], key: str) -> list[Any]:
    value = document.get(key, [])
    if not isinstance(value, list):
        raise _Wrong(f"{key} must be a list")
    return value


def _text(item: dict[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value.strip():
        raise _Wrong(f"{where}.{key} is missing or not text")
    return value


COURSE_KEYS = frozenset({"patient", "referringDepartment", "municipalityCode", "open", "responsible"})


def _course(item: Any, where: str) -> Course:
    if not isinstance(item, dict):
        raise _Wrong(f"{where} must be an object")
    _known_keys(item, COURSE_KEYS | set(PATHWAY), where)
    pathway = _fields(item, PATHWAY, where)
    is_open = _open(item, pathway.get("stage"), where)
    responsible = item.get("responsible", Responsible.by_default(is_open).value)
    if responsible not in {r.value for r in Responsible}:
        raise _Wrong(f"{where}.responsible must be one of {', '.join(r.value for r in Responsible)}")
    return Course(
        _patient(item, where),
        _sor(item, "referringDepartment", where),
        _text(item, "municipalityCode", where),
        is_open,
        Responsible(responsible),
        **pathway,
    )


def _open(item: dict[str, Any], stage: Stage | None, where: str) -> bool:
    """`open` as given, or the stage's when left out; refused when it contradicts the stage."""
    is_open = item.get("open", None if stage is None else stage.open)
    if not isinstance(is_open, bool):
        raise _Wrong(f"{where}.open must be true or false")
    if stage is not None and is_open is not stage.open:
        raise _Wrong(f"{where}.open must be {str(stage.open).lower()} at the stage given (or be left out)")
    return is_open


def _known_keys(item: dict[str, Any], known: Collection[str], where: str) -> None:
    unknown = sorted(set(item) - set(known))
    if unknown:
        raise _Wrong(f"{where} has unknown key(s) {', '.join(k if k.isidentifier() else '?' for k in unknown)}")


Reader = Callable[[Any, str], Any]  # a value and its place in the file → what it means, or _Wrong naming the place


def _fields(item: dict[str, Any], readers: Mapping[str, tuple[str, Reader]], where: str) -> dict[str, Any]:
    """The attributes (by name) the keys of `readers` give, for those present in `item`."""
    return {name: read(item[key], f"{where}.{key}") for key, (name, read) in readers.items() if key in item}


def _text_value(value: Any, place: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Wrong(f"{place} must be text")
    return value


def _flag(value: Any, place: str) -> bool:
    if not isinstance(value, bool):
        raise _Wrong(f"{place} must be true or false")
    return value


def _one_of(choices: Collection[str], convert: Callable[[str], T]) -> Callable[[Any, str], T]:
    def read(value: Any, place: str) -> T:
        if value not in choices:
            raise _Wrong(f"{place} must be one of {', '.join(choices)}")
        return convert(value)

    return read


def _values(kind: type[Enum]) -> tuple[str, ...]:
    return tuple(str(member.value) for member in kind)


def _matching(pattern: re.Pattern[str], what: str) -> Reader:
    def read(value: Any, place: str) -> str:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise _Wrong(f"{place} must be {what}")
        return value

    return read


def _moment_value(value: Any, place: str) -> datetime:
    try:
        return parse_moment(_text_value(value, place))
    except ValueError as exc:
        raise _Wrong(f"{place}: {exc}") from None


def _day_value(value: Any, place: str) -> date:
    text = _text_value(value, place)
    try:
        if not DAY.fullmatch(text):
            raise ValueError("not a date as YYYY-MM-DD")
        return plausible_date(date.fromisoformat(text))
    except ValueError as exc:
        problem = str(exc) if str(exc).startswith(("not a date", "outside")) else "not a real date"
        raise _Wrong(f"{place}: {problem}") from None


def _elements(value: Any, place: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _Wrong(f"{place} must be a list of text")
    return tuple(_text_value(element, f"{place}[{i}]") for i, element in enumerate(value))


_SETTING = _one_of(_values(Setting), str)
REFERRAL: Mapping[str, tuple[str, Reader]] = {  # SentReferral's fields, every one required but municipalityCode
    "serviceRequest": ("service_request", _text_value),
    "eventId": ("event_id", _text_value),
    "performer": ("performer", _SETTING),
    "receiver": ("receiver", _matching(SOR_CODE, "a SOR code (11 to 18 digits)")),
    "category": ("category", _one_of(sorted(set(CATEGORY.values())), str)),
    "riskGroup": ("risk_group", _one_of(_values(RiskGroup), str)),
    "elements": ("elements", _elements),
    "closingPlace": ("closing_place", _SETTING),
    "ambulatoryControl": ("ambulatory_control", _flag),
    "municipalityCode": ("municipality_code", _text_value),
}


def _referral(value: Any, place: str) -> SentReferral:
    if not isinstance(value, dict):
        raise _Wrong(f"{place} must be an object")
    _known_keys(value, REFERRAL, place)
    missing = [key for key in REFERRAL if key != "municipalityCode" and key not in value]
    if missing:
        raise _Wrong(f"{place}.{missing[0]} is missing")
    return SentReferral(**_fields(value, REFERRAL, place))


PATHWAY: Mapping[str, tuple[str, Reader]] = {  # the optional course fields: where it stands on the pathway
    "stage": ("stage", _one_of(_values(Stage), Stage)),
    "referrer": ("referrer", _one_of(_values(Referrer), Referrer)),
    "gp": ("gp", _matching(YDERNUMMER, "a ydernummer (6 digits)")),
    "dischargeEvent": ("discharge_event", _text_value),
    "dischargedAt": ("discharged_at", _moment_value),
    "heartFailure": ("heart_failure", _flag),
    "specialisedReferral": ("specialised_referral", _text_value),
    "municipalStatus": ("municipal_status", _flag),
    "hospitalDone": ("hospital_done", _flag),
    "closedOn": ("closed_on", _day_value),
    "episode": ("episode", _text_value),
    "referral": ("referral", _referral),
}


def _patient(item: dict[str, Any], where: str) -> str:
    """A CPR number (10 digits, a real date, a plausible century) or a replacement number as `system|value`."""
    value = _text(item, "patient", where)
    system, bar, number = value.partition("|")
    try:
        parse_replacement_cpr(system, number) if bar else parse_cpr(value)
    except ValueError:
        raise _Wrong(f"{where}.patient is neither a CPR number nor a replacement number as system|value") from None
    return value


def _sor(item: dict[str, Any], key: str, where: str) -> str:
    value = _text(item, key, where)
    if not SOR_CODE.fullmatch(value):
        raise _Wrong(f"{where}.{key} must be a SOR code (11 to 18 digits)")
    return value


def _request(item: Any, where: str) -> tuple[str, str]:
    if not isinstance(item, dict):
        raise _Wrong(f"{where} must be an object")
    return _text(item, "threadId", where), _text(item, "requester", where)


class StoreState:
    """State from the configured store (`transform --store`), opened only if a message asks for it. The
    store must exist (transform never creates one), and each read is audited with the OS user who ran it."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def _ask(self, what: str, question: Callable[[AuditStore], T], patient: Callable[[T], str | None]) -> T:
        store = open_store(self._settings, create=False)
        try:
            answer = question(store)
            entry = AuditEntry("state-read", "transform", "-", {**reader(), "read": what}, patient=patient(answer))
            store.record([entry], datetime.now(DANISH_TIME))  # before the answer can be printed
            return answer
        finally:
            store.close()

    def course(self, patient: str) -> Course | None:
        return self._ask("course", lambda store: store.course(patient), lambda _: patient)

    def requester(self, thread_id: str) -> str | None:
        return self._ask("requester", lambda store: store.requester(thread_id), lambda _: None)

    def received(self, header_id: str) -> EarlierMessage | None:
        return self._ask("received", lambda store: store.received(header_id), lambda _: None)

    def bundle_header(self, bundle_id: str) -> str | None:
        return self._ask("bundle-header", lambda store: store.bundle_header(bundle_id), lambda _: None)

    def outbound(self, header_id: str) -> OutboundStatus | None:
        return self._ask("outbound", lambda store: store.outbound(header_id), lambda a: a.patient if a else None)
