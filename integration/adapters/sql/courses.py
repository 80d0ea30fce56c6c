"""The rehabilitation courses' repository (`rehab_course`): one row per patient, keyed by CPR number.

A course is opened at discharge (or by a GP's referral), moved along the pathway by each event
(`domain/course_sequence`) and closed when medical responsibility is handed to the GP; each change
overwrites the patient's row (`changed_at`: when). The key is a CPR number: it goes into the chain only
as a digest (audit_state).

Schema 5 added two columns, both NULL in the rows written before (they read as the defaults: no stage,
`Course.current` then says municipal or closed by `is_open`):

- `stage`: the `Stage` value, a column of its own so that `courses_at` can select by it;
- `pathway`: the other fields schema 5 added, as canonical JSON (`pathway_json`): every key, sorted, in
  camelCase (`dischargedAt`, `heartFailure`, `referral`: the `SentReferral` as an object, its elements a
  list in their order), a time as ISO 8601 with its offset, a day as YYYY-MM-DD. NULL when every one of
  them holds its default, so one course has one representation.

A stored value the service would not have written (another type, an unknown key, a time without offset)
is StoreDamaged when read: the row was changed outside the service (`audit verify` says which).

Optimistic concurrency (decision 31): consumer processes on one store each read a course, decide, and
record. The repository remembers the version of each course it read (the digest of its row's covered
columns, the one the chain records; "no row" for a patient without a course) until it records a change to
it, and `save` first compares the row as it stands, inside the writing transaction (under the chain's lock:
SQLite's write lock, PostgreSQL's advisory lock, and FOR UPDATE on the rows there), with the version read.
A row changed or created since raises Conflict, and the transaction keeps nothing. A course written
without having been read through this handle (the operator's tools, tests) is written as before.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import date, datetime
from typing import Any, TypeVar

import orjson

from integration.adapters.sql import audit_state
from integration.adapters.sql.audit_state import StateDigests
from integration.adapters.sql.unit_of_work import UnitOfWork
from integration.domain.course import Course, Referrer, Responsible, SentReferral, Stage
from integration.errors import Conflict, StoreDamaged, StoreRefused

T = TypeVar("T")
COLUMNS = "patient, referring_department, municipality_code, is_open, responsible, stage, pathway"
UPSERT_COURSE = (
    f"INSERT INTO rehab_course ({COLUMNS}, changed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (patient) "
    "DO UPDATE SET referring_department = excluded.referring_department, municipality_code = "
    "excluded.municipality_code, is_open = excluded.is_open, responsible = excluded.responsible, "
    "stage = excluded.stage, pathway = excluded.pathway, changed_at = excluded.changed_at"
)
ROW = audit_state.COVERED["rehab_course"].columns  # a course's version is the digest of these (audit_state)
CHANGED_AT = ROW.index("changed_at")  # the one covered column that is not a field of Course
SEEN_LIMIT = 10_000  # versions remembered at most: far more than a batch reads between planning and recording
# A row from before stages (`stage` NULL) is at `Course.current`'s stage: municipal while open, else closed.
UNSTAGED = {Stage.MUNICIPAL: "(stage IS NULL AND is_open <> 0)", Stage.CLOSED: "(stage IS NULL AND is_open = 0)"}


class _Unreadable(ValueError):
    """A stored pathway value the service does not write; the message names the key, never the value."""


@dataclass(frozen=True, slots=True)
class _Kind:
    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]  # raises _Unreadable, ValueError or TypeError for what it cannot take


def _expect(test: Callable[[Any], bool], what: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if not test(value):
            raise _Unreadable(f"not {what}")
        return value

    return check


def _optional(kind: _Kind) -> _Kind:
    return _Kind(
        lambda v: None if v is None else kind.encode(v),
        lambda v: None if v is None else kind.decode(v),
    )


def _moment_text(value: datetime) -> str:
    if value.utcoffset() is None:  # a flow's defect: the domain keeps every time with its zone
        raise StoreRefused("a course's discharge time has no time zone: not stored")
    return value.isoformat()


_TEXT = _Kind(lambda v: v, _expect(lambda v: isinstance(v, str), "text"))
_FLAG = _Kind(lambda v: v, _expect(lambda v: type(v) is bool, "true or false"))


def _moment(text: Any) -> datetime:
    value = datetime.fromisoformat(_TEXT.decode(text))
    if value.utcoffset() is None:
        raise _Unreadable("a time without its offset")
    return value


def _texts(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _Unreadable("not a list")
    return tuple(_TEXT.decode(v) for v in value)


_TEXTS = _Kind(list, _texts)
_MOMENT = _Kind(_moment_text, _moment)
_DAY = _Kind(date.isoformat, lambda v: date.fromisoformat(_TEXT.decode(v)))

REFERRAL_KINDS: Mapping[str, _Kind] = {  # SentReferral's fields, each as it is stored
    "service_request": _TEXT,
    "event_id": _TEXT,
    "performer": _TEXT,
    "receiver": _TEXT,
    "category": _TEXT,
    "risk_group": _TEXT,
    "elements": _TEXTS,
    "closing_place": _TEXT,
    "ambulatory_control": _FLAG,
    "municipality_code": _TEXT,
}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _encode_object(kinds: Mapping[str, _Kind], value: Any) -> dict[str, Any]:
    return {_camel(name): kind.encode(getattr(value, name)) for name, kind in kinds.items()}


def _decode_object(kinds: Mapping[str, _Kind], document: Any, where: str) -> dict[str, Any]:
    """The fields (by attribute name) of a stored object; a missing key is left out (its default applies)."""
    if not isinstance(document, dict):
        raise _Unreadable(f"{where} is not an object")
    known = {_camel(name): name for name in kinds}
    unknown = sorted(set(document) - set(known))
    if unknown:
        raise _Unreadable(f"{where} has {len(unknown)} key(s) the service does not write")
    decoded = {}
    for key, name in known.items():
        if key in document:
            try:
                decoded[name] = kinds[name].decode(document[key])
            except (_Unreadable, ValueError, TypeError) as exc:
                raise _Unreadable(f"{where}.{key}: {exc if isinstance(exc, _Unreadable) else 'unreadable'}") from None
    return decoded


def _referral(document: Any) -> SentReferral:
    return SentReferral(**_decode_object(REFERRAL_KINDS, document, "referral"))


PATHWAY_KINDS: Mapping[str, _Kind] = {  # the fields schema 5 keeps in `pathway`, each as it is stored
    "referral": _optional(_Kind(lambda r: _encode_object(REFERRAL_KINDS, r), _referral)),
    "referrer": _Kind(lambda r: r.value, Referrer),
    "gp": _optional(_TEXT),
    "discharge_event": _optional(_TEXT),
    "discharged_at": _optional(_MOMENT),
    "heart_failure": _FLAG,
    "specialised_referral": _optional(_TEXT),
    "municipal_status": _FLAG,
    "hospital_done": _FLAG,
    "closed_on": _optional(_DAY),
    "deceased": _FLAG,  # HospitalNotification fields (after schema 5, in the same JSON: no migration)
    "admitted_to": _optional(_TEXT),
    "admitted_since": _optional(_MOMENT),
    "admission_episode": _optional(_TEXT),
    "episode": _optional(_TEXT),  # added with issue 15; rows written before lack the key (None)
    "decided_at": _optional(_MOMENT),  # added with issue 16 (the last visitation's time), likewise
}
DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(Course) if f.name in PATHWAY_KINDS}


def pathway_json(course: Course) -> str | None:
    """The `pathway` column's value for `course`: canonical JSON of its schema-5 fields, None when every
    one holds its default. Raises StoreRefused for a discharge time without a zone (a flow's defect)."""
    if all(getattr(course, name) == default for name, default in DEFAULTS.items()):
        return None
    return orjson.dumps(_encode_object(PATHWAY_KINDS, course), option=orjson.OPT_SORT_KEYS).decode()


def pathway_fields(text: str | None) -> dict[str, Any]:
    """The schema-5 fields (by attribute name) a `pathway` value holds; {} for NULL. Raises StoreDamaged,
    naming the key (never the value), for one the service does not write."""
    if text is None:
        return {}
    try:
        return _decode_object(PATHWAY_KINDS, orjson.loads(text), "pathway")
    except (_Unreadable, orjson.JSONDecodeError) as exc:
        said = str(exc) if isinstance(exc, _Unreadable) else "pathway is not JSON"
        raise StoreDamaged(f"a course in the audit store holds a pathway the service did not write ({said})") from None


def _value(kind: Callable[[Any], T], value: Any, column: str) -> T:
    try:
        return kind(value)
    except ValueError:
        raise StoreDamaged(f"a course in the audit store holds a {column} the service does not write") from None


def _course(row: Sequence[Any]) -> Course:
    """A course from a row of `COLUMNS`."""
    patient, department, municipality, is_open, responsible, stage, pathway = row
    return Course(
        patient,
        department,
        municipality,
        bool(is_open),
        _value(Responsible, responsible, "responsible"),
        None if stage is None else _value(Stage, stage, "stage"),
        **pathway_fields(pathway),
    )


def _version(row: Sequence[Any] | None) -> str | None:
    """A course's version: the digest of its row's covered columns (as the chain has it); None for no row."""
    return None if row is None else audit_state.row_digest("rehab_course", row)


def _fields(row: Sequence[Any]) -> Sequence[Any]:
    """A row of `ROW` as a row of `COLUMNS` (without `changed_at`)."""
    return (*row[:CHANGED_AT], *row[CHANGED_AT + 1 :])


class Courses:
    """The courses, and the version of each this handle read and has not recorded a change to yet (the
    module's docstring: optimistic concurrency). One handle serves one consumer: the versions are its reads."""

    def __init__(self, unit: UnitOfWork) -> None:
        self._unit = unit
        self._seen: dict[str, str | None] = {}  # patient → version read (None: no course), oldest first

    def course(self, patient: str) -> Course | None:
        """The patient's course (by CPR number), or None; its version is remembered for `save`. StoreDamaged
        for a row the service did not write."""
        with self._unit.transaction(write=False) as cursor:
            cursor.execute(self._unit.sql(f"SELECT {', '.join(ROW)} FROM rehab_course WHERE patient = ?"), (patient,))
            row = cursor.fetchone()
        course = None if row is None else _course(_fields(row))  # StoreDamaged before anything is remembered
        self._remember(patient, _version(row))
        return course

    def _remember(self, patient: str, version: str | None) -> None:
        self._seen.pop(patient, None)  # a read again is the newest
        self._seen[patient] = version
        if len(self._seen) > SEEN_LIMIT:  # reads never followed by a change (a refused message): the oldest go
            del self._seen[next(iter(self._seen))]

    def recorded(self, patients: Collection[str]) -> None:
        """The changes to these patients' courses are committed: their versions read are spent."""
        for patient in patients:
            self._seen.pop(patient, None)

    def courses_at(self, stages: Sequence[Stage]) -> list[Course]:
        """The courses whose stage (`Course.current`: a row from before stages counts as municipal while
        open, closed otherwise) is one of `stages`, by patient. StoreDamaged for a row the service did not write."""
        wanted = sorted(set(stages))
        if not wanted:
            return []
        where = [f"stage IN ({', '.join('?' * len(wanted))})", *(UNSTAGED[s] for s in wanted if s in UNSTAGED)]
        with self._unit.transaction(write=False) as cursor:
            cursor.execute(
                self._unit.sql(f"SELECT {COLUMNS} FROM rehab_course WHERE {' OR '.join(where)} ORDER BY patient"),
                tuple(s.value for s in wanted),
            )
            rows = cursor.fetchall()
        return [_course(row) for row in rows]

    def save(self, cursor: Any, courses: Sequence[Course], stamp: str) -> StateDigests:
        """Insert or overwrite each patient's course (the last of a patient's wins); the digests of the rows
        as they now stand. Raises Conflict when a course read through this handle has changed since (or one
        was created for a patient read without one), StoreRefused for a course it cannot store as it is (a
        discharge time without a zone)."""
        if not courses:
            return {}
        self._check_unchanged(cursor, {c.patient for c in courses})
        cursor.executemany(
            self._unit.sql(UPSERT_COURSE),
            [
                (
                    c.patient,
                    c.referring_department,
                    c.municipality_code,
                    int(c.open),
                    c.responsible,
                    None if c.stage is None else c.stage.value,
                    pathway_json(c),
                    stamp,
                )
                for c in courses
            ],
        )
        return {"rehab_course": self._unit.read_back(cursor, "rehab_course", {(c.patient,) for c in courses})}

    def _check_unchanged(self, cursor: Any, patients: Collection[str]) -> None:
        """Raise Conflict unless each of these courses that was read still stands at the version read. The
        rows are locked for the rest of the transaction where the database can (PostgreSQL: FOR UPDATE)."""
        expected = {p: self._seen[p] for p in patients if p in self._seen}
        if not expected:
            return
        now = self._unit.read_back(cursor, "rehab_course", {(p,) for p in expected}, lock=True)
        changed = [p for p, v in expected.items() if now.get(audit_state.key_digest("rehab_course", (p,))) != v]
        if changed:
            raise Conflict("rehab_course", len(changed))
