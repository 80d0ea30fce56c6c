"""Where `integration transform` takes the state a flow asks about: none (the default: the same input gives the
same output, whatever ran before), a `--state` file, or the configured audit store (`--store`).

The state file is JSON, either a list of courses (the older form) or an object:

    {"courses": [{"patient": "DDMMYYSSSS" | "system|value", "referringDepartment": SOR (11-18 digits),
                  "municipalityCode": "851", "open": true,
                  "responsible": "hospital" | "gp"}],                    responsible: default hospital if open
     "openRequests": [{"threadId": "…", "requester": SOR or ydernummer}]}

One course per patient (a second is refused, naming both entries); the patient a CPR number or a replacement
number (X-eCPR, D-eCPR) as `system|value`. `openRequests` are the hotline requests awaiting a department's
answer: the answer in that thread goes back to its requester. Errors name the place in the file
(`courses[0].open`) and never repeat a value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import click

from integration.adapters.sql.store import AuditStore
from integration.adapters.sql.stores import open_store
from integration.cli.audit import reader
from integration.config import Settings
from integration.domain.course import Course, EarlierMessage, FixedState, OutboundStatus, Responsible, State
from integration.domain.cpr import parse_cpr
from integration.domain.identifiers import parse_replacement_cpr
from integration.errors import InvalidInput
from integration.formats.json_contract import decode_json
from integration.service.audit_chain import AuditEntry

T = TypeVar("T")
SOR_CODE = re.compile(r"[0-9]{11,18}")
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


def _course(item: Any, where: str) -> Course:
    if not isinstance(item, dict):
        raise _Wrong(f"{where} must be an object")
    is_open = item.get("open")
    if not isinstance(is_open, bool):
        raise _Wrong(f"{where}.open must be true or false")
    responsible = item.get("responsible", Responsible.by_default(is_open).value)
    if responsible not in {r.value for r in Responsible}:
        raise _Wrong(f"{where}.responsible must be one of {', '.join(r.value for r in Responsible)}")
    return Course(
        _patient(item, where),
        _sor(item, "referringDepartment", where),
        _text(item, "municipalityCode", where),
        is_open,
        Responsible(responsible),
    )


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
